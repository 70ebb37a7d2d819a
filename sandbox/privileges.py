"""Dropping to the kernel's user: uid/gid `work`, no capabilities, no_new_privs, rlimits.

Order matters: the bounding and ambient sets can only be cleared while we still
hold CAP_SETPCAP (as root); switching every uid to non-zero then clears the
permitted and effective sets; no_new_privs makes setuid binaries and file
capabilities inert for everything the kernel later executes, and is what lets
an unprivileged process install the seccomp filter.

Which rlimits a kernel gets is decided here too (`kernel_rlimits`): where no
cgroup can limit memory and tasks (the none layout), rlimits stand in for it.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

import prctl

from . import kernel_uids, syscalls
from .spec import KernelSpec

# The real gid of a kernel's pid 1 (kernel-init) and so of its file helper: not
# the kernel's gid, so that user code, which runs as the same uid, fails the
# kernel's ptrace access check on them (/proc/<pid>/mem, environ, fd/,
# pidfd_getfd) whether or not they are dumpable; and an exec with real gid !=
# effective gid leaves a process non-dumpable from its first instruction (with
# fs.suid_dumpable 0 or 2). The effective and filesystem gid stay the kernel's:
# files are made and opened as before.
PID1_REAL_GID = 65534  # nogroup


@dataclass(frozen=True)
class Rlimits:
    """Per-process resource limits. None leaves the inherited value."""

    nofile: int = 1024
    fsize: int | None = None
    cpu_seconds: int | None = None
    address_space: int | None = None  # only where no cgroup can limit memory
    nproc: int | None = None  # only where no cgroup can limit pids


def kernel_rlimits(spec: KernelSpec, has_cgroup: bool, uid: int, forked: bool) -> Rlimits:
    """A kernel's rlimits, computed in the caller before the fork (the kernel
    starts with the caller's mappings, and sees only its own pid namespace).
    `forked`: the kernel runs a fork of the caller (the runner), not an exec'd
    command."""
    # Without a cgroup, rlimits are all we have (docs/architecture.md: cgroups and
    # their layouts). They are weaker: RLIMIT_AS counts address space, not memory in
    # use, and RLIMIT_NPROC counts the tasks of the kernel's uid: a kernel may start
    # `pids` tasks beyond those its uid has when it starts (none, unless a process of
    # a kernel that had it before has outlived it).
    weak = not has_cgroup
    address_space = nproc = None
    if weak and spec.memory_bytes:
        # A runner is a fork of the zygote and starts with its mappings: the limit
        # is on what the kernel maps beyond them. A command is exec'd and starts afresh.
        address_space = spec.memory_bytes + (_address_space() if forked else 0)
    if weak and spec.pids:
        nproc = spec.pids + _tasks_of(uid)
    return Rlimits(
        nofile=spec.nofile,
        fsize=spec.fsize_bytes,
        cpu_seconds=int(spec.cpu_time + 0.999) if spec.cpu_time else None,
        address_space=address_space,
        nproc=nproc,
    )


def _tasks_of(uid: int) -> int:
    """Tasks of the processes whose real uid is `uid`: what RLIMIT_NPROC counts."""
    return sum(threads for _pid, owner, threads in kernel_uids.process_uids() if owner == uid)


def _address_space() -> int:
    """This process's mapped address space, bytes (VmSize)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _last_cap() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


# Read once, where the host's /proc is at hand (the zygote has it from the spawner).
_LAST_CAP = _last_cap()


def clear_bounding_set() -> None:
    """Drop every capability still in the bounding set (which only limits what an
    execve may grant: the caller keeps the capabilities it holds).

    Each drop commits a new set of credentials, about 10 µs here, 0.5 ms for all
    41. So the zygote clears the set once, and the spares and runners forked from
    it, which inherit it empty, only read it: in one read of /proc/self/status
    (41 PR_CAPBSET_READs through ctypes cost a fresh fork 0.2 ms more)."""
    held = _bounding_set()
    for cap in range(_LAST_CAP + 1):
        still = syscalls.in_bounding_set(cap) if held is None else held >> cap & 1
        if still:
            syscalls.prctl(syscalls.PR_CAPBSET_DROP, cap)


def _bounding_set() -> int | None:
    """This process's bounding set as a bit mask (CapBnd); None if /proc says nothing."""
    try:
        fd = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
        try:
            status = os.read(fd, 1 << 16)
        finally:
            os.close(fd)
        at = status.index(b"\nCapBnd:") + 8
        return int(status[at : status.index(b"\n", at)], 16)
    except (OSError, ValueError):
        return None


def drop_privileges(uid: int, gid: int, limits: Rlimits, real_gid: int | None = None) -> None:
    """Become `uid`/`gid` (the real gid `real_gid` if given) with no capabilities;
    set rlimits and no_new_privs."""
    _apply_rlimits(limits)
    clear_bounding_set()
    syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_CLEAR_ALL)
    os.setgroups([])
    os.setresgid(gid if real_gid is None else real_gid, gid, gid)
    os.setresuid(uid, uid, uid)
    # The uid switch emptied the permitted and effective sets; this empties the
    # inheritable one too, and says so.
    syscalls.capset_none()
    prctl.set_no_new_privs(1)


def _apply_rlimits(limits: Rlimits) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.nofile, limits.nofile))
    if limits.fsize is not None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.fsize, limits.fsize))
    if limits.cpu_seconds is not None:
        # soft limit sends SIGXCPU, the hard limit one second later SIGKILL
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
    if limits.address_space is not None:
        resource.setrlimit(resource.RLIMIT_AS, (limits.address_space, limits.address_space))
    if limits.nproc is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.nproc, limits.nproc))
