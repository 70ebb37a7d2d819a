"""Jupyter Kernel Gateway, the nearest peer (`./scripts/bench --peers`), measured in the
same run and the same way as the server, each figure beside the server's own:

  kernel start          POST /api/kernels, then print(1) over the new kernel's channels
                        WebSocket until its execute_reply and its output; each after an
                        untimed 50 ms pause, the kernel deleted untimed (ours: a create
                        with no warm pool until print(1) finished, spaced the same)
  print(1) round trip   one execute over an open channels WebSocket, plain client and
                        tuned client (kernel_channels.py) (ours: the signed v2 query)
  print(1), C clients   8 and 32 tuned clients, each with its own kernel and WebSocket,
                        back to back for the same time as ours (ours: query, C clients)
  kernel USS, N idle    the USS of each idle kernel's processes (its ipykernel and any
                        children), N kernels that each ran print(1) (ours: each idle
                        kernel's unique memory at the density figure)

The gateway runs from its own virtualenv (peer_env.py) on a free loopback port, with
$HOME in the run's temporary directory, so no Jupyter or IPython configuration of the
host's applies and its connection files go there. Its kernels are python3 ipykernels on
the same system python3 as ours."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import psutil

from .checks import expect
from .cpu import cpu_seconds
from .figures import (
    COLD_CREATE,
    QUERY_RT,
    Figure,
    MiB,
    Plan,
    kernel_unique,
    ms_since,
    query_load,
    until_print,
)
from .kernel_channels import TIMEOUT, Channels
from .measurements import COLD_PAUSE, load, repeat
from .services import free_port, service

NAME = "kernelgateway"
START = f"{NAME}: python3 kernel start until print(1)"
PLAIN_RT = f"{NAME}: print(1) round trip, plain client"
TUNED_RT = f"{NAME}: print(1) round trip, tuned client"
CLIENTS = (8, 32)  # as two of the server's query loads
IDLE_KERNELS = 10
WARM = 10  # untimed executes before the round trips, as before ours
SETTLE = 1.0  # s, untimed, between the idle kernels' print(1) and their memory


def load_name(clients: int) -> str:
    return f"{NAME}: print(1), {clients} concurrent"


def idle_kernels(plan: Plan) -> int:
    return min(IDLE_KERNELS, plan.runs)


def idle_uss(kernels: int) -> str:
    return f"{NAME}: kernel USS, {kernels} idle"


@dataclass(frozen=True)
class Gateway:
    proc: subprocess.Popen
    port: int

    def kernel_processes(self) -> list[list[psutil.Process]]:
        """Each running kernel's processes: an ipykernel (a child of the gateway) and its
        descendants."""
        kernels = []
        for child in psutil.Process(self.proc.pid).children():
            with contextlib.suppress(psutil.NoSuchProcess):
                if any("ipykernel" in part for part in child.cmdline()):
                    kernels.append([child, *child.children(recursive=True)])
        return kernels


@contextlib.contextmanager
def kernel_gateway(venv: str, tmp: str) -> Iterator[Gateway]:
    """The gateway on a free loopback port; at the end stopped with SIGTERM (its own
    stop, which shuts its kernels down), and any kernel it left behind killed."""
    home = os.path.join(tmp, "gateway-home")
    os.makedirs(home, exist_ok=True)
    env = {
        "PATH": f"{os.path.join(venv, 'bin')}:/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8",
        "JUPYTER_PLATFORM_DIRS": "1",  # the current directory layout, without a warning
    }  # fmt: skip
    port = free_port()
    argv = [os.path.join(venv, "bin", "jupyter-kernelgateway"), "--KernelGatewayApp.ip=127.0.0.1",
            f"--KernelGatewayApp.port={port}"]  # fmt: skip
    left: list[psutil.Process] = []
    try:
        url = f"http://127.0.0.1:{port}/api"
        with service(argv, url, os.path.join(tmp, "gateway.log"), env) as proc:
            gateway = Gateway(proc, port)
            try:
                yield gateway
            finally:
                with contextlib.suppress(psutil.NoSuchProcess):
                    left = psutil.Process(proc.pid).children(recursive=True)
                proc.terminate()  # before service() stops it its own way, a no-op by then
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(30)
    finally:
        _, alive = psutil.wait_procs(left, timeout=10)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()


class GatewayMeter:
    """CPU seconds used so far, in the server's columns: the gateway's process, its kernels
    (every process below it), and this client."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = psutil.Process(gateway.proc.pid)

    def read(self) -> dict[str, float]:
        return {
            "server": cpu_seconds([self.gateway]),
            "spawner+kernels": cpu_seconds(self.gateway.children(recursive=True)),
            "client": cpu_seconds([psutil.Process()]),
        }


class Rest:
    """The gateway's REST API for kernels."""

    def __init__(self, gateway: Gateway) -> None:
        self.port = gateway.port
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=TIMEOUT)

    async def start(self) -> str:
        answer = await self.http.post("/api/kernels", json={"name": "python3"})
        expect(answer.status_code == 201, f"POST /api/kernels: {answer.status_code} {answer.text}")
        return answer.json()["id"]

    async def delete(self, kernel_id: str) -> None:
        answer = await self.http.delete(f"/api/kernels/{kernel_id}")
        expect(answer.status_code == 204, f"DELETE a kernel: {answer.status_code} {answer.text}")

    async def channels(self, kernel_id: str, tuned: bool = True) -> Channels:
        return await Channels.open(self.port, kernel_id, tuned)

    async def close(self) -> None:
        await self.http.aclose()


async def time_starts(rest: Rest, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        await asyncio.sleep(COLD_PAUSE)
        t = time.perf_counter()
        kernel_id = await rest.start()
        channels = await rest.channels(kernel_id)
        await channels.execute()
        samples.append(ms_since(t))
        channels.close()
        await rest.delete(kernel_id)
    return samples


async def time_round_trips(rest: Rest, runs: int) -> tuple[list[float], list[float]]:
    """print(1) round trips on one kernel: (plain client's, tuned client's)."""
    kernel_id = await rest.start()
    try:
        samples = []
        for tuned in (False, True):
            channels = await rest.channels(kernel_id, tuned)
            try:
                await repeat(channels.execute, WARM)
                samples.append(await repeat(channels.execute, runs))
            finally:
                channels.close()
        return samples[0], samples[1]
    finally:
        await rest.delete(kernel_id)


async def idle_memory(rest: Rest, gateway: Gateway, count: int) -> tuple[list[str], list[float]]:
    """`count` kernels started, each having run print(1): (their ids, each one's USS in MiB,
    its processes' summed)."""
    kernel_ids = []
    for _ in range(count):
        kernel_ids.append(await rest.start())
        channels = await rest.channels(kernel_ids[-1])
        await channels.execute()
        channels.close()
    await asyncio.sleep(SETTLE)
    kernels = gateway.kernel_processes()
    expect(len(kernels) == count, f"{count} kernels started, {len(kernels)} under the gateway")
    return kernel_ids, [sum(p.memory_full_info().uss for p in procs) / MiB for procs in kernels]


async def measure_loads(
    rest: Rest, gateway: Gateway, kernel_ids: list[str], seconds: float
) -> list[Figure]:
    """print(1) back to back from 8 and 32 clients, each on its own kernel's WebSocket;
    the kernels started up to 32 first (untimed)."""
    while len(kernel_ids) < max(CLIENTS):
        kernel_ids.append(await rest.start())
    clients = [await rest.channels(kernel_id) for kernel_id in kernel_ids]
    try:
        for channels in clients:
            await channels.execute()  # untimed: each kernel's first
        meter = GatewayMeter(gateway)
        return [
            await load(
                meter, load_name(n), lambda c, _: c.execute(), clients[:n], seconds,
                baseline=query_load(n),
            )
            for n in CLIENTS
        ]  # fmt: skip
    finally:
        for channels in clients:
            channels.close()


async def measure(gateway: Gateway, plan: Plan, step: Callable[[str], None]) -> list[Figure]:
    rest = Rest(gateway)
    kernel_ids: list[str] = []
    try:
        step(f"kernelgateway: kernel starts ({plan.runs})")
        starts = await time_starts(rest, plan.runs)
        step(f"kernelgateway: print(1) round trips ({plan.queries} plain, {plan.queries} tuned)")
        plain, tuned = await time_round_trips(rest, plan.queries)
        count = idle_kernels(plan)
        step(f"kernelgateway: memory of {count} idle kernels")
        kernel_ids, uss = await idle_memory(rest, gateway, count)
        step(f"kernelgateway: throughput ({'/'.join(map(str, CLIENTS))} clients,"
             f" {plan.seconds:g} s each)")  # fmt: skip
        loads = await measure_loads(rest, gateway, kernel_ids, plan.seconds)
    finally:
        await asyncio.gather(*(rest.delete(k) for k in kernel_ids), return_exceptions=True)
        await rest.close()
    return [
        Figure(START, starts, baseline=until_print(COLD_CREATE)),
        Figure(PLAIN_RT, plain, baseline=QUERY_RT),
        Figure(TUNED_RT, tuned, baseline=QUERY_RT),
        *loads,
        Figure(idle_uss(count), uss, unit="MiB", baseline=kernel_unique(plan.density)),
    ]


def measure_kernel_gateway(
    venv: str, plan: Plan, tmp: str, step: Callable[[str], None]
) -> list[Figure]:
    """Every figure of the gateway, from the virtualenv `venv`."""
    with kernel_gateway(venv, tmp) as gateway:
        return asyncio.run(measure(gateway, plan, step))
