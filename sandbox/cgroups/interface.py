"""What every cgroup layout provides: the kernel cgroup and manager interfaces, the
limits and accounting they speak in, and their one error.

Callers (the spawner, sandbox-exec, pid 1's setup) hold these types only; which
driver stands behind them is decided once by `detection.detect`.
"""

from __future__ import annotations

import abc
import enum
import re
from collections.abc import Callable
from dataclasses import dataclass

KILL_TIMEOUT = 5.0  # seconds kill() waits for a cgroup to empty before giving up
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Layout(enum.Enum):
    """How the host mounts cgroups; decides which driver is used."""

    V2 = "v2"
    HYBRID = "hybrid"
    V1 = "v1"
    NONE = "none"


class CgroupError(RuntimeError):
    """A cgroup operation failed, or the host cannot do the requested layout."""


@dataclass(frozen=True)
class CgroupLimits:
    """What one kernel may use. Every field is given: the values come from the
    kernel's spec (whose defaults are the server's settings), never from here.
    None writes nothing: no limit on a new cgroup, the limit it had on a live one."""

    memory_bytes: int | None  # RAM; swap is always disallowed when limited
    pids: int | None  # tasks (processes and threads)
    cpu_quota: float | None  # in cores, e.g. 0.5 -> "50000 100000"

    @classmethod
    def unlimited(cls) -> CgroupLimits:
        """No limit at all: for a spare's cgroup, made before anyone knows which
        kernel, so which limits, it will hold (set_limits gives them then)."""
        return cls(memory_bytes=None, pids=None, cpu_quota=None)

    def __post_init__(self) -> None:
        # Catch nonsense here rather than as an EINVAL from a cgroup file.
        for name in ("memory_bytes", "pids"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value <= 0
            ):
                raise ValueError(f"{name}: expected a positive integer or None")
        if self.cpu_quota is not None and (
            not isinstance(self.cpu_quota, int | float)
            or isinstance(self.cpu_quota, bool)
            or self.cpu_quota <= 0
        ):
            raise ValueError("cpu_quota: expected a positive number of cores or None")


@dataclass(frozen=True)
class CgroupStats:
    """A kernel's accounting at one moment; the same fields on every layout."""

    memory_current: int  # bytes
    memory_peak: int  # bytes
    cpu_usec: int  # CPU time used, microseconds
    oom_kills: int  # processes the kernel OOM-killed in this cgroup
    pids_current: int
    pids_limit_hits: int  # forks refused by pids.max (pids.events "max"; 0 if unknown)


class KernelCgroup(abc.ABC):
    """The cgroup(s) of one kernel, in every hierarchy the layout uses."""

    name: str

    @abc.abstractmethod
    def attach(self, pid: int) -> None:
        """Move process `pid` in (0: the caller). A kernel's pid 1 is moved in while it
        builds its root, so this only writes to a few cgroup.procs files."""

    @abc.abstractmethod
    def procs(self) -> list[int]:
        """Pids currently in the cgroup (any hierarchy), sorted."""

    @abc.abstractmethod
    def stats(self) -> CgroupStats:
        """Current accounting."""

    def cpu_usec(self) -> int:
        """CPU time used, microseconds: stats().cpu_usec, read alone where that is cheaper
        (the reaper asks every kernel for it every few seconds)."""
        return self.stats().cpu_usec

    def pids_limit_hits(self) -> int:
        """Forks the pids limit refused, read alone (the spawner asks once, as the
        kernel ends): stats().pids_limit_hits where that is the only way."""
        return self.stats().pids_limit_hits

    @abc.abstractmethod
    def kill(self) -> None:
        """SIGKILL everything inside and return once it is empty (CgroupError after
        KILL_TIMEOUT seconds if it cannot be emptied)."""

    @abc.abstractmethod
    def remove(self) -> None:
        """kill() if needed, then remove the directories. Idempotent."""

    @abc.abstractmethod
    def paths(self) -> list[str]:
        """On-disk directories of this cgroup (tests assert that none is left)."""

    @abc.abstractmethod
    def set_limits(self, limits: CgroupLimits) -> None:
        """Change the limits of a live cgroup (a warm kernel given to a user who asked
        for other limits). CgroupError when it cannot be done."""

    def open_dirs(self) -> tuple[int, ...]:
        """Its directories, opened O_PATH (the caller closes them): how a process
        that must not know the paths joins it (spare.fork_spare). None under
        the none layout."""
        return ()

    @property
    def clone_into(self) -> bool:
        """Whether its one directory is a cgroup v2 one that a process can start in
        (clone3's CLONE_INTO_CGROUP) rather than move into."""
        return False

    def track(self, pids_fn: Callable[[], list[int]]) -> None:  # noqa: B027 (optional hook)
        """Register the kernel's pids for accounting. Only the none layout needs it
        (it has no cgroup to ask); the others ignore it."""


class CgroupManager(abc.ABC):
    """Creates and cleans up kernel cgroups for one host layout."""

    layout: Layout
    problems: list[str]  # what does not work on this host, for describe()

    @abc.abstractmethod
    def create(self, name: str, limits: CgroupLimits) -> KernelCgroup:
        """Create the kernel cgroup `name` ([A-Za-z0-9_-]{1,64}) with `limits`. A stale
        cgroup of that name is killed and removed first."""

    @abc.abstractmethod
    def cleanup(self) -> None:
        """Remove every kernel cgroup and this manager's sandbox-<pid>-<start> parents."""

    @abc.abstractmethod
    def describe(self) -> dict:
        """What this layout does on this host, for `doctor` and diagnostics."""


def check_name(name: object) -> str:
    """`name`, if it may name a kernel cgroup (one path component, never "..");
    CgroupError otherwise."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise CgroupError(f"cgroup name {name!r}: expected 1-64 characters of [A-Za-z0-9_-]")
    return name
