"""A kernel as a pid namespace: forking its pid 1, killing it, reaping it.

The caller unshares the pid namespace for its next child and setns's back right
after the fork, so the kernel's pid 1 is the caller's own child: no
intermediate process, whose fork and exit would cost every kernel memory and
time. Killing pid 1 kills every process of the kernel.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from . import syscalls
from .runner import forking


def fork_pid1(sibling: bool = False, into_cgroup: int | None = None) -> int:
    """A fork (forking.lean_fork), the child as pid 1 of a new pid namespace.
    The caller's later children are in its own namespace again. The caller must
    be single-threaded. `sibling`: the child is the caller's parent's child
    (syscalls.fork_sibling), and the caller gets -1, not its pid; it may start in
    the cgroup v2 directory open as `into_cgroup`."""
    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        syscalls.unshare(syscalls.CLONE_NEWPID)  # for the children made from now on
        pid = -1
        try:
            if sibling:
                pid = 0 if syscalls.fork_sibling(into_cgroup) else -1
            else:
                pid = forking.lean_fork()
        finally:
            if pid != 0:
                syscalls.setns(own, syscalls.CLONE_NEWPID)  # back to ours; raises if it cannot
        return pid
    finally:
        os.close(own)


def kill_kernel(pid: int) -> None:
    """SIGKILL a kernel's pid 1: the kernel then kills the whole pid namespace."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def wait_for_exit(pid: int, timeout: float) -> int | None:
    """Reap `pid` and return its wait status; None if it is not our child or is
    still there after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        try:
            reaped, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        except InterruptedError:
            continue
        if reaped:
            return status
        if time.monotonic() >= deadline:
            return None
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def become_subreaper() -> None:
    """Orphaned descendants (a kernel's processes whose pid 1 died first) come back
    to us, to be reaped."""
    syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
