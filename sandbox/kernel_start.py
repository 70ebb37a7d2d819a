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
import socket
import time
from dataclasses import dataclass

from . import fd_wait, pid1, privileges
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


class PendingStart:
    """A kernel whose pid 1 is setting itself up: its status pipe (`fileno`) says
    how it went. The caller reads it as it becomes readable (`read`, until True: the
    pipe's end) and then asks for the outcome (`finish`); in between it may serve
    others (the spawner does). `exit_status`: set by a caller that reaped pid 1
    meanwhile, so that a failed start does not wait for a pid that is gone."""

    def __init__(self, pid: int, status_r: int, timeout: float, problems: list[str]) -> None:
        self.pid = pid
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.exit_status: int | None = None
        self._fd = status_r
        self._problems = problems
        self._buffer = b""
        self._ended = False

    def fileno(self) -> int:
        return self._fd

    def read(self) -> bool:
        """Take what the pipe holds (call when it is readable); True once it ended."""
        chunk = os.read(self._fd, 4096)
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        self._problems += [line.decode(errors="replace") for line in lines]
        if not chunk:
            if self._buffer:
                self._problems.append(self._buffer.decode(errors="replace"))
                self._buffer = b""
            self._ended = True
        return self._ended

    def wait(self) -> Started:
        """Read to the pipe's end or the deadline, then `finish` (blocking)."""
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0 or not fd_wait.readable([self._fd], left):
                return self.finish(timed_out=True)
            if self.read():
                return self.finish()

    def finish(self, timed_out: bool = False) -> Started:
        """The kernel's pid 1, if its start succeeded; else it is killed and reaped
        here and KernelStartError (SpareLost if its spare never took it) says why."""
        os.close(self._fd)
        problems = self._problems
        if timed_out:
            problems.append(f"kernel setup timed out after {self.timeout:g} s")
        took = TOOK in problems
        problems = [p for p in problems if p != TOOK]
        if problems == ["ok"]:
            return Started(pid=self.pid)
        undead = None
        if self.exit_status is None:
            kill_kernel(self.pid)  # our child, not reaped yet: the pid is still its own
            if wait_for_exit(self.pid, KILL_TIMEOUT) is None:  # the caller must go on serving
                undead = self.pid
                problems.append(f"its pid 1 ({self.pid}) would not die")
        others = [p for p in problems if p != "ok"]
        message = "; ".join(others) or "kernel setup died before reporting"
        raise KernelStartError(message, undead) if took else SpareLost(message, undead)


def begin_start(
    spec: KernelSpec,
    work: str,
    payload: Payload,
    rlimits: privileges.Rlimits,
    host_sock: socket.socket,
    spare: Spare,
    timeout: float = START_TIMEOUT,
) -> PendingStart:
    """Hand a server-mode kernel to its spare (its cgroup's limits already the
    kernel's) and return at once; the spare's pid 1 sets the kernel up meanwhile."""
    problems: list[str] = []
    pid, status_r = spare.pid, spare.take_status()
    try:
        spare.send(spec, work, payload, rlimits, host_sock)
    except OSError as e:  # it died: what it wrote before, if anything, follows
        problems.append(f"kernel setup failed at spare: {e}")
    return PendingStart(pid, status_r, timeout, problems)


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
    """Start a kernel and wait until it is set up (or failed). Returns its pid 1.

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
    if spare is not None:
        if host_sock is None:
            raise ValueError("a server-mode kernel needs its host socket")
        return begin_start(spec, work, payload, rlimits, host_sock, spare, timeout).wait()
    problems = [TOOK]  # no spare: nothing to lose
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
    # Pid 1 builds its root meanwhile; moving it into its cgroup (slow: see
    # sandbox.spare) happens now, beside that work, and pid 1 waits for the byte on
    # the placed pipe before it drops privileges. Pid 1 writes "ok" or its error.
    try:
        cgroup.attach(pid)
        os.write(placed_w, b"p")
    except (OSError, CgroupError) as e:
        problems.append(f"kernel setup failed at cgroup: {e}")
    finally:
        os.close(placed_w)
    return PendingStart(pid, status_r, timeout, problems).wait()
