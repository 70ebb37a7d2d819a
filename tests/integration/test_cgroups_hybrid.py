"""sandbox.cgroups against this host's real cgroups (hybrid layout: v1 controllers plus
a controller-less cgroup2 tree).

The same tests also run with the v1 driver forced (it works on a hybrid host too: it
uses the v1 freezer and cpuacct instead of the cgroup2 tree), so both drivers are
exercised for real. Every test forks children that join a kernel cgroup; fixtures kill
and remove everything, even when a test fails."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator

import pytest
from helpers.harness import alive

from sandbox import cgroups
from sandbox.cgroups import CgroupLimits, Layout
from sandbox.cgroups.sweep import tree_name

MiB = 1024 * 1024
LIMITS = CgroupLimits(memory_bytes=64 * MiB, pids=16, cpu_quota=0.5)

pytestmark = [
    pytest.mark.cgroups,
    pytest.mark.skipif(os.geteuid() != 0, reason="cgroups need root"),
]


def _our_dirs() -> list[str]:
    """Every directory of our cgroup tree anywhere under /sys/fs/cgroup."""
    tree = tree_name(os.getpid())
    mine = {tree, f"{tree}-supervisor"}
    found = []
    for dirpath, dirnames, _ in os.walk("/sys/fs/cgroup"):
        found += [os.path.join(dirpath, d) for d in dirnames if d in mine]
    return found


@pytest.fixture(scope="module")
def detected() -> Layout:
    layout = cgroups.detect().layout
    if layout is not Layout.HYBRID:
        pytest.skip(f"this host's cgroup layout is {layout.value}, not hybrid")
    return layout


@pytest.fixture(params=["hybrid", "v1"])
def manager(request, detected) -> Iterator[cgroups.CgroupManager]:
    m = cgroups.detect(Layout(request.param))
    try:
        yield m
    finally:
        m.cleanup()
        assert _our_dirs() == []


class Children:
    """Forked children; all are reaped at the end."""

    def __init__(self) -> None:
        self.pids: list[int] = []

    def spawn(self, cg: cgroups.KernelCgroup, body: Callable[[], int | None]) -> int:
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                cg.attach(0)
                code = body() or 0
            except BaseException:  # noqa: BLE001 (never return into pytest)
                pass
            finally:
                os._exit(code)
        self.pids.append(pid)
        return pid

    def wait(self, pid: int, timeout: float = 30.0) -> int:
        """The raw wait status of `pid`."""
        deadline = time.monotonic() + timeout
        while True:
            got, status = os.waitpid(pid, os.WNOHANG)
            if got:
                self.pids.remove(pid)
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"child {pid} still running after {timeout}s")
            time.sleep(0.01)

    def reap_all(self) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self.pids.clear()


@pytest.fixture
def children() -> Iterator[Children]:
    c = Children()
    try:
        yield c
    finally:
        c.reap_all()


def _dir(manager: cgroups.CgroupManager, role: str, cg: cgroups.KernelCgroup) -> str:
    return os.path.join(manager.describe()["paths"][role], cg.name)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_limits_are_written(manager) -> None:
    cg = manager.create("limits", LIMITS)
    mem = _dir(manager, "memory", cg)
    assert int(_read(f"{mem}/memory.limit_in_bytes")) == 64 * MiB
    if os.path.exists(f"{mem}/memory.memsw.limit_in_bytes"):
        assert int(_read(f"{mem}/memory.memsw.limit_in_bytes")) == 64 * MiB
    assert _read(f"{_dir(manager, 'pids', cg)}/pids.max") == "16"
    cpu = _dir(manager, "cpu", cg)
    assert _read(f"{cpu}/cpu.cfs_period_us") == "100000"
    assert _read(f"{cpu}/cpu.cfs_quota_us") == "50000"
    assert all(os.path.isdir(p) for p in cg.paths())
    d = manager.describe()
    assert d["limits"] == {"memory": True, "pids": True, "cpu": True}
    assert d["kill"] == ("cgroup.kill" if manager.layout is Layout.HYBRID else "freezer+sigkill")


def test_join_enters_every_hierarchy(manager, children) -> None:
    cg = manager.create("join", LIMITS)
    r, w = os.pipe()

    def body() -> int:
        os.close(w)
        os.read(r, 1)  # until the parent closes its end
        return 0

    pid = children.spawn(cg, body)
    os.close(r)
    try:
        wanted = {"memory", "pids", "cpu"}
        wanted |= {""} if manager.layout is Layout.HYBRID else {"cpuacct", "freezer"}

        def joined() -> set[str]:
            # join() writes one hierarchy after another: wait for all, not the first
            with open(f"/proc/{pid}/cgroup") as f:
                lines = f.read().splitlines()
            suffix = f"/{tree_name(os.getpid())}/join"
            return {line.split(":")[1] for line in lines if line.endswith(suffix)}

        assert _wait_for(lambda: joined() >= wanted), joined()
        assert pid in cg.procs()
    finally:
        os.close(w)
    assert os.WIFEXITED(children.wait(pid))


def _hog_memory() -> int:
    chunks = []
    for _ in range(200):
        b = bytearray(MiB)
        b[::4096] = b"\x01" * (MiB // 4096)  # touch every page
        chunks.append(b)
    return 0


def test_memory_limit_oom_kills(manager, children) -> None:
    cg = manager.create("oom", LIMITS)
    status = children.wait(children.spawn(cg, _hog_memory))
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    s = cg.stats()
    assert s.oom_kills >= 1
    assert s.memory_peak <= 64 * MiB + MiB
    assert s.memory_peak > 32 * MiB


def _fork_sleepers() -> int:
    ok = 0
    for _ in range(50):
        try:
            pid = os.fork()
        except OSError:
            continue
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        ok += 1
    return ok


def test_pids_limit_stops_forks(manager, children) -> None:
    cg = manager.create("pids", LIMITS)
    status = children.wait(children.spawn(cg, _fork_sleepers))
    assert os.WIFEXITED(status)
    forked = os.WEXITSTATUS(status)
    assert 1 <= forked <= 15  # 16 tasks: the forking child and at most 15 sleepers
    s = cg.stats()
    assert s.pids_current == forked
    assert len(cg.procs()) == forked
    if os.path.exists(f"{_dir(manager, 'pids', cg)}/pids.events"):
        assert s.pids_limit_hits > 0
    assert cg.pids_limit_hits() == s.pids_limit_hits  # the spawner's read at destroy
    cg.kill()
    assert cg.procs() == []


def _busy(seconds: float) -> Callable[[], int]:
    def body() -> int:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
        return 0

    return body


def test_cpu_accounting_and_quota(manager, children) -> None:
    busy = manager.create("busy", LIMITS)
    idle = manager.create("idle", LIMITS)
    before = busy.stats().cpu_usec
    p1 = children.spawn(busy, _busy(1.0))
    p2 = children.spawn(idle, lambda: time.sleep(1.0))
    assert os.WIFEXITED(children.wait(p1)) and os.WIFEXITED(children.wait(p2))
    used = busy.stats().cpu_usec - before
    assert used > 200_000, used
    assert used < 850_000, f"0.5 cores for 1 s used {used} us: the quota does not throttle"
    assert idle.stats().cpu_usec < 50_000


def _daemon(w: int) -> Callable[[], int]:
    def body() -> int:
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.setsid()
                os.write(w, str(os.getpid()).encode())
                time.sleep(600)
            os._exit(0)
        os.wait()
        return 0

    return body


def test_kill_reaches_a_double_forked_daemon(manager, children) -> None:
    cg = manager.create("daemon", LIMITS)
    r, w = os.pipe()
    pid = children.spawn(cg, _daemon(w))
    os.close(w)
    daemon = int(os.read(r, 32))
    os.close(r)
    assert os.WIFEXITED(children.wait(pid))  # its parents are gone, it is not our child
    assert cg.procs() == [daemon]
    cg.kill()
    assert cg.procs() == []

    assert _wait_for(lambda: not alive(daemon))
    cg.remove()
    assert [p for p in cg.paths() if os.path.exists(p)] == []
    cg.remove()  # idempotent


def test_remove_kills_and_leaves_nothing(manager, children) -> None:
    cg = manager.create("remove", LIMITS)
    pid = children.spawn(cg, lambda: time.sleep(600))
    assert _wait_for(lambda: pid in cg.procs())
    cg.remove()
    assert [p for p in cg.paths() if os.path.exists(p)] == []
    status = children.wait(pid)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def test_stale_cgroup_is_replaced(manager, children) -> None:
    old = manager.create("stale", LIMITS)
    pid = children.spawn(old, lambda: time.sleep(600))
    assert _wait_for(lambda: pid in old.procs())
    new = manager.create("stale", CgroupLimits(memory_bytes=None, pids=5, cpu_quota=None))
    assert new.procs() == []
    assert os.WIFSIGNALED(children.wait(pid))
    assert _read(f"{_dir(manager, 'pids', new)}/pids.max") == "5"


def test_cleanup_removes_everything(manager, children) -> None:
    cgs = [manager.create(f"c{i}", LIMITS) for i in range(3)]
    pid = children.spawn(cgs[0], lambda: time.sleep(600))
    assert _wait_for(lambda: pid in cgs[0].procs())
    bases = list(manager.describe()["paths"].values())
    assert all(os.path.isdir(b) for b in bases)
    manager.cleanup()
    assert [b for b in bases if os.path.exists(b)] == []
    assert _our_dirs() == []
    assert os.WIFSIGNALED(children.wait(pid))
    manager.cleanup()  # idempotent
    # usable again after a cleanup
    cg = manager.create("again", LIMITS)
    assert all(os.path.isdir(p) for p in cg.paths())
