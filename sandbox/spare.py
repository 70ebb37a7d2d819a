"""Spares: kernels' pid 1s made ahead of demand, each waiting to become a kernel.

A spare (`Spare`) is a pid 1 the zygote forked, ahead of demand or, when none
is ready, at a create: it has moved itself into a fresh cgroup, started its
session, unshared the namespaces (its mount namespace a copy of the zygote's,
with the template of a kernel's root in it: mounts.build_template), forked the
runner, set up lo and the hostname and mounted its root's /proc and devpts
(`mounts.prepare_root`), and waits for a kernel to become. A kernel started
from one made ahead skips the forks, those steps and, above all, the move,
which waits for an RCU grace period (5-15 ms here) the first time in a while
that any process changes cgroup. A spare has SIGKILL as its parent-death
signal.
"""

from __future__ import annotations

import _signal
import contextlib
import errno
import functools
import io
import os
import pickle
import socket

import prctl

from . import (
    bootstrap_runner,
    fd_wait,
    mounts,
    oom_score,
    pid1,
    privileges,
    spawner_protocol,
    syscalls,
)
from .cgroups import KernelCgroup
from .kernel_inputs import Environment, Payload
from .pid_namespace import fork_pid1, kill_kernel
from .runner import forking
from .spec import Bind, KernelSpec

# What a spare's pid 1 writes to the status pipe when it has taken its kernel: a
# start whose spare never wrote it can be retried without one
# (kernel_start.SpareLost).
TOOK = "took"
# Whether clone3 takes CLONE_INTO_CGROUP here (Linux 5.7 and later); found out once.
_clone_into_works = True
_HELLO = b"hello"  # a spare's first message, which carries its credentials


class _RequestUnpickler(pickle.Unpickler):
    """Unpickles a spare's request (Spare.send), whose classes are these alone. It
    finds them here, not by importing their modules: the zygote has dropped the
    server's modules from sys.modules (host_modules.forget_in_zygote)."""

    _CLASSES = {
        (cls.__module__, cls.__qualname__): cls
        for cls in (KernelSpec, Bind, Payload, privileges.Rlimits)
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._CLASSES[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"not in a spare's request: {module}.{name}") from None


def fork_spare(
    env: Environment, cgroup_dirs: tuple[int, ...], into_first: bool = False
) -> tuple[int, int]:
    """Fork a spare (see Spare) that joins the cgroup whose directories (one per
    hierarchy) are open as `cgroup_dirs`; the caller keeps and closes those.
    Returns the spare's request socket and status pipe, for Spare.adopt. The
    spare is the caller's parent's child (`fork_pid1(sibling=True)`): the zygote
    forks spares for the spawner. The socket passes credentials: the spare's first
    message tells its pid. `into_first`: the first directory is a cgroup v2 one,
    which the spare starts in (CLONE_INTO_CGROUP) instead of moving into it; a
    kernel without clone3's cgroup field gets the move."""
    global _clone_into_works
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    pid = -1
    joined = 1 if into_first and cgroup_dirs and _clone_into_works else 0
    try:
        try:
            pid = fork_pid1(sibling=True, into_cgroup=cgroup_dirs[0] if joined else None)
        except OSError as e:
            if not joined or e.errno not in (errno.ENOSYS, errno.EINVAL, errno.E2BIG):
                raise
            _clone_into_works, joined = False, 0  # an older kernel: move, from now on
            pid = fork_pid1(sibling=True)
    except BaseException:
        ours.close()
        os.close(status_r)
        raise
    finally:
        if pid != 0:
            theirs.close()
            os.close(status_w)
    if pid == 0:
        try:
            for fd in cgroup_dirs[:joined]:
                os.close(fd)
            _spare_main(env, cgroup_dirs[joined:], theirs.detach(), status_w)
        finally:  # as in kernel_start.start_kernel: never back into the caller's code
            os._exit(1)
    return ours.detach(), status_r


class Spare:
    """A kernel's pid 1, forked by the zygote, that moves itself into a fresh
    cgroup, forks its runner and builds its root's common part, then waits to
    become some kernel (`kernel_start.start_kernel(spare=...)`).

    The move and the forks cost the spare, not its parent: the parent goes on
    serving meanwhile. The spawner has the zygote fork them (sandbox.zygote), so
    that no kernel is a copy of the spawner. A spare holds only its request
    socket and the status pipe; it exits when its parent closes the socket
    (`discard`) or dies. Its cgroup has no limits until the parent gives it a
    kernel's.
    """

    def __init__(self, pid: int, cgroup: KernelCgroup, conn: socket.socket, status_r: int):
        self.pid = pid
        self.cgroup = cgroup
        self._conn = conn
        self.status_r = status_r

    @classmethod
    def adopt(cls, cgroup: KernelCgroup, conn_fd: int, status_r: int, timeout: float) -> Spare:
        """Take on the spare at the end of fork_spare's socket and pipe: read its
        first message, whose credentials give its pid in our pid namespace. The
        spare is our child, or was forked by the zygote as our child. OSError if
        it died or said nothing within `timeout` seconds (both fds closed)."""
        conn = socket.socket(fileno=conn_fd)
        try:
            if not fd_wait.readable([conn], timeout):
                raise OSError(errno.ETIMEDOUT, "the spare did not say hello")
            space = socket.CMSG_SPACE(spawner_protocol.UCRED.size)
            message, ancillary, _flags, _addr = conn.recvmsg(8, space)
            pid = next(
                (spawner_protocol.UCRED.unpack(data)[0] for level, kind, data in ancillary
                 if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS),
                0,
            )  # fmt: skip
            if message != _HELLO or pid <= 0:
                raise OSError(errno.EPROTO, "the spare died before its hello")
        except BaseException:
            conn.close()
            os.close(status_r)
            raise
        return cls(pid, cgroup, conn, status_r)

    def send(
        self,
        spec: KernelSpec,
        work: str,
        payload: Payload,
        rlimits: privileges.Rlimits,
        host_sock: socket.socket,
    ) -> None:
        """Hand the spare its kernel (kernel_start.start_kernel reads the rest)."""
        start = pid1.runner_start_frame(spec, payload.uid, rlimits)
        request = pickle.dumps((spec, work, payload, rlimits, start))
        try:
            socket.send_fds(self._conn, [request], [host_sock.fileno()])
        finally:
            self._conn.close()

    def take_status(self) -> int:
        """The status pipe, now the caller's to read and close."""
        fd, self.status_r = self.status_r, -1
        return fd

    def discard(self, reaped: bool = False) -> None:
        """End an unused spare (the caller reaps it, unless `reaped` already, and
        removes its cgroup)."""
        self._conn.close()
        if self.status_r >= 0:
            os.close(self.status_r)
            self.status_r = -1
        if not reaped:  # else its pid may be another process's by now
            kill_kernel(self.pid)


def _join_cgroup(dirs: tuple[int, ...]) -> None:
    """Move this process into the cgroup whose directories are open as `dirs`
    (writing 0 to cgroup.procs moves the writer), then close them."""
    for fd in dirs:
        try:
            procs = os.open("cgroup.procs", os.O_WRONLY | os.O_CLOEXEC, dir_fd=fd)
            try:
                os.write(procs, b"0")
            finally:
                os.close(procs)
        finally:
            os.close(fd)


def _spare_main(
    env: Environment, cgroup_dirs: tuple[int, ...], conn_fd: int, status_w: int
) -> None:
    """Runs in a spare, pid 1 of its pid namespace. Never returns."""
    status = status_w
    try:
        # the parent gone: so is the spare
        syscalls.prctl(syscalls.PR_SET_PDEATHSIG, _signal.SIGKILL)
        os.write(conn_fd, _HELLO)  # first: the parent waits for it, and our pid in it
        prctl.set_name("sandbox-spare")
        oom_score.set_own(oom_score.KERNEL)  # before the runner's fork: it inherits it
        # The runner is forked first, as soon as it can be in the kernel's cgroup and
        # namespaces (its own session it starts itself). Pages this process wrote
        # before that fork would be the runner's own once this process execs
        # kernel-init; what it writes after, it copies for itself alone.
        _join_cgroup(cgroup_dirs)
        # the cgroup namespace too: after the move
        syscalls.unshare(pid1.NAMESPACES | syscalls.CLONE_NEWCGROUP)
        runner = forking.fork_runner(functools.partial(bootstrap_runner.main, env))
        # _signal, not signal: its enums are pages this fresh fork would copy
        _signal.set_wakeup_fd(-1)  # a parent's: about to be closed
        _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)  # fork_runner set the others
        os.setsid()
        # Nothing of the caller's but stdio: another spare's socket held here would
        # keep that spare from seeing its end.
        built = env.kernel_init
        runner_fds = (runner.ctl_fd, runner.out_r, runner.err_r)
        keep = (conn_fd, built.binary_fd, built.helper_fd, *runner_fds)
        conn_fd, binary_fd, helper_fd, *runner_fds = pid1.arrange_fds(
            None, None, status_w, None, keep=keep
        )
        program = forking.KernelInitProgram(binary_fd, helper_fd, built.python)
        runner = forking.Runner(runner.pid, *runner_fds)
        status = pid1.STATUS_FD
        pid1.network_and_hostname()
        mounts.prepare_root(env.mountpoint)
        conn = socket.socket(fileno=conn_fd)
        request, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 1)
        if not request:
            os._exit(0)  # discarded
        spec, work, payload, rlimits, start = _RequestUnpickler(io.BytesIO(request)).load()
        (host_fd,) = fds
        conn.close()
        if not runner.alive():
            raise RuntimeError("its runner has exited")
        os.write(pid1.STATUS_FD, f"{TOOK}\n".encode())
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.write(status, f"kernel setup failed at spare: {e}\n".encode())
        os._exit(1)
    pid1.become_kernel(env, spec, work, payload, rlimits, host_fd, program, runner, start)
