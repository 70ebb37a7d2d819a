"""The names of the managers' cgroup trees, and the sweep that removes the trees of
managers that died without cleaning up (a spawner killed by SIGKILL, a crashed host).
"""

from __future__ import annotations

import logging
import os
import re

from . import fs
from .interface import CgroupError

log = logging.getLogger(__name__)


def tree_name(pid: int) -> str:
    """The name of the cgroup tree that a manager running as `pid` makes:
    sandbox-<pid>-<start>, where <start> is when that process started (clock ticks
    after boot). The start tells the process that made a tree from a later one given
    the same pid, so pid reuse cannot make a dead manager's tree look alive."""
    return f"sandbox-{pid}-{start_ticks(pid)}"


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat.rsplit(b")", 1)[1].split()[19])


# A manager's tree, sandbox-<pid>-<start> (sandbox-<pid> before the start was kept),
# and the leaf a v2 manager moves its cgroup's processes into: <tree>-supervisor.
TREE_RE = re.compile(r"^(sandbox-(\d+)(?:-(\d+))?)(-supervisor)?$")


def sweep_stale(own_dir: str, own_tree: str) -> list[str]:
    """Remove the empty trees in `own_dir` whose manager is gone: what a spawner
    killed by SIGKILL (or a crashed host) left. Trees that still hold processes are
    left alone, logged and returned, for `retry_stale` to try again: a dead manager's
    kernels die with it (PDEATHSIG) but may still be exiting when the next one starts."""
    try:
        entries = [e for e in os.scandir(own_dir) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    busy = []
    for entry in entries:
        m = TREE_RE.match(entry.name)
        if not m or m.group(1) == own_tree or _manager_alive(m):
            continue
        if m.group(4) and fs.read_pids(os.path.join(entry.path, "cgroup.procs")):
            continue  # a dead manager's supervisor leaf still holds what it moved there
        try:
            fs.rmdir_tree(entry.path, timeout=0.1)
            log.info("removed the stale cgroup tree %s", entry.path)
        except CgroupError as e:
            log.warning("stale cgroup tree %s is still in use (will retry): %s", entry.path, e)
            busy.append(entry.path)
    return busy


def retry_stale(trees: list[str]) -> list[str]:
    """One more try at removing the stale `trees` that `sweep_stale` found busy, without
    waiting; those still busy are returned."""
    busy = []
    for path in trees:
        try:
            fs.rmdir_tree(path, timeout=0)
            log.info("removed the stale cgroup tree %s", path)
        except CgroupError:
            busy.append(path)
    return busy


def _manager_alive(tree: re.Match[str]) -> bool:
    """Whether the process that made the tree `TREE_RE` matched still runs."""
    started = start_ticks(int(tree.group(2)))
    if tree.group(3) is None:  # no start kept: all we can tell is whether the pid is used
        return started is not None
    return started == int(tree.group(3))
