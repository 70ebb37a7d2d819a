"""A class at once: every student presses Run in the same instant. `size` clients
each create a python3 kernel and run `print(1)` in it, all started together on
connections of their own, against a server with the default settings. The first
time its warm pool serves the first few and the rest start cold; the pool then
grows to the burst's size in the background, and the class comes again. Beside
each, the floor the host's CPUs set: the host CPU the whole burst cost, spread
over every core (with c ms of CPU per kernel on n cores, the last one cannot
finish before size x c / n ms)."""

from __future__ import annotations

import asyncio
import os
import time

from .api import Api
from .cpu import cpu_clock
from .figures import Figure, ms_since
from .services import Server

POOL_WAIT = 60.0  # seconds for the warm pool to fill before the bell


def class_floor_name(size: int, again: bool) -> str:
    return f"{class_name(size, again)}: host CPU of the burst / cores"


def class_name(size: int, again: bool) -> str:
    return f"class of {size} again, the pool grown" if again else f"class of {size}"


async def measure_class(server: Server, size: int, pool_size: int) -> list[Figure]:
    """The class's first bell, with the pool at rest, then its second, once the pool
    has grown to the size of the first burst."""
    first = await measure_bell(server, size, pool_size, again=False)
    return first + await measure_bell(server, size, size, again=True)


async def measure_bell(server: Server, size: int, pool_size: int, again: bool) -> list[Figure]:
    """The time from the bell to each student's `1`, and the burst's floor, once
    `pool_size` kernels wait (or POOL_WAIT passed)."""
    apis = [Api(server) for _ in range(size)]
    try:
        await apis[0].noop()
        for api in apis[1:]:
            api.signer = apis[0].signer
        deadline = time.monotonic() + POOL_WAIT
        while await apis[0].warm() < pool_size and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

        async def student(api: Api) -> tuple[float, str]:
            start = time.perf_counter()
            kernel_id = await api.create()
            await api.query(kernel_id)
            return ms_since(start), kernel_id

        busy, start = cpu_clock()[1], time.perf_counter()
        done = await asyncio.gather(*(student(api) for api in apis))
        wall = ms_since(start)
        cpu_ms = (cpu_clock()[1] - busy) * 1000
        ended = zip(apis, done, strict=True)
        await asyncio.gather(*(api.destroy(kernel_id) for api, (_, kernel_id) in ended))
    finally:
        await asyncio.gather(*(api.close() for api in apis))
    floor, name = class_floor_name(size, again), class_name(size, again)
    return [
        Figure(floor, [cpu_ms / (os.cpu_count() or 1)]),
        Figure(
            f"{name}: create + print(1), all at once",
            [t for t, _ in done],
            baseline=floor,
            rate=size / wall * 1000,
            cpu={"host": cpu_ms / size},
        ),  # fmt: skip
        Figure(f"{name}: the last one's print(1)", [wall], baseline=floor),
    ]
