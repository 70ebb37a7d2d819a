"""Starting a kernel: the isolation recipe (docs/architecture.md, "How a kernel is
built"), in order, in forked children.

A kernel is a pid namespace whose pid 1 sets it up (sandbox.pid1) and then
execs its program:

    exec mode (sandbox-exec; single-threaded)
      `-- pid 1, forked here into a new pid namespace (pid_namespace.fork_pid1):
          sets the kernel up and forks the command
    server mode (the spawner)
      `-- pid 1 is a spare (sandbox.spare) the zygote forked, made ahead
            `-- the runner: forget the host's modules; on pid 1's start frame
                drop to the kernel's uid and install seccomp itself (beside pid 1
                doing the same), take the kernel's environment, run the runner
                (sandbox.bootstrap_runner); pid 1 execs kernel-init, the relay
                between the host and the runner (sandbox.runner.forking)

`start_kernel` hands a spare its kernel, or forks an exec-mode pid 1 and moves
it into its cgroup meanwhile, then reads the status pipe until pid 1 (or
kernel-init) says "ok" or why it failed. A start that fails is killed and
reaped here, so that the caller is told, and never left with half a kernel.
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

from . import pid1, privileges
from .cgroups import KILL_TIMEOUT, CgroupError, KernelCgroup
from .kernel_inputs import Environment, Payload
from .pid_namespace import fork_pid1, kill_kernel, wait_for_exit
from .spare import TOOK, Spare
from .spec import KernelSpec

SERVER_TASKS = 2  # a server-mode kernel's own processes: pid 1 and the runner
START_TIMEOUT = 10.0  # s: a start takes milliseconds; this long means it is stuck


class KernelStartError(RuntimeError):
    """The kernel could not be set up; the message says which step failed.

    `undead`: the pid of a pid 1 that was killed but would not die (a process stuck
    in uninterruptible sleep, or frozen): the caller's reaper collects it later,
    and only then can its cgroup go.
    """

    def __init__(self, message: str, undead: int | None = None) -> None:
        super().__init__(message)
        self.undead = undead


class SpareLost(KernelStartError):
    """The spare given to start_kernel was gone (killed, exited, stuck) before it
    took the kernel: the kernel may well start without one."""


@dataclass
class Started:
    pid: int  # host pid of the kernel's pid 1


def start_kernel(
    env: Environment,
    spec: KernelSpec,
    work: str,
    cgroup: KernelCgroup,
    payload: Payload,
    host_sock: socket.socket | None = None,
    stdio: tuple[int, int, int] | None = None,
    spare: Spare | None = None,
    timeout: float = START_TIMEOUT,
) -> Started:
    """Fork a kernel and wait until it is set up (or failed). Returns its pid 1.

    A start that takes longer than `timeout` seconds (pid 1 stuck, or a spare
    stopped) is killed and fails: the caller serves every other kernel too.
    `host_sock` is the kernel's end of its socket (server mode); `stdio` are fds
    that become the command's 0/1/2 (exec mode). The caller keeps its own copies.
    A server-mode kernel starts from a `spare`, which becomes the kernel: `cgroup`
    must be the spare's, its limits already the kernel's (the caller sets them).
    SpareLost if the spare was gone before it took the kernel. An exec-mode
    kernel is forked here.
    """
    if (spare is None) == (not payload.argv):
        raise ValueError("a spare starts a server-mode kernel; exec mode starts without one")
    rlimits = privileges.kernel_rlimits(
        spec, env.layout_has_cgroup, payload.uid, forked=not payload.argv
    )
    problems: list[str] = []
    placed_w = -1
    if spare is not None:
        if host_sock is None:
            raise ValueError("a server-mode kernel needs its host socket")
        pid, status_r = spare.pid, spare.take_status()
        try:
            spare.send(spec, work, payload, rlimits, host_sock)
        except OSError as e:  # it died: what it wrote before, if anything, follows
            problems.append(f"kernel setup failed at spare: {e}")
    else:
        placed_r, placed_w = os.pipe2(os.O_CLOEXEC)
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        pid = fork_pid1()
        if pid == 0:
            try:
                pid1.exec_mode_main(env, spec, work, payload, rlimits, stdio, status_w, placed_r)
            finally:  # pid 1 never returns into the caller's code, whatever happens: in
                os._exit(1)  # the spawner, its error path would destroy every other kernel
        os.close(status_w)
        os.close(placed_r)
    try:
        # Pid 1 builds its root meanwhile; moving it into its cgroup (slow: see
        # sandbox.spare) happens now, beside that work, and pid 1 waits for the byte
        # on the placed pipe before it drops privileges. Pid 1 writes "ok" or its
        # error (a spare TOOK first).
        reader = _LineReader(status_r, time.monotonic() + timeout)
        try:
            if placed_w >= 0:
                try:
                    cgroup.attach(pid)
                    os.write(placed_w, b"p")
                except (OSError, CgroupError) as e:
                    problems.append(f"kernel setup failed at cgroup: {e}")
                os.close(placed_w)
                placed_w = -1
            problems += list(reader)
        except TimeoutError:
            problems.append(f"kernel setup timed out after {timeout:g} s")
    finally:
        if placed_w >= 0:
            os.close(placed_w)
        os.close(status_r)
    took = spare is None or TOOK in problems
    problems = [p for p in problems if p != TOOK]
    if problems == ["ok"]:
        return Started(pid=pid)
    undead = None
    kill_kernel(pid)  # it is our child and not reaped yet: the pid is still its own
    if wait_for_exit(pid, KILL_TIMEOUT) is None:  # the caller must go on serving
        undead = pid
        problems.append(f"its pid 1 ({pid}) would not die")
    others = [p for p in problems if p != "ok"]
    message = "; ".join(others) or "kernel setup died before reporting"
    raise KernelStartError(message, undead) if took else SpareLost(message, undead)


class _LineReader:
    """The lines of a pipe, as they arrive, until EOF; TimeoutError at `deadline`
    (time.monotonic())."""

    def __init__(self, fd: int, deadline: float) -> None:
        self.fd = fd
        self.deadline = deadline
        self.buffer = b""

    def __iter__(self) -> Iterator[str]:
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                yield line.decode(errors="replace")
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(self.fd, 4096)
            if not chunk:
                if self.buffer:
                    yield self.buffer.decode(errors="replace")
                    self.buffer = b""
                return
            self.buffer += chunk
