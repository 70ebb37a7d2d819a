"""Sample cgroup mounts of the hosts the sandbox meets, and a fake cgroupfs built
from them in a temporary directory (the files the kernel would provide are created
by the tests), for the unit tests of sandbox.cgroups."""

from __future__ import annotations

import os
from pathlib import Path

from sandbox import cgroups
from sandbox.cgroups.probe import probe

MiB = 1024 * 1024
LIMITS = cgroups.CgroupLimits(memory_bytes=64 * MiB, pids=16, cpu_quota=0.5)

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


def detect_fake(tmp_path: Path, mountinfo: str, proc_cgroup: str, **kw):
    return cgroups.detect(
        mountinfo=mountinfo,
        proc_cgroup=proc_cgroup,
        fs_root=str(tmp_path),
        tree="sandbox-4242",
        **kw,
    )


def unused_pid() -> int:
    with open("/proc/sys/kernel/pid_max") as f:
        pid = int(f.read()) - 1
    while os.path.exists(f"/proc/{pid}"):
        pid -= 1
    return pid
