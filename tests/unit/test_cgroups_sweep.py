"""sandbox.cgroups.sweep: the trees of dead managers are removed, live ones stay."""

from __future__ import annotations

import os

import pytest
from helpers.fake_cgroupfs import (
    HYBRID_CGROUP,
    HYBRID_MOUNTINFO,
    PURE_V2_CGROUP,
    PURE_V2_MOUNTINFO,
    detect_fake,
    make_fs,
    unused_pid,
    v2_fs,
)

from sandbox.cgroups import CgroupLimits, fs_driver
from sandbox.cgroups.sweep import start_ticks, tree_name

pytestmark = pytest.mark.cgroups


@pytest.mark.parametrize("layout", ["v2", "hybrid"])
def test_the_sweep_tells_a_dead_managers_tree_from_a_live_one_by_pid_and_start(
    tmp_path, layout
) -> None:
    """A spawner killed by SIGKILL leaves its tree. The next manager removes it, even
    when its pid now belongs to another process (pid reuse): the start in the name
    differs. Trees of live managers stay, and so does a dead manager's supervisor
    leaf while it holds processes."""
    if layout == "v2":
        own, mounts = v2_fs(tmp_path), (PURE_V2_MOUNTINFO, PURE_V2_CGROUP)
    else:
        make_fs(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP)
        own, mounts = tmp_path / "sys/fs/cgroup/unified", (HYBRID_MOUNTINFO, HYBRID_CGROUP)
    dead = unused_pid()
    live = tree_name(1)  # another manager, alive: pid 1 and its real start
    trees = {
        "live": own / live,
        "live supervisor": own / f"{live}-supervisor",
        "reused pid": own / f"sandbox-1-{start_ticks(1) + 1}/k0",
        "reused pid supervisor": own / f"sandbox-1-{start_ticks(1) + 1}-supervisor",
        "dead": own / f"sandbox-{dead}-77/k3",
        "old name, live pid": own / "sandbox-1",
        "old name, dead pid": own / f"sandbox-{dead}/k1",
        "dead supervisor, in use": own / f"sandbox-{dead}-78-supervisor",
        "not ours": own / "user.slice",
    }
    for d in trees.values():
        d.mkdir(parents=True)
    (trees["dead supervisor, in use"] / "cgroup.procs").write_text(f"{os.getpid()}\n")
    manager = detect_fake(tmp_path, *mounts)
    assert manager.layout.value == layout
    manager.create("k0", CgroupLimits.unlimited())
    assert {what for what, d in trees.items() if d.exists()} == {
        "live",
        "live supervisor",
        "old name, live pid",
        "dead supervisor, in use",
        "not ours",
    }
    assert (own / "sandbox-4242/k0").is_dir()


@pytest.mark.parametrize("layout", ["v2", "hybrid"])
def test_a_dead_managers_tree_still_busy_at_the_sweep_goes_on_a_later_create(
    tmp_path, layout, monkeypatch
) -> None:
    """The dead manager's kernels may still be exiting when the next manager sweeps
    (the sweep does not wait for them): its first create leaves the busy tree, and a
    create after the retry interval removes it once it is empty."""
    monkeypatch.setattr(fs_driver, "_STALE_RETRY_INTERVAL", 0.0)
    if layout == "v2":
        own, mounts = v2_fs(tmp_path), (PURE_V2_MOUNTINFO, PURE_V2_CGROUP)
    else:
        make_fs(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP)
        own, mounts = tmp_path / "sys/fs/cgroup/unified", (HYBRID_MOUNTINFO, HYBRID_CGROUP)
    busy = own / f"sandbox-{unused_pid()}-77/k3"
    busy.mkdir(parents=True)
    (busy / "exiting").write_text("")  # a fake cgroupfs: rmdir fails while it is there
    manager = detect_fake(tmp_path, *mounts)
    manager.create("k0", CgroupLimits.unlimited())
    manager.create("k1", CgroupLimits.unlimited())
    assert busy.is_dir()
    (busy / "exiting").unlink()
    manager.create("k2", CgroupLimits.unlimited())
    assert not busy.parent.exists()


def test_tree_name_is_pid_and_start() -> None:
    with open("/proc/self/stat") as f:
        start = f.read().rsplit(")", 1)[1].split()[19]
    assert tree_name(os.getpid()) == f"sandbox-{os.getpid()}-{start}"
