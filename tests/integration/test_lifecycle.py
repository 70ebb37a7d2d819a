"""Limits that hold and kernels that leave nothing behind (threat-model rows 5 and 7)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import psutil
import pytest
from helpers.harness import (
    HAS_CGROUPS,
    Sandbox,
    alive,
    kernel_spec,
    sandbox_cgroup_dirs,
    wait_until,
)

from sandbox.kernel_connection import KernelGone
from sandbox.spawner_client import SpawnerClient, SpawnerError
from sandbox.spec import MiB

pytestmark = pytest.mark.cgroups

# Read at collection, before any test has started a spawner.
with open("/proc/self/cgroup") as _f:
    OWN_CGROUPS_AT_START = {line.strip().split(":", 2)[2] for line in _f}
SUPERVISOR_LEAF = re.compile(r"^sandbox-\d+(-\d+)?-supervisor$")


def pid_namespace(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/pid")


def processes_in_namespace(ns: str) -> list[int]:
    found = []
    for proc in psutil.process_iter():
        try:
            if pid_namespace(proc.pid) == ns:
                found.append(proc.pid)
        except OSError:
            continue
    return found


def spawner_mounts(sandbox) -> str:
    with open(f"/proc/{sandbox.client.pid}/mountinfo") as f:
        return f.read()


class Remains:
    """Everything a kernel owns on the host, recorded while it runs."""

    def __init__(self, sandbox, kernel) -> None:
        self.sandbox = sandbox
        self.kernel_id = kernel.id
        self.ns = pid_namespace(kernel.pid)
        assert processes_in_namespace(self.ns), "the kernel should have processes"
        self.cgroup_dirs = sandbox_cgroup_dirs(kernel.pid)
        if HAS_CGROUPS:
            assert self.cgroup_dirs, "the kernel should have cgroups"
        else:
            assert self.cgroup_dirs == [], "the none layout makes no cgroups"
        assert f"/work/{kernel.id} " in spawner_mounts(sandbox)
        # the scratch dir as the spawner sees it, through its own mount namespace
        scratch = sandbox.run(sandbox.client.info())["scratch"]
        self.work_dir = f"/proc/{sandbox.client.pid}/root{scratch}/work/{kernel.id}"
        assert os.path.isdir(self.work_dir)

    def assert_gone(self) -> None:
        deadline = time.monotonic() + 5
        while processes_in_namespace(self.ns) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_in_namespace(self.ns) == [], "processes survived"
        assert [d for d in self.cgroup_dirs if os.path.exists(d)] == [], "cgroups survived"
        assert f"/work/{self.kernel_id} " not in spawner_mounts(self.sandbox), "work mount survived"
        assert not os.path.exists(self.work_dir), "scratch directory survived"


def test_destroy_leaves_nothing(sandbox):
    kernel = sandbox.kernel(name="destroy")
    kernel.run("import subprocess; subprocess.Popen(['sleep', '1000'])")
    remains = Remains(sandbox, kernel)
    kernel.destroy()
    remains.assert_gone()


def test_daemon_that_double_forked_and_setsid_is_killed(sandbox):
    kernel = sandbox.kernel(name="daemon")
    out = kernel.run(
        "import os\n"
        "os.system('setsid sh -c \"sleep 1000 & sleep 1000 &\" </dev/null >/dev/null 2>&1 &')\n"
        "import time; time.sleep(0.3)\n"
        "print(len([p for p in os.listdir('/proc') if p.isdigit()]))\n"
    )
    assert int(out.stdout) >= 4, out
    remains = Remains(sandbox, kernel)
    kernel.destroy()
    remains.assert_gone()


def test_killed_from_outside_then_destroyed_leaves_nothing(sandbox):
    kernel = sandbox.kernel(name="outside")
    kernel.run("import subprocess; subprocess.Popen(['sleep', '1000'])")
    remains = Remains(sandbox, kernel)
    os.kill(kernel.pid, signal.SIGKILL)
    result = kernel.collect(hold=5)
    assert result.status == "finished"
    kernel.destroy()
    remains.assert_gone()


def test_runner_crash_is_reported(kernel):
    out = kernel.run("import os; os._exit(5)")
    assert out.statuses[-1] == "finished"
    assert out.exit_code == 5


def test_fork_bomb_stops_at_pids_limit(sandbox):
    spec = kernel_spec(pids=32)
    bomb = sandbox.kernel(spec, name="forkbomb")
    other = sandbox.kernel(name="bystander")
    try:
        out = bomb.run(
            "import os, time\n"
            "children = 0\n"
            "for _ in range(200):\n"
            "    try:\n"
            "        if os.fork() == 0:\n"
            "            time.sleep(30); os._exit(0)\n"
            "        children += 1\n"
            "    except OSError as e:\n"
            "        print('fork refused', e.errno); break\n"
            "print('children', children)\n"
        )
        assert "fork refused 11" in out.stdout, out  # EAGAIN
        stats = bomb.stats()
        if HAS_CGROUPS:
            assert stats["pids_current"] <= 32
            assert stats["pids_limit_hits"] > 0
        else:  # RLIMIT_NPROC: 32 beyond the kernel uid's tasks at start; no count kept
            assert stats["pids_limit_hits"] == 0
        assert other.run("print(6 * 7)").stdout == "42\n"
        # what the spawner's destroy reports (the metrics' pids limit hits)
        assert bomb.destroy() == stats["pids_limit_hits"]
    finally:
        bomb.destroy()
        other.destroy()


def test_memory_bomb_is_oom_killed_and_reported(sandbox):
    spec = kernel_spec(memory_bytes=64 * MiB)
    bomb = sandbox.kernel(spec, name="membomb")
    other = sandbox.kernel(name="bystander")
    try:
        out = bomb.run("x = b'x' * (256 * 1024 * 1024)\nprint('survived')")
        assert "survived" not in out.stdout
        assert out.statuses[-1] == "finished"
        if HAS_CGROUPS:
            assert out.exit_code == 128 + signal.SIGKILL
            assert bomb.stats()["oom_kills"] >= 1
        else:  # RLIMIT_AS: the allocation fails and the kernel lives on
            assert "MemoryError" in out.stderr, out
            assert bomb.stats()["oom_kills"] == 0
            assert bomb.run("print('alive')").stdout == "alive\n"
        assert other.run("print(6 * 7)").stdout == "42\n"
    finally:
        bomb.destroy()
        other.destroy()


def test_a_kernel_has_four_file_systems_of_its_own(sandbox):
    """/proc, devpts, /tmp with /dev/shm (and its /etc/passwd and /etc/group), and
    /home/work; its root is its zygote's template, which every kernel shares
    (tests/security/test_root_template.py). Each file system is a superblock, and
    so a shrinker that every memory cgroup on the host keeps a slot for: kernel
    memory that grows with the square of the kernels alive (sandbox/mounts.py,
    _mount_tmp_and_shm). /dev and the masked /proc directories are the root's
    own; the rest are binds."""
    kernel = sandbox.kernel(name="filesystems")
    try:
        out = kernel.run("print(open('/proc/self/mountinfo').read())").stdout
    finally:
        kernel.destroy()
    own = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 10:
            continue
        fstype = fields[fields.index("-") + 1]
        if fstype in ("tmpfs", "proc", "devpts"):
            own.setdefault(fields[2], []).append(fields[4])
    groups = [set(points) for points in own.values()]
    assert len(groups) == 5, own  # the four and the template
    assert any({"/tmp", "/dev/shm", "/etc/passwd", "/etc/group"} <= group for group in groups), own
    assert any("/" in group for group in groups), own


@pytest.mark.parametrize("where", ["/tmp", "/home/work", "/dev/shm"])
def test_disk_fill_gives_enospc_not_host_damage(sandbox, where):
    spec = kernel_spec(tmp_bytes=8 * MiB, work_bytes=8 * MiB)
    kernel = sandbox.kernel(spec, name="diskfill")
    try:
        out = kernel.run(
            "import errno\n"
            f"f = open('{where}/fill', 'wb')\n"
            "try:\n"
            "    for _ in range(64):\n"
            "        f.write(b'x' * 1024 * 1024); f.flush()\n"
            "    print('WROTE ALL')\n"
            "except OSError as e:\n"
            "    print(errno.errorcode[e.errno])\n"
        )
        assert out.stdout.strip() == "ENOSPC", out
    finally:
        kernel.destroy()


def test_closing_a_kernels_socket_ends_it_even_with_others_running(sandbox):
    """The classic leak: if the spawner or another kernel held a copy of this
    kernel's socket, closing the server's end would not reach its pid 1."""
    first = sandbox.kernel(name="first")
    second = sandbox.kernel(name="second")
    try:
        pid = first.pid
        sandbox.run(first.k.close())
        wait_until(lambda: not alive(pid), "pid 1 to end with its socket", timeout=5)
        assert second.run("print('fine')").stdout == "fine\n"
    finally:
        first.destroy()
        second.destroy()


def test_cpu_quota_throttles(sandbox):
    """Two busy processes for a second of wall time under a 0.5-core quota: the
    kernel gets about half a core, not the two cores the host has."""
    kernel = sandbox.kernel(kernel_spec(cpu_quota=0.5), name="throttled")
    try:
        before = kernel.stats()["cpu_usec"]
        out = kernel.run(
            "import multiprocessing, time\n"
            "def spin():\n"
            "    end = time.monotonic() + 2\n"
            "    while time.monotonic() < end: pass\n"
            "procs = [multiprocessing.Process(target=spin) for _ in range(2)]\n"
            "start = time.monotonic()\n"
            "[p.start() for p in procs]; [p.join() for p in procs]\n"
            "print(round(time.monotonic() - start, 2))\n"
        )
        wall = float(out.stdout)
        used = (kernel.stats()["cpu_usec"] - before) / 1e6
        if HAS_CGROUPS:
            assert used / wall < 0.5 * 1.3, (used, wall)  # unthrottled it would be near 2
        else:  # no CPU limit without a cgroup; psutil still counts the reaped children
            assert used / wall > 0.5 * 1.3, (used, wall)
    finally:
        kernel.destroy()


def test_kernel_cgroups_nest_under_our_own(sandbox):
    """Created under the cgroup this process (and so the spawner) started in, never
    elsewhere in the tree: a delegated subtree is all a server may touch. (On v2 a
    spawner moves the processes of its cgroup into a supervisor leaf below it, the
    "no internal processes" rule, so where we are now is no guide. If we started in
    such a leaf, made by an earlier manager, the delegated cgroup is its parent.)"""
    kernel = sandbox.kernel(name="nested")
    try:
        remains = Remains(sandbox, kernel)
        if not HAS_CGROUPS:
            assert remains.cgroup_dirs == []  # none: no cgroup anywhere, nothing to nest
        own = {
            os.path.dirname(path) if SUPERVISOR_LEAF.match(os.path.basename(path)) else path
            for path in OWN_CGROUPS_AT_START
        }
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f if " - cgroup" in line]
        for directory in remains.cgroup_dirs:
            mount = max((m for m in mounts if directory.startswith(m + "/")), key=len)
            relative = directory[len(mount) :]
            assert any(relative.startswith(path.rstrip("/") + "/") for path in own), (
                directory,
                own,
            )
    finally:
        kernel.destroy()


def test_closing_the_spawner_after_a_kernel_ended_on_its_own(capfd):
    """A kernel whose pid 1 has exited (its host socket closed) before the server's
    connection closes: at shutdown the spawner knows it ended, and neither kills
    its pid again nor reports it as a kernel that will not die."""
    box = Sandbox()
    try:
        kernel = box.kernel(name="ended")
        box.run(kernel.k.close())  # pid 1 exits when its host socket closes
        # until it has exited (a zombie, or reaped by the spawner already)
        wait_until(lambda: not alive(kernel.pid), "pid 1 to end with its socket", timeout=10)
    finally:
        box.close()
    assert "will not die" not in capfd.readouterr().err


def test_a_spawner_that_cannot_build_kernel_init_says_why(tmp_path):
    # A host without a C compiler: kernel-init (pid 1 in server mode) cannot be
    # built, and the spawner's start fails with that reason, not "it exited".
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = {"PATH": str(bin_dir), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    with pytest.raises(SpawnerError) as failed:
        asyncio.run(SpawnerClient.start(env=env))
    assert failed.value.kind == "start-failed"
    assert "no C compiler (cc)" in str(failed.value), failed.value


def test_an_op_while_the_connection_is_dropped_is_kernel_gone(sandbox):
    """An op sent after the host dropped a kernel's connection, before its reader
    saw the end (an interrupt that comes as an OOM-killed kernel is restarted), is
    KernelGone, never the transport's own error."""
    k = sandbox.kernel()

    async def close_and_interrupt() -> None:
        closing = asyncio.create_task(k.k.close())
        await asyncio.sleep(0)  # close() has dropped the connection, waits for its reader
        try:
            with pytest.raises(KernelGone):
                await k.k.interrupt()
        finally:
            await closing

    try:
        sandbox.run(close_and_interrupt())
    finally:
        k.destroy()
