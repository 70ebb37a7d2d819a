"""sandbox.cgroups.probe: mountinfo and /proc/self/cgroup texts of real hosts read
into where our own cgroups are."""

from __future__ import annotations

import pytest
from helpers.fake_cgroupfs import (
    CONTAINER_CGROUP,
    CONTAINER_MOUNTINFO,
    HYBRID_CGROUP,
    HYBRID_MOUNTINFO,
    PURE_V2_CGROUP,
    PURE_V2_MOUNTINFO,
    V1_CGROUP,
    V1_MOUNTINFO,
)

from sandbox.cgroups.probe import _own_dir, parse_mountinfo, parse_proc_cgroup, probe

pytestmark = pytest.mark.cgroups


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
    assert _own_dir("/m", "/docker/ab", "/docker/abc") is None
    assert _own_dir("/m", "/docker/ab", "/docker/ab/c") == "/m/c"
    assert _own_dir("/m", "/", "/") == "/m"
