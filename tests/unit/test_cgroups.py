"""sandbox.cgroups without real cgroups: parsing, detection, and the drivers run
against a fake cgroupfs in a temporary directory (the files the kernel would provide
are created by the tests)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox import cgroups
from sandbox.cgroups import (
    CgroupError,
    CgroupLimits,
    Layout,
    parse_mountinfo,
    parse_proc_cgroup,
    probe,
)

pytestmark = pytest.mark.cgroups

MiB = 1024 * 1024
LIMITS = CgroupLimits(memory_bytes=64 * MiB, pids=16, cpu_quota=0.5)

# ------------------------------------------------------------------ sample host texts

PURE_V2_MOUNTINFO = """\
22 28 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
23 28 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
26 23 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 \
rw,nsdelegate,memory_recursiveprot
28 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
"""
PURE_V2_CGROUP = "0::/system.slice/sandbox.service\n"

# This machine (hybrid: v1 controllers, cgroup2 without controllers at unified/).
HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_CGROUP = """\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/e53998f130bad3b7593c235258154cd9
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
"""

# A v1-only host (systemd, older distribution) with cpu and cpuacct co-mounted.
V1_MOUNTINFO = """\
25 24 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup \
rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup \
rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup \
rw,memory
31 25 0:28 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,pids
32 25 0:29 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup \
rw,freezer
"""
V1_CGROUP = """\
11:freezer:/
10:pids:/system.slice/sandbox.service
6:memory:/system.slice/sandbox.service
4:cpu,cpuacct:/system.slice/sandbox.service
1:name=systemd:/system.slice/sandbox.service
"""

# A Docker container without a cgroup namespace on a v1 host: the mounts show the
# container's own cgroup as their root.
CONTAINER_MOUNTINFO = """\
1250 1249 0:75 /docker/0123abcd /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime master:14 \
- cgroup cgroup rw,memory
1251 1249 0:76 /docker/0123abcd /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime master:15 \
- cgroup cgroup rw,pids
1252 1249 0:77 /docker/0123abcd /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime \
master:13 - cgroup cgroup rw,cpu,cpuacct
"""
CONTAINER_CGROUP = """\
10:pids:/docker/0123abcd
6:memory:/docker/0123abcd/inner
4:cpu,cpuacct:/elsewhere
"""


# ------------------------------------------------------------------ parsing


def test_parse_mountinfo_pure_v2() -> None:
    mounts = parse_mountinfo(PURE_V2_MOUNTINFO)
    assert len(mounts) == 1
    m = mounts[0]
    assert (m.root, m.mountpoint, m.fstype) == ("/", "/sys/fs/cgroup", "cgroup2")
    assert m.controllers == frozenset()
    assert "nsdelegate" in m.super_options


def test_parse_mountinfo_hybrid() -> None:
    mounts = {m.mountpoint: m for m in parse_mountinfo(HYBRID_MOUNTINFO)}
    assert "/sys/fs/cgroup" not in mounts  # the tmpfs is not a cgroup mount
    assert mounts["/sys/fs/cgroup/cpu"].controllers == {"cpu"}
    assert mounts["/sys/fs/cgroup/cpuacct"].controllers == {"cpuacct"}
    assert mounts["/sys/fs/cgroup/systemd"].controllers == {"name=systemd"}
    assert mounts["/sys/fs/cgroup/unified"].fstype == "cgroup2"


def test_parse_mountinfo_comount_and_options() -> None:
    mounts = {m.mountpoint: m for m in parse_mountinfo(V1_MOUNTINFO)}
    assert mounts["/sys/fs/cgroup/cpu,cpuacct"].controllers == {"cpu", "cpuacct"}
    # xattr and release_agent=... are options, not controllers
    assert mounts["/sys/fs/cgroup/systemd"].controllers == {"name=systemd"}


def test_parse_mountinfo_escapes_and_root() -> None:
    text = r"50 1 0:40 /a\040b /mnt/my\040cg rw - cgroup2 none rw" + "\n"
    (m,) = parse_mountinfo(text)
    assert m.root == "/a b"
    assert m.mountpoint == "/mnt/my cg"


def test_parse_proc_cgroup() -> None:
    own = parse_proc_cgroup(HYBRID_CGROUP)
    assert own["memory"] == "/process_api/e53998f130bad3b7593c235258154cd9"
    assert own["cpu"] == own["cpuacct"] == own["pids"] == "/"
    assert own[""] == "/"
    assert own["name=systemd"] == "/"
    own = parse_proc_cgroup(V1_CGROUP)
    assert own["cpu"] == own["cpuacct"] == "/system.slice/sandbox.service"
    assert "" not in own
    assert parse_proc_cgroup(PURE_V2_CGROUP) == {"": "/system.slice/sandbox.service"}


def test_probe_hybrid_paths() -> None:
    host = probe(HYBRID_MOUNTINFO, HYBRID_CGROUP, "/")
    assert host.v2 is not None and host.v2.own_dir == "/sys/fs/cgroup/unified"
    assert (
        host.v1["memory"].own_dir
        == "/sys/fs/cgroup/memory/process_api/e53998f130bad3b7593c235258154cd9"
    )
    assert host.v1["cpu"].own_dir == "/sys/fs/cgroup/cpu"
    assert host.v1["cpuacct"].own_dir == "/sys/fs/cgroup/cpuacct"
    assert host.v1["pids"].own_dir == "/sys/fs/cgroup/pids"
    assert host.problems == []


def test_probe_v1_comount() -> None:
    host = probe(V1_MOUNTINFO, V1_CGROUP, "/")
    assert host.v2 is None
    assert host.v1["cpu"] is host.v1["cpuacct"]
    assert host.v1["cpu"].own_dir == "/sys/fs/cgroup/cpu,cpuacct/system.slice/sandbox.service"
    assert host.v1["freezer"].own_dir == "/sys/fs/cgroup/freezer"


def test_probe_pure_v2_with_fs_root() -> None:
    host = probe(PURE_V2_MOUNTINFO, PURE_V2_CGROUP, "/tmp/fake")
    assert host.v2 is not None
    assert host.v2.mountpoint == "/tmp/fake/sys/fs/cgroup"
    assert host.v2.own_dir == "/tmp/fake/sys/fs/cgroup/system.slice/sandbox.service"
    assert host.v1 == {}


def test_probe_container_mount_root() -> None:
    host = probe(CONTAINER_MOUNTINFO, CONTAINER_CGROUP, "/")
    # own cgroup == mount root: the mount point itself
    assert host.v1["pids"].own_dir == "/sys/fs/cgroup/pids"
    # below the mount root: mount point + the relative part
    assert host.v1["memory"].own_dir == "/sys/fs/cgroup/memory/inner"
    # outside the mount root: not reachable, and said so
    assert host.v1["cpu"].own_dir is None
    assert any("/elsewhere" in p for p in host.problems)


def test_own_dir_does_not_match_prefix_of_a_name() -> None:
    assert cgroups._own_dir("/m", "/docker/ab", "/docker/abc") is None
    assert cgroups._own_dir("/m", "/docker/ab", "/docker/ab/c") == "/m/c"
    assert cgroups._own_dir("/m", "/", "/") == "/m"


# ------------------------------------------------------------------ fake cgroupfs


def make_fs(tmp_path: Path, mountinfo: str, proc_cgroup: str) -> None:
    """Create the own-cgroup directories that mountinfo + proc_cgroup describe."""
    host = probe(mountinfo, proc_cgroup, str(tmp_path))
    for h in [host.v2, *host.v1.values()]:
        if h is not None and h.own_dir is not None:
            os.makedirs(h.own_dir, exist_ok=True)


def v2_fs(
    tmp_path: Path,
    controllers: str = "cpuset cpu io memory pids",
    subtree: str = "",
    procs: str = "100\n200\n",
    root: bool = False,
) -> Path:
    make_fs(tmp_path, PURE_V2_MOUNTINFO, PURE_V2_CGROUP)
    own = tmp_path / "sys/fs/cgroup/system.slice/sandbox.service"
    (own / "cgroup.controllers").write_text(controllers + "\n")
    (own / "cgroup.subtree_control").write_text(subtree + "\n")
    (own / "cgroup.procs").write_text(procs)
    if not root:
        (own / "cgroup.type").write_text("domain\n")
    return own


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record every value the drivers write (and still write it)."""
    log: list[tuple[str, str]] = []
    real = cgroups._write

    def record(path: str, value: str) -> None:
        log.append((path, value))
        real(path, value)

    monkeypatch.setattr(cgroups, "_write", record)
    return log


def detect_fake(tmp_path: Path, mountinfo: str, proc_cgroup: str, **kw):
    return cgroups.detect(
        mountinfo=mountinfo,
        proc_cgroup=proc_cgroup,
        fs_root=str(tmp_path),
        tree="sandbox-4242",
        **kw,
    )


def test_v2_create_writes_limits_and_moves_our_processes(tmp_path, writes) -> None:
    own = v2_fs(tmp_path)
    m = detect_fake(tmp_path, PURE_V2_MOUNTINFO, PURE_V2_CGROUP, environ={})
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
    m = detect_fake(tmp_path, PURE_V2_MOUNTINFO, PURE_V2_CGROUP, environ={})
    m.create("k1", CgroupLimits())
    writes.clear()
    m.create("k2", CgroupLimits(pids=3))
    k2 = own / "sandbox-4242/k2"
    assert writes == [(str(k2 / "memory.swap.max"), "0"), (str(k2 / "pids.max"), "3")]


def test_v2_root_cgroup_needs_no_supervisor(tmp_path, writes) -> None:
    own = v2_fs(tmp_path, root=True)
    m = detect_fake(tmp_path, PURE_V2_MOUNTINFO, PURE_V2_CGROUP, environ={})
    m.create("k1", CgroupLimits(memory_bytes=MiB))
    assert not (own / "sandbox-4242-supervisor").exists()
    assert writes[0] == (str(own / "cgroup.subtree_control"), "+memory +pids +cpu")


def test_v2_controllers_already_enabled(tmp_path, writes) -> None:
    own = v2_fs(tmp_path, subtree="cpu memory pids")
    m = detect_fake(tmp_path, PURE_V2_MOUNTINFO, PURE_V2_CGROUP, environ={})
    m.create("k1", CgroupLimits())
    assert not (own / "sandbox-4242-supervisor").exists()
    assert [p for p, _ in writes if p.startswith(str(own / "cgroup."))] == []


def test_v2_missing_cpu_controller(tmp_path, writes) -> None:
    own = v2_fs(tmp_path, controllers="memory pids io")
    m = detect_fake(tmp_path, PURE_V2_MOUNTINFO, PURE_V2_CGROUP, environ={})
    assert m.layout is Layout.V2
    m.create("k1", LIMITS)
    assert (str(own / "cgroup.subtree_control"), "+memory +pids") in writes
    assert not (own / "sandbox-4242/k1/cpu.max").exists()
    d = m.describe()
    assert d["limits"] == {"memory": True, "pids": True, "cpu": False}
    assert any("cpu" in p for p in d["problems"])


def test_v2_without_memory_is_not_v2(tmp_path) -> None:
    v2_fs(tmp_path, controllers="cpu pids")
    m = detect_fake(tmp_path, PURE_V2_MOUNTINFO, PURE_V2_CGROUP, environ={})
    assert m.layout is Layout.NONE
    assert any("memory" in p for p in m.describe()["problems"])
    with pytest.raises(CgroupError):
        detect_fake(tmp_path, PURE_V2_MOUNTINFO, PURE_V2_CGROUP, force=Layout.V2)


def test_v2_join_stats_and_kill(tmp_path, writes, monkeypatch) -> None:
    v2_fs(tmp_path)
    m = detect_fake(tmp_path, PURE_V2_MOUNTINFO, PURE_V2_CGROUP, environ={})
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
    monkeypatch.setattr(cgroups, "KILL_TIMEOUT", 0.05)
    with pytest.raises(CgroupError, match="survive"):
        cg.kill()
    assert writes[0] == (str(k / "cgroup.kill"), "1")


def test_v2_kill_fallback_freezes(tmp_path, writes, monkeypatch) -> None:
    v2_fs(tmp_path)
    m = detect_fake(tmp_path, PURE_V2_MOUNTINFO, PURE_V2_CGROUP, environ={})
    cg = m.create("k1", CgroupLimits())
    k = Path(cg.paths()[0])
    (k / "cgroup.procs").write_text("999999\n")
    (k / "cgroup.freeze").write_text("0\n")
    monkeypatch.setattr(cgroups, "KILL_TIMEOUT", 0.02)
    writes.clear()
    with pytest.raises(CgroupError):
        cg.kill()
    assert writes[:2] == [(str(k / "cgroup.freeze"), "1"), (str(k / "cgroup.freeze"), "0")]


def test_stale_cgroup_is_replaced_and_remove_is_idempotent(tmp_path) -> None:
    own = v2_fs(tmp_path)
    stale = own / "sandbox-4242/k1/nested"
    stale.mkdir(parents=True)  # empty dirs, as a dead kernel's cgroups would be
    m = detect_fake(tmp_path, PURE_V2_MOUNTINFO, PURE_V2_CGROUP, environ={})
    cg = m.create("k1", CgroupLimits())
    assert not stale.exists()
    for p in cg.paths():  # what the kernel leaves after rmdir: nothing
        for f in Path(p).iterdir():
            f.unlink()
    cg.remove()
    assert not any(os.path.exists(p) for p in cg.paths())
    cg.remove()


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
    dead = _unused_pid()
    live = cgroups.tree_name(1)  # another manager, alive: pid 1 and its real start
    trees = {
        "live": own / live,
        "live supervisor": own / f"{live}-supervisor",
        "reused pid": own / f"sandbox-1-{cgroups._start_ticks(1) + 1}/k0",
        "reused pid supervisor": own / f"sandbox-1-{cgroups._start_ticks(1) + 1}-supervisor",
        "dead": own / f"sandbox-{dead}-77/k3",
        "old name, live pid": own / "sandbox-1",
        "old name, dead pid": own / f"sandbox-{dead}/k1",
        "dead supervisor, in use": own / f"sandbox-{dead}-78-supervisor",
        "not ours": own / "user.slice",
    }
    for d in trees.values():
        d.mkdir(parents=True)
    (trees["dead supervisor, in use"] / "cgroup.procs").write_text(f"{os.getpid()}\n")
    manager = detect_fake(tmp_path, *mounts, environ={})
    assert manager.layout.value == layout
    manager.create("k0", CgroupLimits())
    assert {what for what, d in trees.items() if d.exists()} == {
        "live",
        "live supervisor",
        "old name, live pid",
        "dead supervisor, in use",
        "not ours",
    }
    assert (own / "sandbox-4242/k0").is_dir()


def test_v2_in_an_earlier_managers_supervisor_leaf_works_in_its_parent(tmp_path) -> None:
    """Our processes may sit in the supervisor leaf of a manager that has died (a
    server restarted by hand in the same shell). Our tree goes in the leaf's parent,
    the cgroup delegated to us, where the dead manager's tree is swept."""
    own = v2_fs(tmp_path, subtree="cpu memory pids", procs="")
    dead = _unused_pid()
    in_leaf = f"0::/system.slice/sandbox.service/sandbox-{dead}-5-supervisor\n"
    make_fs(tmp_path, PURE_V2_MOUNTINFO, in_leaf)
    (own / f"sandbox-{dead}-5-supervisor/cgroup.procs").write_text(f"{os.getpid()}\n")
    (own / f"sandbox-{dead}-5/k0").mkdir(parents=True)
    m = detect_fake(tmp_path, PURE_V2_MOUNTINFO, in_leaf, environ={})
    m.create("k1", CgroupLimits())
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
    m = detect_fake(tmp_path, PURE_V2_MOUNTINFO, in_leaf, environ={})
    m.create("k1", CgroupLimits())
    assert (leaf / "sandbox-4242/k1").is_dir()


def test_tree_name_is_pid_and_start() -> None:
    with open("/proc/self/stat") as f:
        start = f.read().rsplit(")", 1)[1].split()[19]
    assert cgroups.tree_name(os.getpid()) == f"sandbox-{os.getpid()}-{start}"


def _unused_pid() -> int:
    with open("/proc/sys/kernel/pid_max") as f:
        pid = int(f.read()) - 1
    while os.path.exists(f"/proc/{pid}"):
        pid -= 1
    return pid


@pytest.mark.parametrize("name", ["", "a" * 65, "../x", "a/b", "a.b", "a b", None])
def test_bad_names(tmp_path, name) -> None:
    v2_fs(tmp_path)
    m = detect_fake(tmp_path, PURE_V2_MOUNTINFO, PURE_V2_CGROUP, environ={})
    with pytest.raises(CgroupError):
        m.create(name, CgroupLimits())
    with pytest.raises(CgroupError):
        cgroups.NoneManager().create(name, CgroupLimits())


def test_limits_validation() -> None:
    with pytest.raises(ValueError):
        CgroupLimits(memory_bytes=0)
    with pytest.raises(ValueError):
        CgroupLimits(pids=True)
    with pytest.raises(ValueError):
        CgroupLimits(cpu_quota=-1)
    assert cgroups._cpu_quota_us(0.5) == 50000
    assert cgroups._cpu_quota_us(2) == 200000
    assert cgroups._cpu_quota_us(0.0001) == 1000  # the kernel's minimum


# ------------------------------------------------------------------ hybrid and v1 fakes


def test_hybrid_detect_create_join_stats(tmp_path, writes) -> None:
    make_fs(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP)
    (tmp_path / "sys/fs/cgroup/unified/cgroup.controllers").write_text("hugetlb\n")
    m = detect_fake(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP, environ={})
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
    assert cg.stats() == cgroups.CgroupStats(4096, 8192, 777, 3, 2, 4)

    d = m.describe()
    assert d["layout"] == "hybrid"
    assert d["limits"] == {"memory": True, "pids": True, "cpu": True}
    assert set(d["paths"]) == {"memory", "pids", "cpu", "unified"}


def test_v1_comount_detect_create_stats(tmp_path, writes) -> None:
    make_fs(tmp_path, V1_MOUNTINFO, V1_CGROUP)
    m = detect_fake(tmp_path, V1_MOUNTINFO, V1_CGROUP, environ={})
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
    assert m.describe()["kill"] == "freezer+sigkill"


def test_v1_kill_freezes_kills_thaws(tmp_path, writes, monkeypatch) -> None:
    make_fs(tmp_path, V1_MOUNTINFO, V1_CGROUP)
    m = detect_fake(tmp_path, V1_MOUNTINFO, V1_CGROUP, environ={})
    cg = m.create("k1", CgroupLimits())
    frz = tmp_path / "sys/fs/cgroup/freezer/sandbox-4242/k1"
    (frz / "cgroup.procs").write_text("999999\n")
    monkeypatch.setattr(cgroups, "KILL_TIMEOUT", 0.02)
    writes.clear()
    with pytest.raises(CgroupError):
        cg.kill()
    state = str(frz / "freezer.state")
    assert writes[:2] == [(state, "FROZEN"), (state, "THAWED")]


def test_force_and_environment(tmp_path) -> None:
    make_fs(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP)
    (tmp_path / "sys/fs/cgroup/unified/cgroup.controllers").write_text("\n")
    env = {cgroups.ENV_LAYOUT: "v1"}
    assert detect_fake(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP, environ=env).layout is Layout.V1
    env = {cgroups.ENV_LAYOUT: "none"}
    assert detect_fake(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP, environ=env).layout is Layout.NONE
    # an explicit force wins over the environment
    m = detect_fake(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP, force="hybrid", environ=env)
    assert m.layout is Layout.HYBRID
    with pytest.raises(CgroupError, match="unknown"):
        detect_fake(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP, environ={cgroups.ENV_LAYOUT: "v3"})
    with pytest.raises(CgroupError, match="v2"):
        detect_fake(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP, force=Layout.V2, environ={})
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
    m = detect_fake(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP, environ={})
    assert m.layout is Layout.NONE
    problems = m.describe()["problems"]
    assert any("writable" in p for p in problems)
    with pytest.raises(CgroupError):
        detect_fake(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP, force="hybrid")


def test_missing_mounts_fall_back_to_none(tmp_path) -> None:
    m = detect_fake(tmp_path, "", "", environ={})
    assert m.layout is Layout.NONE
    assert m.describe()["limits"] == {"memory": False, "pids": False, "cpu": False}


def test_hybrid_without_pids_and_cpu_still_works(tmp_path) -> None:
    mountinfo = "\n".join(
        line for line in HYBRID_MOUNTINFO.splitlines() if "rw,cpu\n" not in line + "\n"
    )
    mountinfo = "\n".join(line for line in mountinfo.splitlines() if "rw,pids" not in line)
    make_fs(tmp_path, mountinfo, HYBRID_CGROUP)
    m = detect_fake(tmp_path, mountinfo, HYBRID_CGROUP, environ={})
    assert m.layout is Layout.HYBRID
    d = m.describe()
    assert d["limits"] == {"memory": True, "pids": False, "cpu": False}
    assert len(d["problems"]) == 2
    cg = m.create("k1", LIMITS)  # the unavailable limits are skipped
    assert len(cg.paths()) == 2


# ------------------------------------------------------------------ none


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
