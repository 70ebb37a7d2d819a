"""The none layout: no writable cgroup filesystem. Nothing is limited here (the
caller applies rlimits, a weaker guarantee) and accounting uses psutil over the
pids the caller registers with `KernelCgroup.track`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .interface import (
    CgroupError,
    CgroupLimits,
    CgroupManager,
    CgroupStats,
    KernelCgroup,
    Layout,
    check_name,
)


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

    def pids_limit_hits(self) -> int:
        return 0  # an RLIMIT_NPROC refusal leaves no count

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


class NoneManager(CgroupManager):
    """No usable cgroups: rlimits only (applied by the caller), psutil accounting."""

    layout = Layout.NONE

    def __init__(self, problems: Iterable[str] = ()) -> None:
        self.problems = list(problems)

    def create(self, name: str, limits: CgroupLimits) -> KernelCgroup:
        return NoneCgroup(check_name(name))

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
