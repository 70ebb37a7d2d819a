"""syscalls.fork_sibling(into_cgroup=...): clone3's CLONE_INTO_CGROUP starts the
child in a cgroup v2 directory, with no migration after it. Checked on whatever
cgroup2 mount this host has (the hybrid layout's empty /sys/fs/cgroup/unified
will do: no controller is needed to hold processes)."""

from __future__ import annotations

import errno
import os

import pytest

from sandbox import syscalls


def _cgroup2_mount() -> str | None:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[fields.index("-") + 1] == "cgroup2":
                return fields[4]
    return None


MOUNT = _cgroup2_mount()
pytestmark = [
    pytest.mark.cgroups,
    pytest.mark.skipif(MOUNT is None or os.geteuid() != 0, reason="no cgroup2 mount, or not root"),
]


@pytest.fixture
def cgroup_dir():
    path = os.path.join(MOUNT, f"sandbox-test-clone3-{os.getpid()}")
    os.mkdir(path)
    yield path
    os.rmdir(path)


def test_the_child_starts_in_the_cgroup(cgroup_dir) -> None:
    relative = "/" + os.path.relpath(cgroup_dir, MOUNT)
    fd = os.open(cgroup_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    r, w = os.pipe()
    try:
        if syscalls.fork_sibling(into_cgroup=fd, sibling=False):
            with open("/proc/self/cgroup") as f:
                own = next(line for line in f if line.startswith("0::"))
            os.write(w, f"{os.getpid()} {own}".encode())
            os._exit(0)
    finally:
        os.close(fd)
        os.close(w)
    pid, seen = os.read(r, 4096).decode().split(" ", 1)
    os.close(r)
    os.waitpid(int(pid), 0)  # not -1: other tests' children may be about
    assert seen == f"0::{relative}\n"
    with open(os.path.join(cgroup_dir, "cgroup.procs")) as f:
        assert f.read() == ""  # it has exited: the directory can go


def test_a_directory_that_is_not_a_v2_cgroup_is_refused() -> None:
    fd = os.open("/tmp", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with pytest.raises(OSError) as raised:
            if syscalls.fork_sibling(into_cgroup=fd, sibling=False):
                os._exit(0)  # pragma: no cover - the kernel refuses before a child exists
    finally:
        os.close(fd)
    assert raised.value.errno == errno.EBADF
