"""The v2, hybrid and v1 drivers against a fake cgroupfs: what they write, how they
join, account, kill and remove."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.fake_cgroupfs import (
    HYBRID_CGROUP,
    HYBRID_MOUNTINFO,
    LIMITS,
    PURE_V2_CGROUP,
    PURE_V2_MOUNTINFO,
    V1_CGROUP,
    V1_MOUNTINFO,
    MiB,
    detect_fake,
    make_fs,
    v2_fs,
)

from sandbox.cgroups import CgroupError, CgroupLimits, CgroupStats, Layout, fs, fs_driver
from sandbox.cgroups.none import NoneManager

pytestmark = pytest.mark.cgroups


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record every value the drivers write (and still write it)."""
    log: list[tuple[str, str]] = []
    real = fs.write

    def record(path: str, value: str) -> None:
        log.append((path, value))
        real(path, value)

    monkeypatch.setattr(fs, "write", record)
    return log


def test_v2_create_writes_limits_and_moves_our_processes(tmp_path, writes) -> None:
    own = v2_fs(tmp_path)
    m = detect_fake(tmp_path, PURE_V2_MOUNTINFO, PURE_V2_CGROUP)
    assert m.layout is Layout.V2
    cg = m.create("k1", LIMITS)
    sup, base, k = own / "sandbox-4242-supervisor", own / "sandbox-4242", own / "sandbox-4242/k1"
    assert writes == [
        (str(sup / "cgroup.procs"), "100"),
        (str(sup / "cgroup.procs"), "200"),
        (str(own / "cgroup.subtree_control"), "+memory +pids +cpu"),
        (str(base / "cgroup.subtree_control"), "+memory +pids +cpu"),
        (str(k / "memory.max"), str(64 * MiB)),
        (str(k / "memory.swap.max"), "0"),
        (str(k / "pids.max"), "16"),
        (str(k / "cpu.max"), "50000 100000"),
    ]
    assert (k / "cpu.max").read_text() == "50000 100000"
    assert cg.paths() == [str(k)]
    d = m.describe()
    assert d["layout"] == "v2"
    assert d["controllers"] == ["memory", "pids", "cpu"]
    assert d["limits"] == {"memory": True, "pids": True, "cpu": True}
    assert d["paths"] == {"unified": str(base), "supervisor": str(sup)}
    assert d["problems"] == []


def test_v2_second_create_prepares_only_once(tmp_path, writes) -> None:
    own = v2_fs(tmp_path)
    m = detect_fake(tmp_path, PURE_V2_MOUNTINFO, PURE_V2_CGROUP)
    m.create("k1", CgroupLimits.unlimited())
    writes.clear()
    m.create("k2", CgroupLimits(memory_bytes=None, pids=3, cpu_quota=None))
    k2 = own / "sandbox-4242/k2"
    assert writes == [(str(k2 / "memory.swap.max"), "0"), (str(k2 / "pids.max"), "3")]


def test_v2_root_cgroup_needs_no_supervisor(tmp_path, writes) -> None:
    own = v2_fs(tmp_path, root=True)
    m = detect_fake(tmp_path, PURE_V2_MOUNTINFO, PURE_V2_CGROUP)
    m.create("k1", CgroupLimits(memory_bytes=MiB, pids=None, cpu_quota=None))
    assert not (own / "sandbox-4242-supervisor").exists()
    assert writes[0] == (str(own / "cgroup.subtree_control"), "+memory +pids +cpu")


def test_v2_controllers_already_enabled(tmp_path, writes) -> None:
    own = v2_fs(tmp_path, subtree="cpu memory pids")
    m = detect_fake(tmp_path, PURE_V2_MOUNTINFO, PURE_V2_CGROUP)
    m.create("k1", CgroupLimits.unlimited())
    assert not (own / "sandbox-4242-supervisor").exists()
    assert [p for p, _ in writes if p.startswith(str(own / "cgroup."))] == []


def test_v2_missing_cpu_controller(tmp_path, writes) -> None:
    own = v2_fs(tmp_path, controllers="memory pids io")
    m = detect_fake(tmp_path, PURE_V2_MOUNTINFO, PURE_V2_CGROUP)
    assert m.layout is Layout.V2
    m.create("k1", LIMITS)
    assert (str(own / "cgroup.subtree_control"), "+memory +pids") in writes
    assert not (own / "sandbox-4242/k1/cpu.max").exists()
    d = m.describe()
    assert d["limits"] == {"memory": True, "pids": True, "cpu": False}
    assert any("cpu" in p for p in d["problems"])


def test_v2_join_stats_and_kill(tmp_path, writes, monkeypatch) -> None:
    v2_fs(tmp_path)
    m = detect_fake(tmp_path, PURE_V2_MOUNTINFO, PURE_V2_CGROUP)
    cg = m.create("k1", LIMITS)
    k = Path(cg.paths()[0])
    # what the kernel provides in a new cgroup
    (k / "cgroup.procs").write_text("")
    (k / "cgroup.kill").write_text("")
    cg.attach(0)
    assert (k / "cgroup.procs").read_text() == "0"

    (k / "memory.current").write_text("1000\n")
    (k / "cpu.stat").write_text("usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n")
    (k / "memory.events").write_text("low 0\nhigh 0\nmax 5\noom 2\noom_kill 2\n")
    (k / "pids.current").write_text("3\n")
    (k / "pids.events").write_text("max 7\n")
    s = cg.stats()
    assert (s.memory_current, s.memory_peak, s.cpu_usec, s.oom_kills) == (1000, 1000, 1234, 2)
    assert (s.pids_current, s.pids_limit_hits) == (3, 7)
    assert cg.pids_limit_hits() == 7
    # no memory.peak (Linux < 5.19): the peak is the max of the samples
    (k / "memory.current").write_text("400\n")
    assert cg.stats().memory_peak == 1000
    (k / "memory.peak").write_text("5000\n")
    assert cg.stats().memory_peak == 5000

    (k / "cgroup.procs").write_text("")
    writes.clear()
    cg.kill()  # empty: nothing to do
    assert writes == []
    (k / "cgroup.procs").write_text("999999\n")  # a pid that never leaves (fake fs)
    monkeypatch.setattr(fs_driver, "KILL_TIMEOUT", 0.05)
    with pytest.raises(CgroupError, match="survive"):
        cg.kill()
    assert writes[0] == (str(k / "cgroup.kill"), "1")


def test_v2_kill_fallback_freezes(tmp_path, writes, monkeypatch) -> None:
    v2_fs(tmp_path)
    m = detect_fake(tmp_path, PURE_V2_MOUNTINFO, PURE_V2_CGROUP)
    cg = m.create("k1", CgroupLimits.unlimited())
    k = Path(cg.paths()[0])
    (k / "cgroup.procs").write_text("999999\n")
    (k / "cgroup.freeze").write_text("0\n")
    monkeypatch.setattr(fs_driver, "KILL_TIMEOUT", 0.02)
    writes.clear()
    with pytest.raises(CgroupError):
        cg.kill()
    assert writes[:2] == [(str(k / "cgroup.freeze"), "1"), (str(k / "cgroup.freeze"), "0")]


def test_stale_cgroup_is_replaced_and_remove_is_idempotent(tmp_path) -> None:
    own = v2_fs(tmp_path)
    stale = own / "sandbox-4242/k1/nested"
    stale.mkdir(parents=True)  # empty dirs, as a dead kernel's cgroups would be
    m = detect_fake(tmp_path, PURE_V2_MOUNTINFO, PURE_V2_CGROUP)
    cg = m.create("k1", CgroupLimits.unlimited())
    assert not stale.exists()
    for p in cg.paths():  # what the kernel leaves after rmdir: nothing
        for f in Path(p).iterdir():
            f.unlink()
    cg.remove()
    assert not any(os.path.exists(p) for p in cg.paths())
    cg.remove()


def test_hybrid_detect_create_join_stats(tmp_path, writes) -> None:
    make_fs(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP)
    (tmp_path / "sys/fs/cgroup/unified/cgroup.controllers").write_text("hugetlb\n")
    m = detect_fake(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP)
    assert m.layout is Layout.HYBRID
    cg = m.create("k1", LIMITS)
    cgfs = tmp_path / "sys/fs/cgroup"
    mem = cgfs / "memory/process_api/e53998f130bad3b7593c235258154cd9/sandbox-4242/k1"
    pids, cpu, uni = (cgfs / c / "sandbox-4242/k1" for c in ("pids", "cpu", "unified"))
    assert (mem / "memory.limit_in_bytes").read_text() == str(64 * MiB)
    # memory.memsw.limit_in_bytes is written only when the kernel provides it
    assert not (mem / "memory.memsw.limit_in_bytes").exists()
    assert (pids / "pids.max").read_text() == "16"
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "50000"
    assert sorted(cg.paths()) == sorted(map(str, [mem, pids, cpu, uni]))
    # no supervisor dance and no subtree_control outside v2
    assert not any("subtree_control" in p for p, _ in writes)

    for d in (mem, pids, cpu, uni):
        (d / "cgroup.procs").write_text("")
    cg.attach(0)
    assert all((d / "cgroup.procs").read_text() == "0" for d in (mem, pids, cpu, uni))
    assert not (cgfs / "cpuacct/sandbox-4242").exists()  # CPU time comes from cgroup2

    (mem / "memory.usage_in_bytes").write_text("4096\n")
    (mem / "memory.max_usage_in_bytes").write_text("8192\n")
    (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    (pids / "pids.current").write_text("2\n")
    (pids / "pids.events").write_text("max 4\n")
    (uni / "cpu.stat").write_text("usage_usec 777\nuser_usec 700\nsystem_usec 77\n")
    assert cg.stats() == CgroupStats(4096, 8192, 777, 3, 2, 4)

    d = m.describe()
    assert d["layout"] == "hybrid"
    assert d["limits"] == {"memory": True, "pids": True, "cpu": True}
    assert set(d["paths"]) == {"memory", "pids", "cpu", "unified"}


def test_v1_comount_detect_create_stats(tmp_path, writes) -> None:
    make_fs(tmp_path, V1_MOUNTINFO, V1_CGROUP)
    m = detect_fake(tmp_path, V1_MOUNTINFO, V1_CGROUP)
    assert m.layout is Layout.V1
    cg = m.create("k1", LIMITS)
    cgfs = tmp_path / "sys/fs/cgroup"
    svc = "system.slice/sandbox.service/sandbox-4242/k1"
    cpu = cgfs / "cpu,cpuacct" / svc
    mem, pids, frz = cgfs / "memory" / svc, cgfs / "pids" / svc, cgfs / "freezer/sandbox-4242/k1"
    # cpu and cpuacct share one directory, made and joined once
    assert sorted(cg.paths()) == sorted(map(str, [mem, pids, cpu, frz]))
    assert (cpu / "cpu.cfs_quota_us").read_text() == "50000"
    (mem / "memory.usage_in_bytes").write_text("10\n")
    (mem / "memory.max_usage_in_bytes").write_text("20\n")
    (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    (cpu / "cpuacct.usage").write_text("5000000\n")  # ns
    s = cg.stats()
    assert (s.memory_current, s.memory_peak, s.cpu_usec, s.oom_kills) == (10, 20, 5000, 1)
    assert s.pids_limit_hits == 0  # no pids.events in this fake
    (pids / "pids.events").write_text("max 4\n")
    assert cg.pids_limit_hits() == 4
    assert m.describe()["kill"] == "freezer+sigkill"


def test_v1_kill_freezes_kills_thaws(tmp_path, writes, monkeypatch) -> None:
    make_fs(tmp_path, V1_MOUNTINFO, V1_CGROUP)
    m = detect_fake(tmp_path, V1_MOUNTINFO, V1_CGROUP)
    cg = m.create("k1", CgroupLimits.unlimited())
    frz = tmp_path / "sys/fs/cgroup/freezer/sandbox-4242/k1"
    (frz / "cgroup.procs").write_text("999999\n")
    monkeypatch.setattr(fs_driver, "KILL_TIMEOUT", 0.02)
    writes.clear()
    with pytest.raises(CgroupError):
        cg.kill()
    state = str(frz / "freezer.state")
    assert writes[:2] == [(state, "FROZEN"), (state, "THAWED")]


def test_hybrid_without_pids_and_cpu_still_works(tmp_path) -> None:
    mountinfo = "\n".join(
        line for line in HYBRID_MOUNTINFO.splitlines() if "rw,cpu\n" not in line + "\n"
    )
    mountinfo = "\n".join(line for line in mountinfo.splitlines() if "rw,pids" not in line)
    make_fs(tmp_path, mountinfo, HYBRID_CGROUP)
    m = detect_fake(tmp_path, mountinfo, HYBRID_CGROUP)
    assert m.layout is Layout.HYBRID
    d = m.describe()
    assert d["limits"] == {"memory": True, "pids": False, "cpu": False}
    assert len(d["problems"]) == 2
    cg = m.create("k1", LIMITS)  # the unavailable limits are skipped
    assert len(cg.paths()) == 2


@pytest.mark.parametrize("name", ["", "a" * 65, "../x", "a/b", "a.b", "a b", None])
def test_bad_names(tmp_path, name) -> None:
    v2_fs(tmp_path)
    m = detect_fake(tmp_path, PURE_V2_MOUNTINFO, PURE_V2_CGROUP)
    with pytest.raises(CgroupError):
        m.create(name, CgroupLimits.unlimited())
    with pytest.raises(CgroupError):
        NoneManager().create(name, CgroupLimits.unlimited())


def test_limits_validation() -> None:
    with pytest.raises(ValueError):
        CgroupLimits(memory_bytes=0, pids=None, cpu_quota=None)
    with pytest.raises(ValueError):
        CgroupLimits(memory_bytes=None, pids=True, cpu_quota=None)
    with pytest.raises(ValueError):
        CgroupLimits(memory_bytes=None, pids=None, cpu_quota=-1)
    with pytest.raises(TypeError):  # no field has a default: the spec gives each
        CgroupLimits(pids=3)  # type: ignore[call-arg]
    assert fs.cpu_quota_us(0.5) == 50000
    assert fs.cpu_quota_us(2) == 200000
    assert fs.cpu_quota_us(0.0001) == 1000  # the kernel's minimum
