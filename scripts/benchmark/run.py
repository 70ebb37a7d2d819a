"""The run: every figure in order, on the servers it starts (default, a class, no pool,
the scientific stack's two, Jobe, no spares), and with --peers the kernel gateway's first."""

from __future__ import annotations

import asyncio
import sys
import tempfile

import psutil

from .api import Api
from .baselines import command_baselines, idle_python_memory
from .classroom import measure_class
from .figures import (
    BARE_CREATE,
    BWRAP,
    COLD_CREATE,
    CREATE,
    SERVER_RSS,
    SPAWNER_RSS,
    Figure,
    Plan,
)
from .jobs import JOBE_CONFIG, host_floor, measure_jobs
from .kernel_gateway import measure_kernel_gateway
from .measurements import (
    CLIENTS,
    POOL_SIZE,
    measure_batch_c,
    measure_cold_creates,
    measure_density,
    measure_queries,
    measure_throughput,
    time_creates,
)
from .science import NO_PREIMPORT_CONFIG, measure_science
from .services import Server, rss_mib, sandbox_server, spawner_of
from .streams import measure_streams, measure_terminal

COLD_CONFIG = "max_kernels = 2000\npool_size = 0\n"
BARE_CONFIG = COLD_CONFIG + "spare_processes = 0\n"


def step(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


async def measure_server(server: Server, plan: Plan, notes: list[str]) -> list[Figure]:
    api = Api(server)
    try:
        step(f"no-op and query round trips ({plan.queries} each)")
        figures = await measure_queries(api, plan.queries)
        step(f"stream round trips ({plan.queries})")
        figures += await measure_streams(api, plan.queries)
        step(f"terminal keystrokes ({plan.queries})")
        figures += await measure_terminal(api, plan.queries)
        step(f"creates ({plan.runs})")
        created, executable = await time_creates(api, plan.runs, POOL_SIZE)
        figures += [
            Figure(CREATE, created, baseline=BWRAP),
            Figure("create until print(1) finished", executable, baseline=BWRAP),
        ]
        step(f"throughput ({'/'.join(map(str, CLIENTS))} clients, {plan.seconds:g} s each)")
        figures += await measure_throughput(api, server, plan.seconds)
        step(f"batch C cycles ({plan.runs})")
        figures += await measure_batch_c(api, plan.runs)
        step(f"density ({plan.density} kernels)")
        figures += await measure_density(api, server, plan, notes)
        return figures
    finally:
        await api.close()


def run(plan: Plan, gateway_venv: str | None = None) -> tuple[list[Figure], list[str]]:
    """Every figure, and notes (the ceiling); with `gateway_venv` (--peers), the kernel
    gateway's figures too: measured first, when no server of ours runs, and listed last."""
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as tmp:
        peers = []
        if gateway_venv is not None:
            step("peer: Jupyter Kernel Gateway")
            peers = measure_kernel_gateway(gateway_venv, plan, tmp, step)
        step(f"baselines: commands ({plan.runs} runs each), idle interpreters ({plan.probes})")
        figures = command_baselines(plan.runs, tmp) + idle_python_memory(plan.probes)
        notes: list[str] = []
        step("starting the server")
        # room for the density's kernels, the probes' and the warm pool's; the pool at
        # its resting size (the density's creates come faster than it refills, and the
        # kernels it would grow by would count as the density's: the class shows growth)
        max_kernels = max(2000, plan.density + plan.probes + POOL_SIZE + 10)
        settings = f"max_kernels = {max_kernels}\npool_max = {POOL_SIZE}\n"
        with sandbox_server(tmp, settings=settings) as server:
            server_rss = rss_mib(psutil.Process(server.proc.pid))
            figures.append(Figure(SERVER_RSS, [server_rss], unit="MiB"))
            figures.append(Figure(SPAWNER_RSS, [rss_mib(spawner_of(server))], unit="MiB"))
            figures += asyncio.run(measure_server(server, plan, notes))
        step(f"a class of {plan.klass}: create + print(1) all at once, default settings")
        with sandbox_server(tmp, "class") as server:
            figures += asyncio.run(measure_class(server, plan.klass, POOL_SIZE))
        step(f"cold creates, no warm pool ({plan.runs} spaced, {plan.runs} back to back)")
        with sandbox_server(tmp, "cold", COLD_CONFIG) as server:
            figures += asyncio.run(measure_cold_creates(server, plan.runs, COLD_CREATE))
            figures += asyncio.run(
                measure_cold_creates(server, plan.runs, f"{COLD_CREATE}, back to back", 0.0)
            )
        kernels = min(plan.runs, 10)
        step(f"the scientific stack's import in {kernels} kernels, without pre-import")
        with sandbox_server(tmp, "science", COLD_CONFIG + NO_PREIMPORT_CONFIG) as server:
            figures += asyncio.run(measure_science(server, kernels, preimported=False))
        step(f"the same, pre-imported ({kernels} kernels)")
        with sandbox_server(tmp, "science-pre", COLD_CONFIG) as server:
            figures += asyncio.run(measure_science(server, kernels, preimported=True))
        step(f"Jobe runs: python3 and C sustained ({plan.seconds:g} s each), a burst")
        figures += [host_floor("python3", plan.runs, tmp), host_floor("c", plan.runs, tmp)]
        with sandbox_server(tmp, "jobe", JOBE_CONFIG) as server:
            figures += asyncio.run(measure_jobs(server, plan.seconds, plan.burst))
        step(f"cold creates, no warm pool and no spare processes ({plan.runs} spaced)")
        with sandbox_server(tmp, "bare", BARE_CONFIG) as server:
            figures += asyncio.run(measure_cold_creates(server, plan.runs, BARE_CREATE))
    return figures + peers, notes
