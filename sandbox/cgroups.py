"""Kernel cgroups: one interface over the four cgroup layouts a host can have.

A kernel's limits (memory without swap, number of tasks, CPU quota), its accounting
and a kill that leaves nothing behind all come from cgroups. Hosts differ in how
cgroups are mounted, so the layout is detected once at start and a matching
`CgroupManager` is built:

* ``v2``: the unified hierarchy with the memory controller available.
* ``hybrid``: v1 controllers plus a cgroup2 tree without controllers (the machines
  this project runs on). Limits and memory accounting come from v1, CPU time from
  the cgroup2 tree's ``cpu.stat`` (the kernel keeps it without any controller) and
  the kill from the cgroup2 tree's ``cgroup.kill``.
* ``v1``: v1 only. The kill freezes the cgroup, SIGKILLs every task and thaws, so
  that nothing forks past the kill.
* ``none``: no writable cgroup filesystem. Nothing is limited here (the caller
  applies rlimits, a weaker guarantee) and accounting uses psutil over the pids
  the caller registers with `KernelCgroup.track`.

Kernel cgroups are created only under this process's own cgroup in each hierarchy
(delegation), as ``<own>/sandbox-<manager pid>-<its start>/<kernel name>``, so that
two servers on one host, or a server inside a container, never touch each other's
cgroups.

Everything below takes its paths as parameters (`detect` accepts injected
mountinfo and /proc/self/cgroup texts and a filesystem root) so the drivers can be
tested against a fake cgroupfs in a temporary directory.

cgroupspy (the project's library for v1) is used for the v1 memory and cpu/cpuacct
files, which it types and parses. It knows neither the pids nor the freezer
controller, and it derives a node's controller from its directory name (which
breaks on ``cpu,cpuacct`` co-mounts and mounts in unusual places), so the directories
are found here from mountinfo and the remaining files are plain reads and writes.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import errno
import logging
import os
import posixpath
import re
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from cgroupspy.controllers import CpuAcctController, CpuController, MemoryController

log = logging.getLogger(__name__)

ENV_LAYOUT = "SANDBOX_CGROUP_LAYOUT"
CPU_PERIOD_US = 100_000
KILL_TIMEOUT = 5.0  # seconds kill() waits for a cgroup to empty before giving up

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# The v2 controllers a kernel cgroup uses, in the order they are enabled.
_V2_CONTROLLERS = ("memory", "pids", "cpu")
# Every v1 controller the kernel knows; other cgroup super options (xattr,
# clone_children, release_agent=...) are not controllers.
_V1_CONTROLLERS = frozenset(
    [
        "cpuset",
        "cpu",
        "cpuacct",
        "blkio",
        "memory",
        "devices",
        "freezer",
        "net_cls",
        "perf_event",
        "net_prio",
        "hugetlb",
        "pids",
        "rdma",
        "misc",
        "debug",
    ]
)


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
    """What one kernel may use. None means no limit."""

    memory_bytes: int | None = None  # RAM; swap is always disallowed when limited
    pids: int | None = None  # tasks (processes and threads)
    cpu_quota: float | None = None  # in cores, e.g. 0.5 -> "50000 100000"

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
        that must not know the paths joins it (process.fork_spare). None under
        the none layout."""
        return ()

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


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Mount:
    """One cgroup line of /proc/self/mountinfo."""

    root: str  # the cgroup shown at the mount point (4th field); not always "/"
    mountpoint: str
    fstype: str  # "cgroup" (v1) or "cgroup2"
    super_options: tuple[str, ...]

    @property
    def controllers(self) -> frozenset[str]:
        """v1 controllers (and name=... of a named hierarchy) bound to this mount."""
        if self.fstype != "cgroup":
            return frozenset()
        return frozenset(
            o for o in self.super_options if o in _V1_CONTROLLERS or o.startswith("name=")
        )


def _unescape(field_: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_)


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup and cgroup2 mounts in a /proc/<pid>/mountinfo text, in order."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or len(rest) < 2:
            continue
        fstype = rest[0]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        opts = tuple(rest[2].split(",")) if len(rest) > 2 else ()
        mounts.append(Mount(_unescape(fields[3]), _unescape(fields[4]), fstype, opts))
    return mounts


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/<pid>/cgroup as {controller: cgroup path}. Each controller of a co-mounted
    v1 hierarchy gets its own key ("cpu" and "cpuacct" for "2:cpu,cpuacct:/x"); a named
    hierarchy is keyed "name=..."; the cgroup2 line ("0::/x") is keyed ""."""
    own: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            own[""] = path
        else:
            for c in controllers.split(","):
                own[c] = path
    return own


@dataclass(frozen=True)
class Hierarchy:
    """Where this process's own cgroup of one hierarchy is on disk."""

    version: int  # 1 or 2
    controllers: frozenset[str]  # v1 controllers of the mount; empty for cgroup2
    mountpoint: str  # with the filesystem root applied
    mount_root: str
    cgroup_path: str  # from /proc/self/cgroup
    own_dir: str | None  # None when our cgroup is outside what the mount shows


@dataclass
class HostCgroups:
    """The cgroup hierarchies visible to this process."""

    v1: dict[str, Hierarchy] = field(default_factory=dict)  # controller -> hierarchy
    v2: Hierarchy | None = None
    problems: list[str] = field(default_factory=list)


def _own_dir(mountpoint: str, mount_root: str, cgroup_path: str) -> str | None:
    """mountpoint + (own cgroup path relative to the mount root), or None when the
    cgroup is not below the mount root (e.g. a container's view of a host cgroup)."""
    root = posixpath.normpath(mount_root)
    path = posixpath.normpath(cgroup_path)
    if root != "/" and path != root and not path.startswith(root + "/"):
        return None
    rel = posixpath.relpath(path, root)
    if rel.startswith(".."):
        return None
    return posixpath.normpath(posixpath.join(mountpoint, rel))


def _under(fs_root: str, path: str) -> str:
    return posixpath.normpath(posixpath.join(fs_root, path.lstrip("/")))


def probe(
    mountinfo: str | None = None, proc_cgroup: str | None = None, fs_root: str = "/"
) -> HostCgroups:
    """Find our own cgroup in every mounted hierarchy.

    `mountinfo` and `proc_cgroup` default to this process's /proc files; `fs_root` is
    prepended to mount points (a fake cgroupfs in tests)."""
    if mountinfo is None:
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
    if proc_cgroup is None:
        with open("/proc/self/cgroup") as f:
            proc_cgroup = f.read()
    mounts = parse_mountinfo(mountinfo)
    own = parse_proc_cgroup(proc_cgroup)
    # A later mount on the same mount point hides the earlier one.
    visible = list({m.mountpoint: m for m in mounts}.values())
    host = HostCgroups()

    def pick(candidates: list[Mount], path: str) -> tuple[Mount, str | None] | None:
        chosen = None
        for m in candidates:
            d = _own_dir(m.mountpoint, m.root, path)
            if d is not None:
                return m, _under(fs_root, d)
            chosen = chosen or (m, None)
        return chosen

    if "" in own:
        found = pick([m for m in visible if m.fstype == "cgroup2"], own[""])
        if found:
            m, d = found
            host.v2 = Hierarchy(2, frozenset(), _under(fs_root, m.mountpoint), m.root, own[""], d)
            if d is None:
                host.problems.append(
                    f"cgroup2: our cgroup {own['']} is outside the mount root {m.root}"
                )
    for controller, path in own.items():
        if not controller or controller.startswith("name=") or controller in host.v1:
            continue
        found = pick(
            [m for m in visible if m.fstype == "cgroup" and controller in m.super_options], path
        )
        if not found:
            continue
        m, d = found
        h = Hierarchy(1, m.controllers, _under(fs_root, m.mountpoint), m.root, path, d)
        for c in m.controllers:
            if c in own and own[c] == path:
                host.v1.setdefault(c, h)
        host.v1.setdefault(controller, h)
        if d is None:
            host.problems.append(
                f"cgroup v1 {controller}: our cgroup {path} is outside the mount root {m.root}"
            )
    return host


# --------------------------------------------------------------------------- file helpers


def _write(path: str, value: str) -> None:
    """Write one value to a cgroup file (one write(2), as the kernel expects)."""
    with open(path, "w") as f:
        f.write(value)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _read_int(path: str, default: int | None = 0) -> int | None:
    try:
        return int(_read(path).split()[0])
    except (OSError, ValueError, IndexError):
        return default


def _read_keyed(path: str) -> dict[str, int]:
    """Parse flat-keyed files ("key value" per line: cpu.stat, memory.events, ...)."""
    out: dict[str, int] = {}
    try:
        text = _read(path)
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            with contextlib.suppress(ValueError):
                out[parts[0]] = int(parts[1])
    return out


def _read_pids(path: str) -> list[int]:
    """Pids in a cgroup.procs file; none when the cgroup is gone."""
    try:
        text = _read(path)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENODEV):
            return []
        raise
    return [int(p) for p in text.split()]


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _writable_dir(path: str | None) -> bool:
    return path is not None and os.path.isdir(path) and os.access(path, os.W_OK)


class _SpyNode:
    """The part of a cgroupspy Node its controllers use (full_path), built from the
    directory found in mountinfo instead of from the directory's name."""

    def __init__(self, path: str) -> None:
        self.full_path = os.fsencode(path)


def _cpu_quota_us(cores: float) -> int:
    # The kernel refuses quotas under 1 ms.
    return max(1000, round(cores * CPU_PERIOD_US))


# --------------------------------------------------------------------------- kernel cgroups


class _FsCgroup(KernelCgroup):
    """A kernel cgroup made of directories in one or more mounted hierarchies.

    `dirs` maps a role ("memory", "pids", "cpu", "cpuacct", "freezer", "unified") to the
    kernel's directory for it; co-mounted controllers share one directory."""

    def __init__(
        self,
        name: str,
        dirs: Mapping[str, str],
        on_remove: Callable[[KernelCgroup], None] | None = None,
    ) -> None:
        self.name = name
        self._dirs = dict(dirs)
        self._paths = _unique(self._dirs.values())
        # Precomputed so that attach() is a handful of syscalls.
        self._procs_files = tuple(os.path.join(d, "cgroup.procs") for d in self._paths)
        self._on_remove = on_remove
        self._peak_seen = 0

    def attach(self, pid: int) -> None:
        for path in self._procs_files:
            try:
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.write(fd, str(pid).encode())
                finally:
                    os.close(fd)
            except OSError as e:
                raise CgroupError(f"attach {pid} to {path}: {e}") from e

    def open_dirs(self) -> tuple[int, ...]:
        opened: list[int] = []
        try:
            for path in self._paths:
                opened.append(os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
        except OSError as e:
            for fd in opened:
                os.close(fd)
            raise CgroupError(f"open {path}: {e}") from e
        return tuple(opened)

    def procs(self) -> list[int]:
        pids: set[int] = set()
        for d in self._paths:
            pids.update(_read_pids(os.path.join(d, "cgroup.procs")))
        return sorted(pids)

    def paths(self) -> list[str]:
        return list(self._paths)

    def _exists(self) -> bool:
        return any(os.path.isdir(d) for d in self._paths)

    @abc.abstractmethod
    def _apply_limits(self, limits: CgroupLimits) -> None:
        """Write the limits into the directories (fresh ones, or live ones)."""

    def set_limits(self, limits: CgroupLimits) -> None:
        self._require()
        try:
            self._apply_limits(limits)
        except OSError as e:
            raise CgroupError(f"cgroup {self.name}: setting {limits}: {e}") from e

    @abc.abstractmethod
    def _kill_round(self, first: bool) -> None:
        """One attempt at killing everything inside; kill() repeats it until empty."""

    def kill(self) -> None:
        deadline = time.monotonic() + KILL_TIMEOUT
        delay = 0.001
        first = True
        while True:
            pids = self.procs()
            if not pids:
                return
            if time.monotonic() >= deadline:
                raise CgroupError(
                    f"cgroup {self.name}: {len(pids)} processes survive SIGKILL "
                    f"after {KILL_TIMEOUT:g}s: {pids[:10]}"
                )
            self._kill_round(first)
            first = False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _sigkill(self, pids: Iterable[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        if self._exists():
            if self.procs():
                self.kill()
            for d in reversed(self._paths):
                _rmdir_tree(d)
        if self._on_remove is not None:
            self._on_remove(self)

    def _require(self) -> None:
        if not self._exists():
            raise CgroupError(f"cgroup {self.name} does not exist (removed?)")


def _rmdir_tree(path: str, timeout: float = 1.0) -> None:
    """rmdir a cgroup directory and any child cgroups, deepest first. ENOENT is fine
    (idempotent); EBUSY (tasks still exiting) is retried briefly."""
    try:
        children = [e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return
    for child in children:
        _rmdir_tree(child, timeout)
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise CgroupError(f"rmdir {path}: {e}") from e
            time.sleep(0.01)


def tree_name(pid: int) -> str:
    """The name of the cgroup tree that a manager running as `pid` makes:
    sandbox-<pid>-<start>, where <start> is when that process started (clock ticks
    after boot). The start tells the process that made a tree from a later one given
    the same pid, so pid reuse cannot make a dead manager's tree look alive."""
    return f"sandbox-{pid}-{_start_ticks(pid)}"


def _start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat.rsplit(b")", 1)[1].split()[19])


# A manager's tree, sandbox-<pid>-<start> (sandbox-<pid> before the start was kept),
# and the leaf a v2 manager moves its cgroup's processes into: <tree>-supervisor.
_TREE_RE = re.compile(r"^(sandbox-(\d+)(?:-(\d+))?)(-supervisor)?$")


def _sweep_stale(own_dir: str, own_tree: str) -> None:
    """Remove the empty trees in `own_dir` whose manager is gone: what a spawner
    killed by SIGKILL (or a crashed host) left. Cgroups that still hold processes
    are left alone and logged."""
    try:
        entries = [e for e in os.scandir(own_dir) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return
    for entry in entries:
        m = _TREE_RE.match(entry.name)
        if not m or m.group(1) == own_tree or _manager_alive(m):
            continue
        if m.group(4) and _read_pids(os.path.join(entry.path, "cgroup.procs")):
            continue  # a dead manager's supervisor leaf still holds what it moved there
        try:
            _rmdir_tree(entry.path, timeout=0.1)
            log.info("removed the stale cgroup tree %s", entry.path)
        except CgroupError as e:
            log.warning("stale cgroup tree %s is still in use: %s", entry.path, e)


def _manager_alive(tree: re.Match[str]) -> bool:
    """Whether the process that made the tree `_TREE_RE` matched still runs."""
    started = _start_ticks(int(tree.group(2)))
    if tree.group(3) is None:  # no start kept: all we can tell is whether the pid is used
        return started is not None
    return started == int(tree.group(3))


class V2Cgroup(_FsCgroup):
    """A kernel cgroup in the unified hierarchy."""

    def __init__(
        self,
        name: str,
        dirs: Mapping[str, str],
        controllers: Iterable[str],
        on_remove: Callable[[KernelCgroup], None] | None = None,
    ) -> None:
        super().__init__(name, dirs, on_remove)
        self._dir = self._dirs["unified"]
        self._controllers = frozenset(controllers)

    def _apply_limits(self, limits: CgroupLimits) -> None:
        d = self._dir
        if "memory" in self._controllers:
            if limits.memory_bytes is not None:
                _write(os.path.join(d, "memory.max"), str(limits.memory_bytes))
            try:
                _write(os.path.join(d, "memory.swap.max"), "0")
            except OSError as e:  # kernel without swap accounting: nothing to swap to
                log.warning("cgroup %s: memory.swap.max not set: %s", self.name, e)
        if "pids" in self._controllers and limits.pids is not None:
            _write(os.path.join(d, "pids.max"), str(limits.pids))
        if "cpu" in self._controllers and limits.cpu_quota is not None:
            quota = _cpu_quota_us(limits.cpu_quota)
            _write(os.path.join(d, "cpu.max"), f"{quota} {CPU_PERIOD_US}")

    def cpu_usec(self) -> int:
        return _read_keyed(os.path.join(self._dir, "cpu.stat")).get("usage_usec", 0)

    def stats(self) -> CgroupStats:
        self._require()
        d = self._dir
        current = _read_int(os.path.join(d, "memory.current"))
        self._peak_seen = max(self._peak_seen, current)
        # memory.peak appeared in Linux 5.19; before that, the max of our samples.
        peak = _read_int(os.path.join(d, "memory.peak"), None)
        if "pids" in self._controllers:
            pids_current = _read_int(os.path.join(d, "pids.current"))
        else:
            pids_current = len(self.procs())
        return CgroupStats(
            memory_current=current,
            memory_peak=peak if peak is not None else self._peak_seen,
            cpu_usec=self.cpu_usec(),
            oom_kills=_read_keyed(os.path.join(d, "memory.events")).get("oom_kill", 0),
            pids_current=pids_current,
            pids_limit_hits=_read_keyed(os.path.join(d, "pids.events")).get("max", 0),
        )

    def _kill_round(self, first: bool) -> None:
        d = self._dir
        kill_file = os.path.join(d, "cgroup.kill")
        if os.path.exists(kill_file):  # Linux >= 5.14: atomic, forks cannot escape
            _write(kill_file, "1")
            return
        freeze = os.path.join(d, "cgroup.freeze")
        frozen = os.path.exists(freeze)
        if frozen:  # v2 frozen tasks still die on SIGKILL
            _write(freeze, "1")
        try:
            self._sigkill(self.procs())
        finally:
            if frozen:
                _write(freeze, "0")


class V1Cgroup(_FsCgroup):
    """A kernel cgroup in v1 hierarchies (memory required; pids, cpu, cpuacct and
    freezer when the host has them)."""

    def _apply_limits(self, limits: CgroupLimits) -> None:
        if limits.memory_bytes is not None:
            mem = MemoryController(_SpyNode(self._dirs["memory"]))
            # memsw = memory + swap; the same value means no swap at all. Absent when
            # the kernel does no swap accounting. memsw may never be below the memory
            # limit, so a raise writes it first and a cut writes it last.
            memsw = os.path.exists(
                os.path.join(self._dirs["memory"], "memory.memsw.limit_in_bytes")
            )
            if memsw and limits.memory_bytes > mem.limit_in_bytes:
                mem.memsw_limit_in_bytes = limits.memory_bytes
            mem.limit_in_bytes = limits.memory_bytes
            if memsw:
                mem.memsw_limit_in_bytes = limits.memory_bytes
        if limits.pids is not None and "pids" in self._dirs:
            _write(os.path.join(self._dirs["pids"], "pids.max"), str(limits.pids))
        if limits.cpu_quota is not None and "cpu" in self._dirs:
            cpu = CpuController(_SpyNode(self._dirs["cpu"]))
            cpu.cfs_period_us = CPU_PERIOD_US
            cpu.cfs_quota_us = _cpu_quota_us(limits.cpu_quota)

    def cpu_usec(self) -> int:
        if "cpuacct" not in self._dirs:
            return 0
        try:
            return int(CpuAcctController(_SpyNode(self._dirs["cpuacct"])).usage) // 1000
        except (OSError, TypeError, ValueError):
            return 0

    def stats(self) -> CgroupStats:
        self._require()
        mem = MemoryController(_SpyNode(self._dirs["memory"]))
        try:
            current = int(mem.usage_in_bytes)
            peak = int(mem.max_usage_in_bytes)
            oom = mem.oom_control
        except (OSError, TypeError, ValueError) as e:
            raise CgroupError(f"cgroup {self.name}: reading v1 memory: {e}") from e
        self._peak_seen = max(self._peak_seen, current, peak)
        oom_kills = oom.get("oom_kill", 0) if isinstance(oom, dict) else 0
        if "pids" in self._dirs:
            pids_dir = self._dirs["pids"]
            pids_current = _read_int(os.path.join(pids_dir, "pids.current"))
            hits = _read_keyed(os.path.join(pids_dir, "pids.events")).get("max", 0)
        else:
            pids_current, hits = len(self.procs()), 0
        return CgroupStats(
            memory_current=current,
            memory_peak=self._peak_seen,
            cpu_usec=self.cpu_usec(),
            oom_kills=oom_kills,
            pids_current=pids_current,
            pids_limit_hits=hits,
        )

    def _kill_round(self, first: bool) -> None:
        freezer = self._dirs.get("freezer")
        if freezer is None:
            self._sigkill(self.procs())
            return
        # Frozen tasks cannot fork, so one pass of SIGKILL reaches all of them; they die
        # when thawed.
        state = os.path.join(freezer, "freezer.state")
        _write(state, "FROZEN")
        try:
            deadline = time.monotonic() + 0.5
            while _read(state).strip() != "FROZEN" and time.monotonic() < deadline:
                time.sleep(0.002)
            self._sigkill(self.procs())
        finally:
            _write(state, "THAWED")


class HybridCgroup(V1Cgroup):
    """v1 limits and memory accounting; CPU time and the kill from the cgroup2 tree."""

    def cpu_usec(self) -> int:
        return _read_keyed(os.path.join(self._dirs["unified"], "cpu.stat")).get("usage_usec", 0)

    def _kill_round(self, first: bool) -> None:
        kill_file = os.path.join(self._dirs["unified"], "cgroup.kill")
        if os.path.exists(kill_file):
            _write(kill_file, "1")
            if first:
                return
        # Linux < 5.14 has no cgroup.kill (and there is no freezer here): repeated
        # SIGKILL. Also after a first cgroup.kill, for a process that is in a v1
        # hierarchy but not in the cgroup2 one (a join cut short).
        self._sigkill(self.procs())


class NoneCgroup(KernelCgroup):
    """No cgroup at all: nothing to join, limit or kill here (the caller applies
    rlimits and kills the pid-namespace init). Accounting sums psutil readings over
    the pids the caller registers with track(); weaker than a cgroup: memory is the
    sum of RSS (shared pages counted in each process), there is no OOM or
    fork-limit count. CPU time is exact for processes that were waited for, since
    a parent's children times include every descendant it reaped."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._pids_fn: Callable[[], list[int]] | None = None
        self._peak = 0
        self._cpu_usec = 0

    def track(self, pids_fn: Callable[[], list[int]]) -> None:
        self._pids_fn = pids_fn

    def attach(self, pid: int) -> None:
        pass

    def procs(self) -> list[int]:
        return []

    def kill(self) -> None:
        pass

    def remove(self) -> None:
        pass

    def paths(self) -> list[str]:
        return []

    def set_limits(self, limits: CgroupLimits) -> None:
        raise CgroupError("no cgroup: a kernel's rlimits are fixed when it starts")

    def stats(self) -> CgroupStats:
        import psutil  # only this layout needs it; keeps the others' import light

        rss = count = 0
        cpu = 0.0
        for pid in self._pids_fn() if self._pids_fn else []:
            try:
                proc = psutil.Process(pid)
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    t = proc.cpu_times()
                cpu += t.user + t.system + t.children_user + t.children_system
                count += 1
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        self._peak = max(self._peak, rss)
        # Never backwards: a child between exit and its parent's wait counts nowhere.
        self._cpu_usec = max(self._cpu_usec, int(cpu * 1_000_000))
        return CgroupStats(
            memory_current=rss,
            memory_peak=self._peak,
            cpu_usec=self._cpu_usec,
            oom_kills=0,
            pids_current=count,
            pids_limit_hits=0,
        )


# --------------------------------------------------------------------------- managers


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise CgroupError(f"cgroup name {name!r}: expected 1-64 characters of [A-Za-z0-9_-]")
    return name


class _FsManager(CgroupManager):
    """Shared create/cleanup for the layouts that have cgroup directories.

    `own_dirs` maps each role to this process's own cgroup directory for it."""

    _cgroup_class: type[_FsCgroup]

    def __init__(
        self, own_dirs: Mapping[str, str], tree: str | None = None, problems: Iterable[str] = ()
    ) -> None:
        self._tree = tree_name(os.getpid()) if tree is None else tree
        self._own = dict(own_dirs)
        self._base = {r: os.path.join(d, self._tree) for r, d in self._own.items()}
        self._kernels: dict[str, _FsCgroup] = {}
        self._prepared = False
        self.problems = list(problems)

    def _prepare(self) -> None:
        """Create the sandbox-<pid>-<start> parents (once), after sweeping away those of
        managers that died without cleaning up."""
        for d in _unique(self._own.values()):
            _sweep_stale(d, self._tree)
        for d in _unique(self._base.values()):
            os.makedirs(d, exist_ok=True)
        self._prepared = True

    def _new_cgroup(self, name: str) -> _FsCgroup:
        dirs = {r: os.path.join(b, name) for r, b in self._base.items()}
        return self._cgroup_class(name, dirs, on_remove=self._forget)

    def _forget(self, cg: KernelCgroup) -> None:
        if self._kernels.get(cg.name) is cg:
            del self._kernels[cg.name]

    def create(self, name: str, limits: CgroupLimits) -> KernelCgroup:
        _check_name(name)
        try:
            if not self._prepared:
                self._prepare()
        except OSError as e:
            raise CgroupError(f"preparing the sandbox cgroups: {e}") from e
        old = self._kernels.get(name)
        cg = self._new_cgroup(name)
        if old is not None:
            old.remove()
        if any(os.path.lexists(d) for d in cg.paths()):
            log.info("cgroup %s: removing a stale cgroup of that name", name)
            cg.remove()
        made = []
        try:
            for d in cg.paths():
                os.mkdir(d)
                made.append(d)
            cg._apply_limits(limits)
        except OSError as e:
            for d in reversed(made):
                with contextlib.suppress(OSError):
                    os.rmdir(d)
            raise CgroupError(f"creating cgroup {name}: {e}") from e
        self._kernels[name] = cg
        return cg

    def cleanup(self) -> None:
        errors = []
        for cg in list(self._kernels.values()):
            try:
                cg.remove()
            except CgroupError as e:
                errors.append(str(e))
        # Children left by an earlier manager with our tree's name, or made behind our back.
        names: set[str] = set()
        for b in _unique(self._base.values()):
            with contextlib.suppress(OSError):
                names.update(e.name for e in os.scandir(b) if e.is_dir(follow_symlinks=False))
        for name in sorted(names):
            try:
                self._new_cgroup(name).remove()
            except CgroupError as e:
                errors.append(str(e))
        for b in _unique(self._base.values()):
            try:
                _rmdir_tree(b)
            except CgroupError as e:
                errors.append(str(e))
        self._prepared = False
        if errors:
            raise CgroupError("cleanup: " + "; ".join(errors))

    def _limits_available(self) -> dict[str, bool]:
        return {
            "memory": "memory" in self._own,
            "pids": "pids" in self._own,
            "cpu": "cpu" in self._own,
        }

    def describe(self) -> dict:
        return {
            "layout": self.layout.value,
            "controllers": [r for r in self._own if r != "unified"],
            "limits": self._limits_available(),
            "kill": self._kill_method(),
            "paths": dict(self._base),
            "problems": list(self.problems),
        }

    @abc.abstractmethod
    def _kill_method(self) -> str: ...


def _v2_has_kill(own_dir: str) -> bool:
    """cgroup.kill exists in every non-root cgroup of Linux >= 5.14."""
    if os.path.exists(os.path.join(own_dir, "cgroup.kill")):
        return True
    if os.path.exists(os.path.join(own_dir, "cgroup.type")):
        return False  # a non-root cgroup without cgroup.kill: too old
    release = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return bool(release) and tuple(map(int, release.groups())) >= (5, 14)


class V2Manager(_FsManager):
    """Kernel cgroups in the unified hierarchy.

    `own_dir` is this process's cgroup2 directory; `available` the controllers its
    cgroup.controllers offers (read from it when None); `is_root` whether it is the
    hierarchy's root cgroup, which is exempt from the "no internal processes" rule
    (decided by the absence of cgroup.type when None)."""

    layout = Layout.V2
    _cgroup_class = V2Cgroup

    def __init__(
        self,
        own_dir: str,
        tree: str | None = None,
        problems: Iterable[str] = (),
        available: Iterable[str] | None = None,
        is_root: bool | None = None,
    ) -> None:
        super().__init__({"unified": own_dir}, tree, problems)
        if available is None:
            available = _read(os.path.join(own_dir, "cgroup.controllers")).split()
        self._controllers = [c for c in _V2_CONTROLLERS if c in set(available)]
        for c in _V2_CONTROLLERS:
            if c not in self._controllers:
                self.problems.append(
                    f"cgroup2 controller {c!r} is not offered at {own_dir}: no {c} limit"
                )
        if is_root is None:
            is_root = not os.path.exists(os.path.join(own_dir, "cgroup.type"))
        self._is_root = is_root
        self._supervisor = os.path.join(own_dir, f"{self._tree}-supervisor")
        self._moved = False

    def _new_cgroup(self, name: str) -> _FsCgroup:
        dirs = {"unified": os.path.join(self._base["unified"], name)}
        return V2Cgroup(name, dirs, self._controllers, on_remove=self._forget)

    def _prepare(self) -> None:
        own, base = self._own["unified"], self._base["unified"]
        _sweep_stale(own, self._tree)
        wanted = " ".join("+" + c for c in self._controllers)
        enabled = set(_read(os.path.join(own, "cgroup.subtree_control")).split())
        if wanted and not set(self._controllers) <= enabled:
            if not self._is_root:
                self._evacuate(own)
            _write(os.path.join(own, "cgroup.subtree_control"), wanted)
        os.makedirs(base, exist_ok=True)
        if wanted:
            _write(os.path.join(base, "cgroup.subtree_control"), wanted)
        self._prepared = True

    def _evacuate(self, own: str) -> None:
        """Move our own processes into a leaf so that `own` may enable controllers for
        its children (the v2 "no internal processes" rule). Our cgroup is delegated to
        us, so every process in it is ours."""
        procs = os.path.join(own, "cgroup.procs")
        pids = _read_pids(procs)
        if not pids:
            return
        os.makedirs(self._supervisor, exist_ok=True)
        target = os.path.join(self._supervisor, "cgroup.procs")
        tried: set[int] = set()
        for _ in range(20):  # processes may fork while we move them
            todo = [p for p in pids if p not in tried]
            if not todo:
                break
            for pid in todo:
                tried.add(pid)
                try:
                    _write(target, str(pid))
                except ProcessLookupError:
                    continue
            pids = _read_pids(procs)
        self._moved = True

    def cleanup(self) -> None:
        super().cleanup()
        # Our processes stay in the supervisor leaf; remove it only if it is empty.
        with contextlib.suppress(OSError):
            os.rmdir(self._supervisor)

    def _limits_available(self) -> dict[str, bool]:
        return {c: c in self._controllers for c in _V2_CONTROLLERS}

    def _kill_method(self) -> str:
        if _v2_has_kill(self._own["unified"]):
            return "cgroup.kill"
        return "cgroup.freeze+sigkill"

    def describe(self) -> dict:
        d = super().describe()
        d["controllers"] = list(self._controllers)
        if self._moved:
            d["paths"]["supervisor"] = self._supervisor
        return d


class V1Manager(_FsManager):
    """Kernel cgroups in v1 hierarchies; roles: memory (required), pids, cpu, cpuacct,
    freezer."""

    layout = Layout.V1
    _cgroup_class = V1Cgroup

    def _kill_method(self) -> str:
        return "freezer+sigkill" if "freezer" in self._own else "sigkill"


class HybridManager(_FsManager):
    """Kernel cgroups in v1 memory/pids/cpu plus the controller-less cgroup2 tree
    (role "unified") for CPU time and cgroup.kill."""

    layout = Layout.HYBRID
    _cgroup_class = HybridCgroup

    def _kill_method(self) -> str:
        return "cgroup.kill" if _v2_has_kill(self._own["unified"]) else "sigkill"

    def describe(self) -> dict:
        d = super().describe()
        d["accounting"] = {"memory": "v1 memory", "cpu": "cgroup2 cpu.stat"}
        return d


class NoneManager(CgroupManager):
    """No usable cgroups: rlimits only (applied by the caller), psutil accounting."""

    layout = Layout.NONE

    def __init__(self, problems: Iterable[str] = ()) -> None:
        self.problems = list(problems)

    def create(self, name: str, limits: CgroupLimits) -> KernelCgroup:
        return NoneCgroup(_check_name(name))

    def cleanup(self) -> None:
        pass

    def describe(self) -> dict:
        return {
            "layout": self.layout.value,
            "controllers": [],
            "limits": {"memory": False, "pids": False, "cpu": False},
            "kill": "pid-namespace init (caller)",
            "paths": {},
            "problems": [
                "no usable cgroups: limits are rlimits only, accounting is psutil",
                *self.problems,
            ],
        }


# --------------------------------------------------------------------------- detection


class _Unfit(Exception):
    """The host cannot do a layout; args are the reasons."""


def _usable_v1(host: HostCgroups, controller: str) -> str | None:
    h = host.v1.get(controller)
    return h.own_dir if h is not None and _writable_dir(h.own_dir) else None


def _v1_roles(host: HostCgroups, roles: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Own dirs of the required v1 memory hierarchy plus whichever optional `roles` work."""
    memory = _usable_v1(host, "memory")
    if memory is None:
        h = host.v1.get("memory")
        where = (h.own_dir or h.mountpoint) if h else None
        raise _Unfit(
            "cgroup v1 memory: not mounted"
            if h is None
            else f"cgroup v1 memory: {where} is not a writable directory"
        )
    dirs, problems = {"memory": memory}, []
    for role in roles:
        d = _usable_v1(host, role)
        if d is None:
            problems.append(f"cgroup v1 {role}: not mounted or not writable; no {role} support")
        else:
            dirs[role] = d
    return dirs, problems


def _plan_v2(host: HostCgroups, tree: str | None) -> CgroupManager:
    h = host.v2
    if h is None:
        raise _Unfit("cgroup2: not mounted")
    if h.own_dir is None or not os.path.isdir(h.own_dir):
        raise _Unfit(f"cgroup2: our cgroup {h.cgroup_path} is not visible under {h.mountpoint}")
    own = h.own_dir
    m = _TREE_RE.match(os.path.basename(own))
    if m and m.group(4) and os.access(os.path.dirname(own), os.W_OK):
        # An earlier manager moved our processes into its supervisor leaf. The cgroup
        # delegated to us is that leaf's parent: our tree goes beside the earlier
        # one there, and the sweep finds that one if its manager has died.
        own = os.path.dirname(own)
    try:
        available = _read(os.path.join(own, "cgroup.controllers")).split()
    except OSError as e:
        raise _Unfit(f"cgroup2: {e}") from e
    if "memory" not in available:
        raise _Unfit(f"cgroup2: no memory controller at {own} (offered: {available})")
    if not os.access(own, os.W_OK):
        raise _Unfit(f"cgroup2: {own} is not writable")
    return V2Manager(own, tree, available=available)


def _plan_hybrid(host: HostCgroups, tree: str | None) -> CgroupManager:
    h = host.v2
    if h is None:
        raise _Unfit("hybrid: no cgroup2 tree mounted")
    if not _writable_dir(h.own_dir):
        raise _Unfit(f"hybrid: cgroup2 {h.own_dir or h.mountpoint} is not a writable directory")
    dirs, problems = _v1_roles(host, ("pids", "cpu"))
    dirs["unified"] = h.own_dir
    return HybridManager(dirs, tree, problems)


def _plan_v1(host: HostCgroups, tree: str | None) -> CgroupManager:
    dirs, problems = _v1_roles(host, ("pids", "cpu", "cpuacct", "freezer"))
    return V1Manager(dirs, tree, problems)


_PLANS = {Layout.V2: _plan_v2, Layout.HYBRID: _plan_hybrid, Layout.V1: _plan_v1}


def detect(
    force: Layout | str | None = None,
    *,
    mountinfo: str | None = None,
    proc_cgroup: str | None = None,
    fs_root: str = "/",
    tree: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> CgroupManager:
    """Build the manager for this host's cgroup layout.

    `force` (or else $SANDBOX_CGROUP_LAYOUT) picks a layout and raises CgroupError if
    the host cannot do it. Otherwise the first of v2, hybrid, v1 that the host supports
    with writable directories wins, and none (with the reasons in its problems) if no
    layout does. The keyword arguments inject the inputs for tests; `tree` names the
    parents of the kernel cgroups (default: `tree_name` of this process)."""
    env = os.environ if environ is None else environ
    if force is None and env.get(ENV_LAYOUT):
        force = env[ENV_LAYOUT]
    if isinstance(force, str):
        try:
            force = Layout(force.strip().lower())
        except ValueError:
            raise CgroupError(
                f"unknown cgroup layout {force!r}: expected one of v2, hybrid, v1, none"
            ) from None
    if force is Layout.NONE:
        return NoneManager(["layout forced to none"])
    try:
        host = probe(mountinfo, proc_cgroup, fs_root)
    except OSError as e:
        if force is not None:
            raise CgroupError(f"cannot read the cgroup mounts: {e}") from e
        return NoneManager([f"cannot read the cgroup mounts: {e}"])
    if force is not None:
        try:
            manager = _PLANS[force](host, tree)
        except _Unfit as e:
            raise CgroupError(f"cgroup layout {force.value} is not possible here: {e}") from e
        manager.problems[:0] = host.problems
        return manager
    problems = list(host.problems)
    for layout in (Layout.V2, Layout.HYBRID, Layout.V1):
        try:
            manager = _PLANS[layout](host, tree)
        except _Unfit as e:
            problems.append(f"{layout.value}: {e}")
            continue
        manager.problems[:0] = host.problems
        return manager
    log.warning("no usable cgroups, falling back to rlimits only: %s", "; ".join(problems))
    return NoneManager(problems)
