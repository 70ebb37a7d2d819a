"""Spares: processes the spawner forks ahead of demand, each already in a fresh
cgroup, that kernels start from (sandbox.spare.Spare)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket

import psutil
import pytest
from helpers.harness import (
    HAS_CGROUPS,
    Sandbox,
    TestKernel,
    frozen,
    kernel_bounds,
    kernel_spec,
    sandbox_cgroup_dirs,
    wait_until,
    zombie,
)

from sandbox import cgroups, kernel_inputs, kernel_start
from sandbox.kernel import Kernel
from sandbox.kernel_uids import DEFAULT_RANGE
from sandbox.zygote import Zygote

MiB = 1024 * 1024


def spares_of(box: Sandbox) -> list[int]:
    return box.run(box.client.info())["spares"]


def wait_for(predicate, timeout: float = 10.0) -> None:
    wait_until(predicate, "the spares", timeout)


def limit_files(dirs: list[str]) -> dict[str, str]:
    """The memory and pids limits written in a kernel's cgroup directories."""
    found = {}
    for d in dirs:
        for name in ("memory.max", "memory.limit_in_bytes", "pids.max"):
            path = os.path.join(d, name)
            if os.path.exists(path):
                with open(path) as f:
                    found[name] = f.read().strip()
    return found


@pytest.fixture(scope="module")
def box():
    box = Sandbox(spares=2)
    yield box
    box.close()


@pytest.mark.cgroups
def test_spares_wait_in_cgroups_of_their_own(box):
    if not HAS_CGROUPS:
        assert spares_of(box) == []  # none: no cgroup to move into, so no spare
        return
    wait_for(lambda: len(spares_of(box)) == 2)
    # each spare moves itself in, which waits out a grace period
    wait_for(lambda: all(sandbox_cgroup_dirs(pid) for pid in spares_of(box)))
    dirs = [sandbox_cgroup_dirs(pid) for pid in spares_of(box)]
    assert dirs[0] and dirs[1] and set(dirs[0]).isdisjoint(dirs[1]), dirs


@pytest.mark.cgroups
def test_a_kernel_starts_from_a_spare_with_its_own_limits(box):
    if not HAS_CGROUPS:
        pytest.skip("no spares without cgroups (the test above shows there are none)")
    wait_for(lambda: len(spares_of(box)) == 2)
    first = spares_of(box)[0]
    wait_for(lambda: bool(sandbox_cgroup_dirs(first)))
    spare_dirs = sandbox_cgroup_dirs(first)
    spare_limits = limit_files(spare_dirs)
    kernel = box.kernel(kernel_spec(memory_bytes=96 * MiB, pids=77), name="spare")
    try:
        # the kernel's cgroups are the spare's, now with the kernel's limits
        assert sandbox_cgroup_dirs(kernel.pid) == spare_dirs
        assert sorted(kernel.stats()["cgroups"]) == sorted(spare_dirs)
        limits = limit_files(spare_dirs)
        assert limits.get("pids.max") == "77" != spare_limits.get("pids.max"), limits
        memory = limits.get("memory.max", limits.get("memory.limit_in_bytes"))
        assert memory == str(96 * MiB), limits
        out = kernel.run("print(sum(range(10)))")
        assert out.stdout == "45\n", out
        # and the spare it was is no spare any more; another one takes its place
        assert first not in spares_of(box)
        wait_for(lambda: len(spares_of(box)) == 2)
    finally:
        kernel.destroy()
    assert [d for d in spare_dirs if os.path.exists(d)] == []


def work_mounts(pid: int) -> list[str]:
    """The kernels' /home/work mounts (the spawner's scratch work/<id>) that process
    `pid`'s mount namespace holds."""
    with open(f"/proc/{pid}/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if os.path.basename(os.path.dirname(p)) == "work"]


@pytest.mark.cgroups
def test_a_spare_copies_no_work_mount_of_the_kernels_alive(box):
    """A spare's unshare copies its zygote's mount namespace, which was made before
    any kernel: the work mounts the spawner holds, one per kernel alive, are not in
    it. (When spares copied the spawner's, every start copied and dropped one mount
    per kernel alive: about 2 µs each here, 9 ms a start with 5,000 alive.)"""
    if not HAS_CGROUPS:
        pytest.skip("no spares without cgroups")
    kernels = [box.kernel(name=f"alive-{i}") for i in range(12)]
    try:
        assert len(work_mounts(box.client.pid)) >= 12  # the spawner holds them
        wait_for(lambda: len(spares_of(box)) == 2)
        for pid in spares_of(box):
            assert work_mounts(pid) == [], pid
        kernel = box.kernel(name="one-more")
        try:
            assert kernel.run("import os; print(os.listdir('/home/work'))").stdout == "[]\n"
        finally:
            kernel.destroy()
    finally:
        for k in kernels:
            k.destroy()


@pytest.mark.cgroups
def test_spares_that_die_are_replaced_and_their_cgroups_removed(box):
    """Killed just before a create: the spawner may not have noticed yet and hand the
    kernel to a dead spare, which it then starts without one."""
    if not HAS_CGROUPS:
        pytest.skip("no spares without cgroups")
    wait_for(lambda: len(spares_of(box)) == 2)
    victims = spares_of(box)
    wait_for(lambda: all(sandbox_cgroup_dirs(pid) for pid in victims))
    victim_dirs = [d for pid in victims for d in sandbox_cgroup_dirs(pid)]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    kernel = box.kernel(name="after-dead-spares")
    try:
        assert kernel.run("print('ok')").stdout == "ok\n"
        assert set(victims).isdisjoint(spares_of(box))
        wait_for(lambda: len(spares_of(box)) == 2)
        assert [d for d in victim_dirs if os.path.exists(d)] == []
        for pid in victims:
            assert not zombie(pid)  # reaped
    finally:
        kernel.destroy()


@pytest.mark.cgroups
def test_without_spares_kernels_are_moved_into_their_cgroups():
    box = Sandbox(spares=0)
    try:
        assert spares_of(box) == []
        kernel = box.kernel(kernel_spec(pids=55), name="no-spare")
        try:
            dirs = sandbox_cgroup_dirs(kernel.pid)
            assert bool(dirs) == HAS_CGROUPS
            if HAS_CGROUPS:
                assert limit_files(dirs)["pids.max"] == "55"
            assert kernel.run("print(2 + 2)").stdout == "4\n"
        finally:
            kernel.destroy()
        assert spares_of(box) == []
    finally:
        box.close()


@pytest.mark.cgroups
def test_closing_the_spawner_ends_its_spares_and_their_cgroups():
    box = Sandbox(spares=3)
    try:
        if HAS_CGROUPS:
            wait_for(lambda: len(spares_of(box)) == 3)
            wait_for(lambda: all(sandbox_cgroup_dirs(pid) for pid in spares_of(box)))
        pids = spares_of(box)
        dirs = [d for pid in pids for d in sandbox_cgroup_dirs(pid)]
    finally:
        box.close()
    for pid in pids:
        assert not psutil.pid_exists(pid), pid
    assert [d for d in dirs if os.path.exists(d)] == []


@pytest.mark.cgroups
def test_a_kernel_given_to_a_dead_spare_fails_as_spare_lost(tmp_path):
    """What the spawner retries with a new spare (a spare killed while a create is
    under way): start_kernel must say SpareLost, and not hang or blame the spec."""
    if not HAS_CGROUPS:
        pytest.skip("no spares without cgroups")
    manager = cgroups.detect()
    env = kernel_inputs.Environment.prepare(str(tmp_path), layout_has_cgroup=True, server_mode=True)
    cgroup = manager.create("spare-lost", cgroups.CgroupLimits.unlimited())
    program = env.kernel_init
    zygote = Zygote.fork(env, keep=(program.binary_fd, program.helper_fd))
    try:
        spare = zygote.spare(cgroup, kernel_start.START_TIMEOUT)  # our child, as the spawner's
        os.kill(spare.pid, signal.SIGKILL)
        host_end, kernel_end = socket.socketpair()
        with host_end, kernel_end, pytest.raises(kernel_start.SpareLost):
            kernel_start.start_kernel(
                env, kernel_spec(), str(tmp_path), cgroup,
                kernel_inputs.Payload(DEFAULT_RANGE.first), host_sock=kernel_end, spare=spare,
            )  # fmt: skip
        assert not psutil.pid_exists(spare.pid)  # reaped by start_kernel
    finally:
        zygote.close(cgroups.KILL_TIMEOUT)
        cgroup.remove()
        manager.cleanup()


@pytest.mark.cgroups
def test_a_stuck_spare_is_given_up_on_and_the_kernel_starts_without_it():
    """A start that hangs (here: spares SIGSTOPped, so the request sent to one is
    never read) is killed after the spawner's start timeout, and the kernel
    starts the usual way: the spawner never hangs on one kernel."""
    if not HAS_CGROUPS:
        pytest.skip("no spares without cgroups")
    box = Sandbox(spares=2, start_timeout=1.0)
    try:
        wait_for(lambda: len(spares_of(box)) == 2)
        stopped = spares_of(box)
        wait_for(lambda: all(sandbox_cgroup_dirs(pid) for pid in stopped))
        dirs_of = {pid: sandbox_cgroup_dirs(pid) for pid in stopped}
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        # each create tries the oldest spare first: both stuck ones, one after the other
        for attempt in range(2):
            kernel = box.kernel(name=f"after-a-stuck-spare-{attempt}")
            try:
                assert kernel.run("print('ok')").stdout == "ok\n"
            finally:
                kernel.destroy()
            tried = stopped[attempt]
            assert tried not in spares_of(box) and not psutil.pid_exists(tried)
            assert [d for d in dirs_of[tried] if os.path.exists(d)] == []
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        box.close()


@pytest.mark.cgroups
def test_a_start_whose_pid_1_will_not_die_is_given_up_on():
    """A spare frozen as a process stuck in uninterruptible sleep is: the start times
    out, its SIGKILL cannot land, and after the kill timeout the spawner gives up on
    it and starts the kernel without it, serving meanwhile. Once the spare can die,
    the spawner reaps it and removes its cgroup."""
    if not HAS_CGROUPS:
        pytest.skip("no spares without cgroups")
    box = Sandbox(spares=1, start_timeout=1.0)
    try:
        wait_for(lambda: len(spares_of(box)) == 1)
        (stuck,) = spares_of(box)
        wait_for(lambda: bool(sandbox_cgroup_dirs(stuck)))
        dirs = sandbox_cgroup_dirs(stuck)
        processes = [stuck, *(p.pid for p in psutil.Process(stuck).children(recursive=True))]
        with frozen(processes, name="stuck-spare"):
            kernel = box.kernel(name="after-a-frozen-spare")
            try:
                assert kernel.run("print('ok')").stdout == "ok\n"
                assert sandbox_cgroup_dirs(kernel.pid) != dirs
            finally:
                kernel.destroy()
            assert psutil.pid_exists(stuck) and stuck not in spares_of(box)
            assert all(os.path.exists(d) for d in dirs)  # kept while its pid 1 lives
        # thawed: the SIGKILL lands, the spawner reaps it and removes its cgroup
        wait_for(lambda: not psutil.pid_exists(stuck))
        wait_for(lambda: not any(os.path.exists(d) for d in dirs))
        box.run(box.client.info())  # the spawner still answers
    finally:
        box.close()


@pytest.mark.cgroups
def test_a_start_under_way_does_not_hold_up_the_next():
    """Spawns are answered as their kernels start, not in the order asked: with the
    oldest spare stopped, a kernel asked for after the first one starts from the
    other spare and is answered while the first still waits; the first starts once
    its spare runs again. Both kernels then run code."""
    if not HAS_CGROUPS:
        pytest.skip("no spares without cgroups")
    box = Sandbox(spares=2, start_timeout=30.0)
    slow = None
    try:
        wait_for(lambda: len(spares_of(box)) == 2)
        slow = spares_of(box)[0]  # the next spawn takes the oldest
        os.kill(slow, signal.SIGSTOP)

        async def both() -> tuple[list[bool], tuple, tuple]:
            first = asyncio.ensure_future(box.client.spawn("overlap-first", kernel_spec()))
            await asyncio.sleep(0.1)  # asked for first
            second = asyncio.ensure_future(box.client.spawn("overlap-second", kernel_spec()))
            done, _ = await asyncio.wait({first, second}, return_when=asyncio.FIRST_COMPLETED)
            answered = [second in done, first in done]
            os.kill(slow, signal.SIGCONT)
            return answered, await first, await second

        answered, (first_pid, first_sock), (second_pid, second_sock) = box.run(both())
        assert answered == [True, False]
        assert first_pid == slow and second_pid != slow
        for kernel_id, pid, sock in (
            ("overlap-first", first_pid, first_sock),
            ("overlap-second", second_pid, second_sock),
        ):
            kernel = TestKernel(box, box.run(Kernel.connect(kernel_id, pid, sock, kernel_bounds())))
            try:
                box.run(kernel.k.wait_ready())
                assert kernel.run("print('ok')").stdout == "ok\n"
            finally:
                kernel.destroy()
    finally:
        if slow is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(slow, signal.SIGCONT)
        box.close()
