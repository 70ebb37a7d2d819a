"""The v1 and hybrid layouts: limits and memory accounting from v1 controllers.

* ``v1``: v1 only. The kill freezes the cgroup, SIGKILLs every task and thaws, so
  that nothing forks past the kill.
* ``hybrid``: v1 controllers plus a cgroup2 tree without controllers (the machines
  this project runs on). CPU time comes from the cgroup2 tree's ``cpu.stat`` (the
  kernel keeps it without any controller), the kill from its ``cgroup.kill``.

cgroupspy (the project's library for v1) reads the v1 memory and cpuacct files,
which it types and parses; limits are plain writes. It knows neither the pids nor the freezer
controller, and it derives a node's controller from its directory name (which
breaks on ``cpu,cpuacct`` co-mounts and mounts in unusual places), so the directories
are found from mountinfo (`probe`) and the remaining files are plain reads and writes.
"""

from __future__ import annotations

import functools
import os
import time

from cgroupspy.controllers import CpuAcctController, MemoryController

from . import fs
from .fs_driver import FsCgroup, FsManager
from .interface import CgroupError, CgroupLimits, CgroupStats, Layout
from .v2 import v2_has_kill


class _SpyNode:
    """The part of a cgroupspy Node its controllers use (full_path), built from the
    directory found in mountinfo instead of from the directory's name."""

    def __init__(self, path: str) -> None:
        self.full_path = os.fsencode(path)


@functools.cache
def _has_memsw(parent: str) -> bool:
    """Whether the memory hierarchy does swap accounting (memory.memsw.*): the
    same for every cgroup in it, so asked once per parent directory."""
    return os.path.exists(os.path.join(parent, "memory.memsw.limit_in_bytes"))


class V1Cgroup(FsCgroup):
    """A kernel cgroup in v1 hierarchies (memory required; pids, cpu, cpuacct and
    freezer when the host has them)."""

    def _apply_limits(self, limits: CgroupLimits) -> None:
        # Plain writes (fs.write), not cgroupspy's typed properties: a kernel's
        # limits are written on every create, and the properties cost more in
        # Python than the writes in the kernel.
        if limits.memory_bytes is not None:
            mem = self._dirs["memory"]
            value = str(limits.memory_bytes)
            limit, memsw = f"{mem}/memory.limit_in_bytes", f"{mem}/memory.memsw.limit_in_bytes"
            # memsw = memory + swap; the same value means no swap at all. Absent when
            # the kernel does no swap accounting. memsw may never be below the memory
            # limit, so a raise writes it first and a cut writes it last.
            if not _has_memsw(os.path.dirname(mem)):
                fs.write(limit, value)
            elif limits.memory_bytes > int(fs.read(limit)):
                fs.write(memsw, value)
                fs.write(limit, value)
            else:
                fs.write(limit, value)
                fs.write(memsw, value)
        if limits.pids is not None and "pids" in self._dirs:
            fs.write(os.path.join(self._dirs["pids"], "pids.max"), str(limits.pids))
        if limits.cpu_quota is not None and "cpu" in self._dirs:
            cpu = self._dirs["cpu"]
            fs.write(f"{cpu}/cpu.cfs_period_us", str(fs.CPU_PERIOD_US))
            fs.write(f"{cpu}/cpu.cfs_quota_us", str(fs.cpu_quota_us(limits.cpu_quota)))

    def cpu_usec(self) -> int:
        if "cpuacct" not in self._dirs:
            return 0
        try:
            return int(CpuAcctController(_SpyNode(self._dirs["cpuacct"])).usage) // 1000
        except (OSError, TypeError, ValueError):
            return 0

    def pids_limit_hits(self) -> int:
        self._require()
        if "pids" not in self._dirs:
            return 0
        return fs.read_keyed(os.path.join(self._dirs["pids"], "pids.events")).get("max", 0)

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
            pids_current = fs.read_int(os.path.join(pids_dir, "pids.current"))
            hits = fs.read_keyed(os.path.join(pids_dir, "pids.events")).get("max", 0)
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
        fs.write(state, "FROZEN")
        try:
            deadline = time.monotonic() + 0.5
            while fs.read(state).strip() != "FROZEN" and time.monotonic() < deadline:
                time.sleep(0.002)
            self._sigkill(self.procs())
        finally:
            fs.write(state, "THAWED")


class HybridCgroup(V1Cgroup):
    """v1 limits and memory accounting; CPU time and the kill from the cgroup2 tree."""

    def cpu_usec(self) -> int:
        return fs.read_keyed(os.path.join(self._dirs["unified"], "cpu.stat")).get("usage_usec", 0)

    def _kill_round(self, first: bool) -> None:
        kill_file = os.path.join(self._dirs["unified"], "cgroup.kill")
        if os.path.exists(kill_file):
            fs.write(kill_file, "1")
            if first:
                return
        # Linux < 5.14 has no cgroup.kill (and there is no freezer here): repeated
        # SIGKILL. Also after a first cgroup.kill, for a process that is in a v1
        # hierarchy but not in the cgroup2 one (a join cut short).
        self._sigkill(self.procs())


class V1Manager(FsManager):
    """Kernel cgroups in v1 hierarchies; roles: memory (required), pids, cpu, cpuacct,
    freezer."""

    layout = Layout.V1
    _cgroup_class = V1Cgroup

    def _kill_method(self) -> str:
        return "freezer+sigkill" if "freezer" in self._own else "sigkill"


class HybridManager(FsManager):
    """Kernel cgroups in v1 memory/pids/cpu plus the controller-less cgroup2 tree
    (role "unified") for CPU time and cgroup.kill."""

    layout = Layout.HYBRID
    _cgroup_class = HybridCgroup

    def _kill_method(self) -> str:
        return "cgroup.kill" if v2_has_kill(self._own["unified"]) else "sigkill"

    def describe(self) -> dict:
        d = super().describe()
        d["accounting"] = {"memory": "v1 memory", "cpu": "cgroup2 cpu.stat"}
        return d
