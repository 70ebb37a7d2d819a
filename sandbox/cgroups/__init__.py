"""Kernel cgroups: one interface over the four cgroup layouts a host can have.

A kernel's limits (memory without swap, number of tasks, CPU quota), its accounting
and a kill that leaves nothing behind all come from cgroups. Hosts differ in how
cgroups are mounted, so the layout is detected once at start (`detect`) and a
matching `CgroupManager` is built:

* ``v2``: the unified hierarchy with the memory controller available (`v2`).
* ``hybrid``: v1 controllers plus a cgroup2 tree without controllers; ``v1``: v1
  only (`v1`).
* ``none``: no writable cgroup filesystem; rlimits and psutil only (`none`).

One module per concern: `interface` (the types callers hold), `probe` (where our
own cgroups are), `detection` (which layout), `fs` (raw cgroupfs files),
`fs_driver` (what the directory layouts share), `sweep` (dead managers' trees),
and the drivers. Everything takes its paths as parameters (`detect` accepts
injected mountinfo and /proc/self/cgroup texts and a filesystem root) so the
drivers can be tested against a fake cgroupfs in a temporary directory.
"""

from .detection import detect
from .interface import (
    KILL_TIMEOUT,
    CgroupError,
    CgroupLimits,
    CgroupManager,
    CgroupStats,
    KernelCgroup,
    Layout,
)

__all__ = [
    "KILL_TIMEOUT",
    "CgroupError",
    "CgroupLimits",
    "CgroupManager",
    "CgroupStats",
    "KernelCgroup",
    "Layout",
    "detect",
]
