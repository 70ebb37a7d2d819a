"""The v2 layout: kernel cgroups in the unified hierarchy with the memory controller.

The kill is cgroup.kill (Linux >= 5.14), else freeze, SIGKILL every task, thaw.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping

from . import fs
from .fs_driver import FsCgroup, FsManager
from .interface import CgroupLimits, CgroupStats, KernelCgroup, Layout
from .sweep import sweep_stale

log = logging.getLogger(__name__)

# The v2 controllers a kernel cgroup uses, in the order they are enabled.
_V2_CONTROLLERS = ("memory", "pids", "cpu")


class V2Cgroup(FsCgroup):
    """A kernel cgroup in the unified hierarchy."""

    clone_into = True  # type: ignore[assignment]  (see KernelCgroup.clone_into)

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
                fs.write(os.path.join(d, "memory.max"), str(limits.memory_bytes))
            try:
                fs.write(os.path.join(d, "memory.swap.max"), "0")
            except OSError as e:  # kernel without swap accounting: nothing to swap to
                log.warning("cgroup %s: memory.swap.max not set: %s", self.name, e)
        if "pids" in self._controllers and limits.pids is not None:
            fs.write(os.path.join(d, "pids.max"), str(limits.pids))
        if "cpu" in self._controllers and limits.cpu_quota is not None:
            quota = fs.cpu_quota_us(limits.cpu_quota)
            fs.write(os.path.join(d, "cpu.max"), f"{quota} {fs.CPU_PERIOD_US}")

    def cpu_usec(self) -> int:
        return fs.read_keyed(os.path.join(self._dir, "cpu.stat")).get("usage_usec", 0)

    def stats(self) -> CgroupStats:
        self._require()
        d = self._dir
        current = fs.read_int(os.path.join(d, "memory.current"))
        self._peak_seen = max(self._peak_seen, current)
        # memory.peak appeared in Linux 5.19; before that, the max of our samples.
        peak = fs.read_int(os.path.join(d, "memory.peak"), None)
        if "pids" in self._controllers:
            pids_current = fs.read_int(os.path.join(d, "pids.current"))
        else:
            pids_current = len(self.procs())
        return CgroupStats(
            memory_current=current,
            memory_peak=peak if peak is not None else self._peak_seen,
            cpu_usec=self.cpu_usec(),
            oom_kills=fs.read_keyed(os.path.join(d, "memory.events")).get("oom_kill", 0),
            pids_current=pids_current,
            pids_limit_hits=fs.read_keyed(os.path.join(d, "pids.events")).get("max", 0),
        )

    def pids_limit_hits(self) -> int:
        self._require()
        return fs.read_keyed(os.path.join(self._dir, "pids.events")).get("max", 0)

    def _kill_round(self, first: bool) -> None:
        d = self._dir
        kill_file = os.path.join(d, "cgroup.kill")
        if os.path.exists(kill_file):  # Linux >= 5.14: atomic, forks cannot escape
            fs.write(kill_file, "1")
            return
        freeze = os.path.join(d, "cgroup.freeze")
        frozen = os.path.exists(freeze)
        if frozen:  # v2 frozen tasks still die on SIGKILL
            fs.write(freeze, "1")
        try:
            self._sigkill(self.procs())
        finally:
            if frozen:
                fs.write(freeze, "0")


def v2_has_kill(own_dir: str) -> bool:
    """cgroup.kill exists in every non-root cgroup of Linux >= 5.14."""
    if os.path.exists(os.path.join(own_dir, "cgroup.kill")):
        return True
    if os.path.exists(os.path.join(own_dir, "cgroup.type")):
        return False  # a non-root cgroup without cgroup.kill: too old
    release = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return bool(release) and tuple(map(int, release.groups())) >= (5, 14)


class V2Manager(FsManager):
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
            available = fs.read(os.path.join(own_dir, "cgroup.controllers")).split()
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

    def _new_cgroup(self, name: str) -> FsCgroup:
        dirs = {"unified": os.path.join(self._base["unified"], name)}
        return V2Cgroup(name, dirs, self._controllers, on_remove=self._forget)

    def _prepare(self) -> None:
        own, base = self._own["unified"], self._base["unified"]
        self._stale += sweep_stale(own, self._tree)
        wanted = " ".join("+" + c for c in self._controllers)
        enabled = set(fs.read(os.path.join(own, "cgroup.subtree_control")).split())
        if wanted and not set(self._controllers) <= enabled:
            if not self._is_root:
                self._evacuate(own)
            fs.write(os.path.join(own, "cgroup.subtree_control"), wanted)
        os.makedirs(base, exist_ok=True)
        if wanted:
            fs.write(os.path.join(base, "cgroup.subtree_control"), wanted)
        self._prepared = True

    def _evacuate(self, own: str) -> None:
        """Move our own processes into a leaf so that `own` may enable controllers for
        its children (the v2 "no internal processes" rule). Our cgroup is delegated to
        us, so every process in it is ours."""
        procs = os.path.join(own, "cgroup.procs")
        pids = fs.read_pids(procs)
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
                    fs.write(target, str(pid))
                except ProcessLookupError:
                    continue
            pids = fs.read_pids(procs)
        self._moved = True

    def cleanup(self) -> None:
        super().cleanup()
        # Our processes stay in the supervisor leaf; remove it only if it is empty.
        with contextlib.suppress(OSError):
            os.rmdir(self._supervisor)

    def _limits_available(self) -> dict[str, bool]:
        return {c: c in self._controllers for c in _V2_CONTROLLERS}

    def _kill_method(self) -> str:
        if v2_has_kill(self._own["unified"]):
            return "cgroup.kill"
        return "cgroup.freeze+sigkill"

    def describe(self) -> dict:
        d = super().describe()
        d["controllers"] = list(self._controllers)
        if self._moved:
            d["paths"]["supervisor"] = self._supervisor
        return d
