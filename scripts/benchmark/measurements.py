"""The server figures, each measured from the client's side over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

import psutil

from .api import BATCH_BODY, Api
from .baselines import HELLO_C
from .ceiling import Footprint, ceiling_note, host_tasks, mem_available, settled_mem_available
from .checks import expect
from .cpu import CpuMeter
from .figures import (
    BARE_GCC,
    BWRAP,
    CREATE,
    IDLE_PSS,
    IDLE_USS,
    NOOP,
    QUERY_RT,
    SERVER_RSS,
    SPAWNER_RSS,
    Figure,
    MiB,
    Plan,
    kernel_unique,
    ms_since,
    query_load,
    until_print,
)
from .host_memory import breakdown_note, host_memory
from .pagemap import kernel_memory
from .services import Server, rss_mib, spawner_of

POOL_SIZE = 4  # the server's default pool_size, written out so the figures can name it
CLIENTS = (1, 8, 32)
COLD_PAUSE = 0.05  # s, untimed, before each spaced cold create

Client = TypeVar("Client")


class Meter(Protocol):
    def read(self) -> dict[str, float]:
        """CPU seconds used so far, by party."""
        ...


async def repeat(action: Callable[[], Awaitable[object]], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        await action()
        samples.append(ms_since(t))
    return samples


async def measure_queries(api: Api, runs: int) -> list[Figure]:
    await repeat(api.noop, 10)  # warm: the connection, the server's first calls
    noop = await repeat(api.noop, runs)
    kernel_id = await api.create()
    await repeat(lambda: api.query(kernel_id), 10)
    queries = await repeat(lambda: api.query(kernel_id), runs)
    await api.destroy(kernel_id)
    return [Figure(NOOP, noop), Figure(QUERY_RT, queries, baseline=NOOP)]


async def time_creates(
    api: Api, runs: int, pool: int, pause: float = 0.0
) -> tuple[list[float], list[float]]:
    """(create, create until print(1) finished) in ms; each kernel destroyed untimed.
    With a pool, each create waits (untimed) until the pool is full again, so that it
    measures taking a warm kernel and no refill competes with it; with a pause, it
    waits that long (untimed) first, as a create on a server that is not busy
    creating sees it."""
    created, executable = [], []
    for _ in range(runs):
        await wait_pool_full(api, pool)
        await asyncio.sleep(pause)
        t = time.perf_counter()
        kernel_id = await api.create()
        created.append(ms_since(t))
        await api.query(kernel_id)
        executable.append(ms_since(t))
        await api.destroy(kernel_id)
    return created, executable


async def wait_pool_full(api: Api, pool: int = POOL_SIZE) -> None:
    """Until `pool` kernels wait in the warm pool (at once when pool is 0)."""
    while pool and await api.warm() < pool:
        await asyncio.sleep(0.005)


async def load(
    meter: Meter,
    name: str,
    call: Callable[[Client, int], Awaitable[object]],
    clients: Sequence[Client],
    seconds: float,
    baseline: str | None = None,
) -> Figure:
    """Each client calls call(client, its index) back to back until `seconds` are up
    (the server's clients are Apis, the kernel gateway's its kernels' Channels)."""
    samples: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client(each: Client, i: int) -> None:
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            await call(each, i)
            samples.append(ms_since(t))

    before, start = meter.read(), time.perf_counter()
    await asyncio.gather(*(client(each, i) for i, each in enumerate(clients)))
    rate = len(samples) / (time.perf_counter() - start)
    cpu = {
        party: (used - before[party]) * 1000 / len(samples) for party, used in meter.read().items()
    }
    return Figure(name, samples, baseline=baseline, rate=rate, cpu=cpu)


async def measure_throughput(api: Api, server: Server, seconds: float) -> list[Figure]:
    """No-op and query load from 1, 8 and 32 clients, each with its own connection and
    (for queries) its own kernel."""
    kernels = [await api.create() for _ in range(max(CLIENTS))]
    clients = [Api(server, api.signer) for _ in kernels]
    meter = CpuMeter(server)
    figures = []
    for n in CLIENTS:
        noop = f"no-op, {n} concurrent"
        figures += [
            await load(meter, noop, lambda c, _: c.noop(), clients[:n], seconds),
            await load(
                meter, query_load(n), lambda c, i: c.query(kernels[i]), clients[:n],
                seconds, baseline=noop,
            ),
        ]  # fmt: skip
    await asyncio.gather(*(c.close() for c in clients), *(api.destroy(k) for k in kernels))
    return figures


async def measure_batch_c(api: Api, runs: int) -> list[Figure]:
    cycles, calls = [], []
    for _ in range(runs):
        t = time.perf_counter()
        kernel_id = await api.create("c")
        await api.upload(kernel_id, "main.c", HELLO_C)
        t_call = time.perf_counter()
        stdout = await api.execute(kernel_id, BATCH_BODY)
        calls.append(ms_since(t_call))
        expect(stdout == "hello world\n", f"the C program printed {stdout!r}")
        await api.destroy(kernel_id)
        cycles.append(ms_since(t))
    return [
        Figure("batch C cycle", cycles, baseline=BARE_GCC),
        Figure("batch C: the build+exec call", calls, baseline=BARE_GCC),
    ]


CURVE_POINTS = 10  # density curve points: every tenth of the kernels
CURVE_PROBES = 5  # kernels queried at each point (the newest: after an untimed first query)
DENSITY_MEMORY = "density: host memory taken by kernels alive"
DENSITY_QUERIES = "density: query print(1) p99 of 5 by kernels alive"


async def measure_density(api: Api, server: Server, plan: Plan, notes: list[str]) -> list[Figure]:
    n = plan.density
    server_proc = psutil.Process(server.proc.pid)
    await wait_pool_full(api)
    before = Footprint(await settled_mem_available(), host_tasks(), server_proc.num_fds())
    parts_before = host_memory()
    kernels, memory_curve, query_curve = [], [], []
    for step in range(1, CURVE_POINTS + 1):  # the density curve: memory and queries as it grows
        while len(kernels) < n * step // CURVE_POINTS:
            kernels.append(await api.create())
        await wait_pool_full(api)
        alive = len(kernels)
        memory_curve.append((alive, (before.memory - mem_available()) / MiB))
        probes = []
        for kernel_id in kernels[-CURVE_PROBES:]:
            await api.query(kernel_id)  # untimed: a kernel's first query costs more
            t = time.perf_counter()
            await api.query(kernel_id)
            probes.append(ms_since(t))
        query_curve.append((alive, max(probes)))
    after = Footprint(await settled_mem_available(), host_tasks(), server_proc.num_fds())
    parts_after = host_memory()
    per_kernel = Footprint(
        (before.memory - after.memory) / n,
        (after.tasks - before.tasks) / n,
        (after.server_fds - before.server_fds) / n,
    )
    notes.append(ceiling_note(n, per_kernel, server_proc))
    notes.append(breakdown_note(n, per_kernel.memory, parts_before, parts_after))
    spawner = spawner_of(server)
    uss, pss = kernel_memory(spawner)  # a warm pool's kernels, if any, included
    expect(len(uss) >= n, f"{n} kernels alive, but {len(uss)} under the spawner")
    server_rss = rss_mib(server_proc)
    creates, _ = await time_creates(api, plan.probes, POOL_SIZE)
    queries = []
    for kernel_id in kernels[:: max(1, n // plan.probes)][: plan.probes]:
        await api.query(kernel_id)  # untimed: a kernel's first query, like the warm-up
        t = time.perf_counter()  # of the low-density figure, costs more than the rest
        await api.query(kernel_id)
        queries.append(ms_since(t))
    await api.destroy_all(kernels)
    return [
        Figure(kernel_unique(n), uss, unit="MiB", baseline=IDLE_USS),
        Figure(f"kernel PSS, {n} alive", pss, unit="MiB", baseline=IDLE_PSS),
        Figure(f"host memory per kernel, {n} alive", [per_kernel.memory / MiB], unit="MiB"),
        Figure(f"server RSS, {n} alive", [server_rss], unit="MiB", baseline=SERVER_RSS),
        Figure(f"spawner RSS, {n} alive", [rss_mib(spawner)], unit="MiB", baseline=SPAWNER_RSS),
        Figure(f"create, {n} alive", creates, baseline=CREATE),
        Figure(f"query print(1), {n} alive", queries, baseline=QUERY_RT),
        Figure(DENSITY_MEMORY, [y for _, y in memory_curve], unit="MiB", points=memory_curve),
        Figure(DENSITY_QUERIES, [y for _, y in query_curve], points=query_curve),
    ]


async def measure_cold_creates(
    server: Server, runs: int, name: str, pause: float = COLD_PAUSE
) -> list[Figure]:
    api = Api(server)
    try:
        created, executable = await time_creates(api, runs, pool=0, pause=pause)
    finally:
        await api.close()
    return [
        Figure(name, created, baseline=BWRAP),
        Figure(until_print(name), executable, baseline=BWRAP),
    ]
