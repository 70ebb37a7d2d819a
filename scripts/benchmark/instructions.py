"""--instructions: the server's own instructions per request, counted by callgrind.

Why: this machine's speed drifts by up to four times within an hour, so timed
figures from different runs cannot be compared, and a change of a few percent on
the request path is lost in them. The instructions the server process executes in
user space for a request do not drift: the same commit counts the same to within
about 1% run after run. What they leave out: the kernel's side of its system calls
and what the other processes (spawner, kernels, client) spend.

The server runs under `valgrind --tool=callgrind` with collection off until the
requests begin (callgrind_control turns it on, zeroes and dumps it around each
batch); each figure's samples are its batches' instructions per request."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable

from .api import Api
from .checks import expect
from .connection import Connection
from .figures import NOOP, Figure
from .jobs import JOBE_CONFIG, PYTHON_RUN, _request, _run
from .services import ROOT, UNLIMITED, VENV_BIN, Server, free_port, service

UNIT = "kinstr"
WARM_UP = 30  # requests of each kind before counting (first uses, the pool's growth)
START_SECONDS = 300  # the server starts some 20 times slower under valgrind


def available() -> str | None:
    """Why instructions cannot be counted here, or None."""
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    return (
        f"{' and '.join(missing)} not found (Debian: apt-get install valgrind)" if missing else None
    )


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def _dumped(prefix: str) -> int:
    """The instructions in the newest dump of `prefix` (and removes the dumps)."""
    paths = sorted(glob.glob(prefix + ".*"), key=os.path.getmtime)
    expect(bool(paths), f"callgrind wrote no dump at {prefix}.*")
    total = None
    with open(paths[-1]) as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                total = int(line.split()[1])
    for path in paths:
        os.remove(path)
    expect(total is not None, f"{paths[-1]}: no totals")
    return total or 0


async def _count(
    pid: int, prefix: str, one: Callable[[], Awaitable[None]], batches: int, size: int
) -> list[float]:
    """Thousands of instructions per request in each of `batches` batches of `size`."""
    for _ in range(WARM_UP):
        await one()
    samples = []
    for _ in range(batches):
        _control(pid, "-z")
        for _ in range(size):
            await one()
        _control(pid, "-d")
        samples.append(_dumped(prefix) / size / 1000)
    return samples


async def _measure(server: Server, pid: int, prefix: str, batches: int, size: int) -> list[Figure]:
    api = Api(server)
    jobe = Connection(*server.address)
    try:
        await api.noop()
        kernel = await api.create()
        await api.query(kernel)
        _control(pid, "-i", "on")
        runs = _request(PYTHON_RUN)

        async def create_destroy() -> None:
            await api.destroy(await api.create())

        async def jobe_run() -> None:
            await _run(jobe, runs)

        kinds = [
            (f"server instructions: {NOOP}", api.noop),
            ("server instructions: query print(1)", lambda: api.query(kernel)),
            ("server instructions: create + destroy (warm pool)", create_destroy),
            ("server instructions: Jobe python3 run", jobe_run),
        ]
        figures = []
        for i, (name, one) in enumerate(kinds):
            samples = await _count(pid, prefix, one, batches, size)
            baseline = kinds[0][0] if i else None  # each beside the no-op
            figures.append(Figure(name, samples, unit=UNIT, baseline=baseline))
        _control(pid, "-i", "off")
        await api.destroy(kernel)
        return figures
    finally:
        await jobe.close()
        await api.close()


def measure_instructions(tmp: str, batches: int, size: int) -> list[Figure]:
    """The four kinds of request on one server (default settings, the Jobe face on)."""
    data_dir, config = os.path.join(tmp, "counted-data"), os.path.join(tmp, "counted.toml")
    with open(config, "w") as f:
        f.write(JOBE_CONFIG)
    keys = json.loads(
        subprocess.run(
            [os.path.join(VENV_BIN, "sandbox-admin"), "--data-dir", data_dir, "keys", "create",
             "--concurrency", str(UNLIMITED), "--rate-limit", str(UNLIMITED), "--json"],
            check=True, capture_output=True, text=True,
        ).stdout
    )  # fmt: skip
    port, prefix = free_port(), os.path.join(tmp, "callgrind.out")
    launcher = os.path.join(ROOT, "scripts", "benchmark", "callgrind_server.py")
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={prefix}.%p", os.path.join(VENV_BIN, "python"), launcher,
            "--port", str(port), "--data-dir", data_dir, "--config", config]  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    log = os.path.join(tmp, "counted.log")
    with service(argv, f"{endpoint}/v2", log, start_timeout=START_SECONDS) as proc:
        server = Server(proc, endpoint, keys["accessKey"], keys["secretKey"])
        return asyncio.run(_measure(server, proc.pid, f"{prefix}.{proc.pid}", batches, size))
