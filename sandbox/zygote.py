"""The zygote: the clean process every server-mode kernel is forked from.

A kernel is a fork, so it starts as a copy of the process it was forked from:
its heap, its stack, its environment area. The spawner knows every kernel (ids,
pids, work paths, the specs it was sent, with their folders' host paths), and a
kernel forked from it could read all of that in its own memory (threat model
row 15). So, as Chromium does with its zygote, the spawner forks this process
at its start, before it has seen any request, from a minimal environment
(sandbox.spawner_client.spawner_environment): it holds the warmed imports, the
seccomp filter, the root skeleton and kernel-init, and nothing else, and it is
never told anything about a kernel.

Asked for a spare, it forks one (spare.fork_spare) with clone(CLONE_PARENT):
the spare is the spawner's child, so the spawner reaps it as before, and the
zygote never learns even its pid (the spawner reads it from the spare's first
message). The spare's cgroup comes as open directories, not paths.

Protocol, over a SOCK_SEQPACKET pair: the zygote says b"ready" once it has a
mount namespace of its own (a copy of the spawner's before any kernel, which
its spares copy in turn) with the template of kernels' roots built in it
(mounts.build_template), or b"error: ..." if it could not; then the spawner sends b"spare" with the
cgroup's directory fds (SCM_RIGHTS; none under the none layout); the zygote
answers b"ok" with the spare's request socket and status pipe, or b"error: ..."
with none. The zygote exits when the spawner's end closes, or the spawner dies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket

import prctl

from . import (
    fd_wait,
    host_modules,
    kernel_inputs,
    mounts,
    pid1,
    pid_namespace,
    privileges,
    syscalls,
)
from .cgroups import KernelCgroup
from .runner import forking
from .spare import Spare, fork_spare

_REQUEST = b"spare"
_REQUEST_INTO = b"spare-into"  # the first directory is a cgroup v2 one: clone into it
_MAX_FDS = 8  # a cgroup's directories: one per hierarchy
_READY = b"ready"  # its first message: its mount namespace is made
_READY_TIMEOUT = 10.0  # s


class ZygoteError(OSError):
    """The zygote could not make a spare, or is gone."""


class Zygote:
    """The spawner's handle on its zygote."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.status: int | None = None  # its wait status, once the spawner reaped it
        self._sock = sock

    @classmethod
    def fork(cls, env: kernel_inputs.Environment, keep: tuple[int, ...] = ()) -> Zygote:
        """Fork the zygote now (before any request: see the module's docstring).
        The caller must be single-threaded. In the zygote every fd is closed but
        stdio, its socket and `keep` (what spares need: kernel-init's fds)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = forking.lean_fork()
        if pid == 0:
            try:
                _zygote_main(env, theirs.detach(), keep)
            finally:
                os._exit(1)
        theirs.close()
        # Its mount namespace is a copy of ours as it is when it unshares: wait for
        # that, lest it copy what we mount next (the pre-import's /tmp).
        said = ours.recv(4096) if fd_wait.readable([ours], _READY_TIMEOUT) else b""
        if said != _READY:
            ours.close()
            pid_namespace.kill_kernel(pid)
            raise ZygoteError(0, said.decode(errors="replace") or "the zygote did not start")
        return cls(pid, ours)

    def spare(self, cgroup: KernelCgroup, timeout: float) -> Spare:
        """A new spare in `cgroup`, our child (ZygoteError if none could be made;
        OSError if it died at once or did not say hello within `timeout` s)."""
        dirs = cgroup.open_dirs()
        try:
            request = _REQUEST_INTO if cgroup.clone_into else _REQUEST
            socket.send_fds(self._sock, [request], list(dirs))
        except OSError as e:
            raise ZygoteError(e.errno, f"the zygote is gone ({e.strerror})") from e
        finally:
            for fd in dirs:
                os.close(fd)
        if not fd_wait.readable([self._sock], timeout):
            raise ZygoteError(0, f"the zygote did not answer within {timeout:g} s")
        reply, fds, _flags, _addr = socket.recv_fds(self._sock, 4096, 2)
        if reply != b"ok" or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            detail = reply.decode(errors="replace") or "the zygote is gone"
            raise ZygoteError(0, detail)
        return Spare.adopt(cgroup, fds[0], fds[1], timeout)

    def close(self, timeout: float) -> None:
        """End the zygote and reap it (unless the spawner's reaper has: `status`)."""
        self._sock.close()
        if self.status is None and pid_namespace.wait_for_exit(self.pid, timeout) is None:
            pid_namespace.kill_kernel(self.pid)
            pid_namespace.wait_for_exit(self.pid, timeout)


def _zygote_main(env: kernel_inputs.Environment, fd: int, keep: tuple[int, ...]) -> None:
    """Runs in the zygote. Never returns."""
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # it has no children: spares are siblings
    prctl.set_name("sandbox-zygote")
    privileges.clear_bounding_set()  # once, for every spare and runner (see there)
    # A mount namespace of its own, copied now, before any kernel: the spares copy
    # this one, and the kernels' work mounts made later in the spawner's stay out of
    # it (but for the handover directory's: spawner_kernels.Spawner._hand_over).
    syscalls.unshare(syscalls.CLONE_NEWNS)
    forking.close_fds_from(3, keep=(fd, *keep))
    sock = socket.socket(fileno=fd)
    try:  # the part of a root every kernel shares, which each spare's namespace copies
        mounts.build_template(env.skeleton, env.mountpoint)
        mounts.seal_template(env.mountpoint)
    except Exception as e:
        sock.send(f"error: its root template: {e}".encode()[:4096])
        os._exit(1)
    sock.send(_READY)
    env = dataclasses.replace(env, host_modules=host_modules.forget_in_zygote(env.host_modules))
    forking.set_environment(pid1.BASE_ENVIRONMENT)  # a kernel then changes a few
    syscalls.seccomp_prepare(env.filter)
    while True:
        try:
            request, dirs, _flags, _addr = socket.recv_fds(sock, 64, _MAX_FDS)
        except InterruptedError:
            continue
        if not request:
            os._exit(0)  # the spawner closed its end
        try:
            if request not in (_REQUEST, _REQUEST_INTO):
                raise ValueError(f"unknown request {request[:32]!r}")
            conn, status_r = fork_spare(env, tuple(dirs), into_first=request == _REQUEST_INTO)
        except Exception as e:  # answered, never fatal: the zygote serves every kernel
            with contextlib.suppress(OSError):
                sock.send(f"error: no spare: {e}".encode()[:4096])
        else:
            try:
                socket.send_fds(sock, [b"ok"], [conn, status_r])
            finally:
                os.close(conn)
                os.close(status_r)
        finally:
            for d in dirs:
                os.close(d)
