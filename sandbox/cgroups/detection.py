"""Which layout this host can do, decided once at start: `detect` probes the
mounts and builds the matching manager (v2, then hybrid, then v1, else none).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from . import fs
from .interface import CgroupError, CgroupManager, Layout
from .none import NoneManager
from .probe import HostCgroups, probe
from .sweep import TREE_RE
from .v1 import HybridManager, V1Manager
from .v2 import V2Manager

log = logging.getLogger(__name__)


def _writable_dir(path: str | None) -> bool:
    return path is not None and os.path.isdir(path) and os.access(path, os.W_OK)


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
    m = TREE_RE.match(os.path.basename(own))
    if m and m.group(4) and os.access(os.path.dirname(own), os.W_OK):
        # An earlier manager moved our processes into its supervisor leaf. The cgroup
        # delegated to us is that leaf's parent: our tree goes beside the earlier
        # one there, and the sweep finds that one if its manager has died.
        own = os.path.dirname(own)
    try:
        available = fs.read(os.path.join(own, "cgroup.controllers")).split()
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
) -> CgroupManager:
    """Build the manager for this host's cgroup layout.

    `force` picks a layout and raises CgroupError if the host cannot do it; the
    entry points pass what their caller forced (a flag, or
    `sandbox.environment.layout_from_environment`), never read here. Otherwise the
    first of v2, hybrid, v1 that the host supports with writable directories wins,
    and none (with the reasons in its problems) if no layout does. The keyword
    arguments inject the inputs for tests; `tree` names the parents of the kernel
    cgroups (default: `tree_name` of this process)."""
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
