"""One-shot jobs on a real engine (server/engine/jobs.py): a kernel of its own per
job, files and steps inside it, destroyed after whatever happens, and a bounded
queue that refuses the job past it at once."""

from __future__ import annotations

import asyncio

import psutil
import pytest

from server.engine.engine import Engine
from server.engine.jobs import Overloaded, StepLimits
from server.engine.settings import EngineSettings, LimitSettings, PoolSettings
from server.engine.store_backends import open_store

LIMITS = StepLimits(cpu_seconds=5, wall_seconds=10, output_bytes=1 << 20)
HELLO_C = (
    b'#include <stdio.h>\nint main(void){char s[32]; scanf("%31s", s); printf("hi %s\\n", s);}\n'
)


def run(tmp_path, body, **limits):
    """`body(engine)` on an engine of its own (pool off: every kernel is cold)."""
    settings = EngineSettings(limits=LimitSettings(**limits), pool=PoolSettings(pool_size=0))

    async def main():
        store = open_store(str(tmp_path))
        engine = await Engine.open(settings, store, str(tmp_path))
        try:
            return await asyncio.wait_for(body(engine), 120)
        finally:
            await engine.close()
            store.close()

    return asyncio.run(main())


def kernel_processes(engine: Engine) -> list[psutil.Process]:
    spawner = psutil.Process(engine.spawner.pid)
    return [p for p in spawner.children() if p.name() == "kernel-init"]


def test_a_job_builds_and_runs_in_a_kernel_that_is_gone_after(tmp_path):
    async def body(engine: Engine):
        async with engine.jobs.kernel("c", seconds=20) as job:
            build = await job.step("gcc -o prog prog.c", b"", LIMITS, files=[("prog.c", HELLO_C)])
            ran = await job.step("./prog", b"world\n", LIMITS)
            inside = len(kernel_processes(engine))
        await engine.jobs.ended()  # its kernel goes after the job, in the background
        return build, ran, inside, kernel_processes(engine), dict(engine.registry.sessions)

    build, ran, inside, after, sessions = run(tmp_path, body)
    assert build.exit_code == 0 and build.stderr == b""
    assert ran.stdout == b"hi world\n" and ran.exit_code == 0
    assert inside == 1 and after == [] and sessions == {}


def test_each_job_has_a_kernel_of_its_own_even_when_one_fails(tmp_path):
    async def body(engine: Engine):
        seen = []
        with pytest.raises(RuntimeError):
            async with engine.jobs.kernel("python3", seconds=10) as job:
                wrote = await job.step(
                    "cat secret.txt", b"", LIMITS, files=[("secret.txt", b"from the first job")]
                )
                assert wrote.stdout == b"from the first job"
                seen.append(job.session.id)
                raise RuntimeError("the face failed")
        async with engine.jobs.kernel("python3", seconds=10) as job:
            seen.append(job.session.id)
            listing = await job.step("ls -A", b"", LIMITS)
        await engine.jobs.ended()
        return seen, listing, kernel_processes(engine)

    seen, listing, after = run(tmp_path, body)
    assert seen[0] != seen[1]
    assert listing.stdout == b"" and after == []


def test_past_the_queue_a_job_is_refused_at_once(tmp_path):
    async def body(engine: Engine):
        started = asyncio.Event()

        async def job(seconds: float) -> bytes:
            async with engine.jobs.kernel("bash", seconds=10) as kernel:
                started.set()
                return (await kernel.step(f"sleep {seconds}; echo ok", b"", LIMITS)).stdout

        first = asyncio.create_task(job(1))
        await started.wait()
        second = asyncio.create_task(job(0))  # waits for the one slot
        await asyncio.sleep(0.1)
        assert engine.jobs.waiting == 1
        with pytest.raises(Overloaded):
            async with engine.jobs.kernel("bash", seconds=10):
                pass
        return await first, await second

    assert run(tmp_path, body, max_running_jobs=1, max_waiting_jobs=1) == (b"ok\n", b"ok\n")
