"""The one-shot faces' throughput: Jobe runs (what CodeRunner sends) of python3 and
C from many clients at once, and a burst of simultaneous submissions, beside the
floor the host itself sets: the CPU the same compile and run cost outside any
sandbox, spread over every core (no server can do more runs per second)."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import time

from .checks import expect
from .connection import Connection
from .cpu import CpuMeter, cpu_clock
from .figures import Figure, ms_since
from .services import Server

JOBE_CONFIG = '[faces]\nenabled = ["jobe"]\n'
RUNS = "/jobe/index.php/restapi/runs"
PYTHON_RUN = {"language_id": "python3", "sourcefilename": "test.py",
              "sourcecode": 'print("Hello world!")\n'}  # fmt: skip
C_HELLO = '#include <stdio.h>\nint main(void) { puts("Hello world!"); }\n'
C_RUN = {"language_id": "c", "sourcefilename": "prog.c", "sourcecode": C_HELLO}
# what Jobe runs for each, on the host
HOST_STEPS = {
    "python3": (("test.py", PYTHON_RUN["sourcecode"]),
                [["/usr/bin/python3", "-m", "py_compile", "test.py"],
                 ["/usr/bin/python3", "-BE", "test.py"]]),
    "c": (("prog.c", C_RUN["sourcecode"]),
          [["gcc", "-Wall", "-Werror", "-std=c99", "-x", "c", "-o", "prog.c.exe", "prog.c"],
           ["./prog.c.exe"]]),
}  # fmt: skip
CLIENTS = 16


def floor_name(lang: str) -> str:
    return f"{lang} compile+run CPU on the host"


def host_floor(lang: str, runs: int, tmp: str) -> Figure:
    """CPU ms of the language's compile and run outside any sandbox; its rate is the
    most runs per second this host's cores could give."""
    (name, source), steps = HOST_STEPS[lang]
    with open(os.path.join(tmp, name), "w") as f:
        f.write(source)
    samples = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        for argv in steps:
            subprocess.run(argv, cwd=tmp, check=True, capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        samples.append(cpu * 1000)
    figure = Figure(floor_name(lang), samples)
    figure.rate = (os.cpu_count() or 1) * 1000 / figure.stats["p50"]
    return figure


def _request(spec: dict) -> bytes:
    """A run's whole POST, as CodeRunner sends it (no key: the face is key-less from
    loopback)."""
    body = json.dumps({"run_spec": spec}).encode()
    head = (f"POST {RUNS} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")  # fmt: skip
    return head.encode() + body


async def _run(connection: Connection, request: bytes) -> float:
    t = time.perf_counter()
    async with asyncio.timeout(300):
        status, answer = await connection.exchange(request)
    expect(status == 200, f"Jobe run: HTTP {status} {answer[:200]!r}")
    result = json.loads(answer)
    expect(result["outcome"] == 15 and result["stdout"] == "Hello world!\n", f"Jobe run: {result}")
    return ms_since(t)


async def sustained(server: Server, lang: str, spec: dict, seconds: float) -> Figure:
    """CLIENTS clients post runs back to back for `seconds`, each on its own keep-alive
    connection (the lean client of the API figures, scripts/benchmark/connection.py:
    an httpx client cost about 2 ms of CPU per run, beside the server's 2.4)."""
    meter = CpuMeter(server)
    samples: list[float] = []
    request = _request(spec)
    connections = [Connection(*server.address) for _ in range(CLIENTS)]
    try:
        for _ in range(4):  # warm: the language's first run, the pool
            await _run(connections[0], request)
        deadline = time.perf_counter() + seconds

        async def one_client(connection: Connection) -> None:
            while time.perf_counter() < deadline:
                samples.append(await _run(connection, request))

        before, start, (_, busy, _) = meter.read(), time.perf_counter(), cpu_clock()
        await asyncio.gather(*(one_client(c) for c in connections))
        rate = len(samples) / (time.perf_counter() - start)
        busy = cpu_clock()[1] - busy
    finally:
        await asyncio.gather(*(c.close() for c in connections))
    cpu = {
        party: (used - before[party]) * 1000 / len(samples) for party, used in meter.read().items()
    }
    cpu["host"] = busy * 1000 / len(samples)  # all of it: see cpu.CpuMeter for why
    name = f"Jobe {lang} run, {CLIENTS} concurrent"
    return Figure(name, samples, baseline=floor_name(lang), rate=rate, cpu=cpu)


async def burst(server: Server, spec: dict, size: int) -> Figure:
    """`size` runs posted at the same instant, each on its own connection: all must
    succeed (the queue holds them; none is refused as an overload)."""
    request = _request(spec)
    connections = [Connection(*server.address) for _ in range(size)]
    try:
        await _run(connections[0], request)
        start = time.perf_counter()
        samples = await asyncio.gather(*(_run(c, request) for c in connections))
        wall = time.perf_counter() - start
    finally:
        await asyncio.gather(*(c.close() for c in connections))
    name = f"Jobe python3 burst of {size} at once"
    return Figure(name, list(samples), baseline=floor_name("python3"), rate=size / wall)


async def measure_jobs(server: Server, seconds: float, burst_size: int) -> list[Figure]:
    return [
        await sustained(server, "python3", PYTHON_RUN, seconds),
        await sustained(server, "c", C_RUN, seconds),
        await burst(server, PYTHON_RUN, burst_size),
    ]
