"""sandbox.cgroups.detect: which layout a host gets, forced or not, and the none
layout it falls back to."""

from __future__ import annotations

import os

import pytest
from helpers.fake_cgroupfs import (
    HYBRID_CGROUP,
    HYBRID_MOUNTINFO,
    LIMITS,
    PURE_V2_CGROUP,
    PURE_V2_MOUNTINFO,
    V1_CGROUP,
    V1_MOUNTINFO,
    detect_fake,
    make_fs,
    unused_pid,
    v2_fs,
)

from sandbox import cgroups, environment
from sandbox.cgroups import CgroupError, CgroupLimits, Layout

pytestmark = pytest.mark.cgroups


def test_v2_without_memory_is_not_v2(tmp_path) -> None:
    v2_fs(tmp_path, controllers="cpu pids")
    m = detect_fake(tmp_path, PURE_V2_MOUNTINFO, PURE_V2_CGROUP)
    assert m.layout is Layout.NONE
    assert any("memory" in p for p in m.describe()["problems"])
    with pytest.raises(CgroupError):
        detect_fake(tmp_path, PURE_V2_MOUNTINFO, PURE_V2_CGROUP, force=Layout.V2)


def test_v2_in_an_earlier_managers_supervisor_leaf_works_in_its_parent(tmp_path) -> None:
    """Our processes may sit in the supervisor leaf of a manager that has died (a
    server restarted by hand in the same shell). Our tree goes in the leaf's parent,
    the cgroup delegated to us, where the dead manager's tree is swept."""
    own = v2_fs(tmp_path, subtree="cpu memory pids", procs="")
    dead = unused_pid()
    in_leaf = f"0::/system.slice/sandbox.service/sandbox-{dead}-5-supervisor\n"
    make_fs(tmp_path, PURE_V2_MOUNTINFO, in_leaf)
    (own / f"sandbox-{dead}-5-supervisor/cgroup.procs").write_text(f"{os.getpid()}\n")
    (own / f"sandbox-{dead}-5/k0").mkdir(parents=True)
    m = detect_fake(tmp_path, PURE_V2_MOUNTINFO, in_leaf)
    m.create("k1", CgroupLimits.unlimited())
    assert m.describe()["paths"]["unified"] == str(own / "sandbox-4242")
    assert (own / "sandbox-4242/k1").is_dir()
    assert not (own / f"sandbox-{dead}-5").exists()
    assert (own / f"sandbox-{dead}-5-supervisor").is_dir()  # it holds us


def test_v2_in_a_supervisor_leaf_whose_parent_is_not_ours_stays_in_the_leaf(
    tmp_path, monkeypatch
) -> None:
    """If the leaf's parent is not writable, the leaf is all we were given."""
    service = v2_fs(tmp_path, subtree="cpu memory pids", procs="")
    in_leaf = "0::/system.slice/sandbox.service/sandbox-7-5-supervisor\n"
    make_fs(tmp_path, PURE_V2_MOUNTINFO, in_leaf)
    leaf = service / "sandbox-7-5-supervisor"
    (leaf / "cgroup.controllers").write_text("cpu memory pids\n")
    (leaf / "cgroup.subtree_control").write_text("\n")
    (leaf / "cgroup.type").write_text("domain\n")
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode, **kw: str(p) != str(service) and real_access(p, mode)
    )
    m = detect_fake(tmp_path, PURE_V2_MOUNTINFO, in_leaf)
    m.create("k1", CgroupLimits.unlimited())
    assert (leaf / "sandbox-4242/k1").is_dir()


def test_force(tmp_path) -> None:
    make_fs(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP)
    (tmp_path / "sys/fs/cgroup/unified/cgroup.controllers").write_text("\n")
    assert detect_fake(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP, force="v1").layout is Layout.V1
    assert (
        detect_fake(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP, force="none").layout is Layout.NONE
    )
    m = detect_fake(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP, force=" Hybrid")
    assert m.layout is Layout.HYBRID
    with pytest.raises(CgroupError, match="unknown"):
        detect_fake(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP, force="v3")
    with pytest.raises(CgroupError, match="v2"):
        detect_fake(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP, force=Layout.V2)
    # a v1-only host cannot do hybrid
    make_fs(tmp_path / "v1", V1_MOUNTINFO, V1_CGROUP)
    with pytest.raises(CgroupError, match="hybrid"):
        cgroups.detect(
            Layout.HYBRID,
            mountinfo=V1_MOUNTINFO,
            proc_cgroup=V1_CGROUP,
            fs_root=str(tmp_path / "v1"),
        )


def test_unwritable_falls_back_to_none(tmp_path, monkeypatch) -> None:
    make_fs(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP)
    (tmp_path / "sys/fs/cgroup/unified/cgroup.controllers").write_text("\n")
    real_access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda p, mode, **kw: False if str(p).startswith(str(tmp_path)) else real_access(p, mode),
    )
    m = detect_fake(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP)
    assert m.layout is Layout.NONE
    problems = m.describe()["problems"]
    assert any("writable" in p for p in problems)
    with pytest.raises(CgroupError):
        detect_fake(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP, force="hybrid")


def test_missing_mounts_fall_back_to_none(tmp_path) -> None:
    m = detect_fake(tmp_path, "", "")
    assert m.layout is Layout.NONE
    assert m.describe()["limits"] == {"memory": False, "pids": False, "cpu": False}


def test_none_layout_tracks_pids_with_psutil() -> None:
    m = cgroups.detect(Layout.NONE)
    cg = m.create("k1", LIMITS)
    cg.attach(0)
    assert cg.procs() == [] and cg.paths() == []
    assert cg.stats() == cgroups.CgroupStats(0, 0, 0, 0, 0, 0)
    cg.track(lambda: [os.getpid(), 999999])  # a vanished pid is skipped
    s = cg.stats()
    assert s.memory_current > 0 and s.memory_peak >= s.memory_current
    assert s.cpu_usec > 0
    assert s.pids_current == 1
    cg.kill()
    cg.remove()
    m.cleanup()
    assert m.describe()["layout"] == "none"


def test_the_environment_forces_a_layout_through_the_entry_points(monkeypatch) -> None:
    """detect() never reads the environment; the entry points pass what
    $SANDBOX_CGROUP_LAYOUT says, and an empty one is no force."""
    monkeypatch.setenv(environment.CGROUP_LAYOUT, " V1")
    assert environment.layout_from_environment() == "v1"
    monkeypatch.setenv(environment.CGROUP_LAYOUT, "")
    assert environment.layout_from_environment() is None
    monkeypatch.delenv(environment.CGROUP_LAYOUT)
    assert environment.layout_from_environment() is None
