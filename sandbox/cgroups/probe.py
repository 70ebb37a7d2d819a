"""Where this process's own cgroups are: /proc/self/mountinfo and /proc/self/cgroup
read into one `Hierarchy` per mounted cgroup hierarchy.

Pure parsing over texts that default to this process's /proc files, with a
filesystem root to prepend, so that tests probe a fake cgroupfs.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

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
