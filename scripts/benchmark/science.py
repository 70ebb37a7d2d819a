"""The scientific stack in a kernel: how long `import numpy, pandas, matplotlib.pyplot`
takes in a fresh python3 kernel (beside the host's python3 doing the same), and each
kernel's unique memory after it (beside the same kernels' before it); on a server
whose zygote pre-imports them (the default: sandbox/preimport.py) and on one that
does not. Measured on servers without a warm pool, so that every kernel under the
spawner is one of these."""

from __future__ import annotations

import json
import subprocess

from .api import Api
from .checks import expect
from .figures import Figure
from .pagemap import kernel_memory
from .services import Server, spawner_of

IMPORT = "import numpy, pandas, matplotlib.pyplot"
IMPORT_TIME = f"{IMPORT} in a kernel"
HOST_IMPORT_TIME = f"{IMPORT} in host python3"
BEFORE, AFTER = "kernel unique memory, idle", "kernel unique memory, after that import"
NO_PREIMPORT = ", no pre-import"
NO_PREIMPORT_CONFIG = 'preimport = ""\n'
# prints the import's own time in ms, so neither an interpreter's start nor a round
# trip is counted
CODE = f"import time\nt = time.perf_counter()\n{IMPORT}\nprint((time.perf_counter() - t) * 1000)"


def _host_import(runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        out = subprocess.run(
            ["/usr/bin/python3", "-c", CODE], capture_output=True, text=True, check=True,
            env={"MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        samples.append(float(out.stdout))
    return samples


async def measure_science(server: Server, runs: int, preimported: bool) -> list[Figure]:
    """The figures on `server`; `preimported` names the server's setting."""
    api = Api(server)
    ids = []
    try:
        for _ in range(runs):
            ids.append(await api.create())
        await api.execute(ids[0], json.dumps({"mode": "query", "code": "pass"}).encode())
        before, _ = kernel_memory(spawner_of(server))
        expect(len(before) == runs, f"{runs} kernels, but {len(before)} under the spawner")
        body = json.dumps({"mode": "query", "code": CODE}).encode()
        samples = [float(await api.execute(kernel_id, body)) for kernel_id in ids]
        after, _ = kernel_memory(spawner_of(server))
    finally:
        for kernel_id in ids:
            await api.destroy(kernel_id)
        await api.close()
    if not preimported:
        return [
            Figure(HOST_IMPORT_TIME, _host_import(runs)),
            Figure(IMPORT_TIME + NO_PREIMPORT, samples, baseline=HOST_IMPORT_TIME),
            Figure(BEFORE + NO_PREIMPORT, before, unit="MiB"),
            Figure(AFTER + NO_PREIMPORT, after, unit="MiB", baseline=BEFORE + NO_PREIMPORT),
        ]
    return [
        Figure(IMPORT_TIME, samples, baseline=IMPORT_TIME + NO_PREIMPORT),
        Figure(BEFORE, before, unit="MiB", baseline=BEFORE + NO_PREIMPORT),
        Figure(AFTER, after, unit="MiB", baseline=AFTER + NO_PREIMPORT),
    ]
