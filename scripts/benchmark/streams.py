"""The stream figures, over a real WebSocket (the `websockets` package's client):
print(1) run over the execute stream, beside the same query over HTTP."""

from __future__ import annotations

import json
import time

from websockets.asyncio.client import ClientConnection, connect

from .api import QUERY, Api
from .checks import expect
from .figures import QUERY_RT, STREAM_RT, Figure, ms_since

RUN = json.dumps(QUERY)


async def _stream(api: Api, path: str) -> ClientConnection:
    host, port = api.address
    headers = api.signer.headers("GET", path)
    return await connect(f"ws://{host}:{port}{path}", additional_headers=headers)


async def _run_print(ws: ClientConnection) -> None:
    """Send print(1) and read to its finished message, checking what it printed."""
    await ws.send(RUN)
    printed = []
    while True:
        message = json.loads(await ws.recv())
        printed += [text for kind, text in message["console"] if kind == "stdout"]
        if message["status"] == "finished":
            break
        expect(message["status"] == "continued", f"stream run: {message}")
    expect("".join(printed) == "1\n", f"print(1) printed {printed!r}")


async def measure_streams(api: Api, runs: int) -> list[Figure]:
    """print(1) run to finished over one open execute stream, `runs` times."""
    kernel_id = await api.create()
    try:
        ws = await _stream(api, f"/v2/stream/kernel/{kernel_id}/execute")
        try:
            for _ in range(10):  # warm
                await _run_print(ws)
            samples = []
            for _ in range(runs):
                t = time.perf_counter()
                await _run_print(ws)
                samples.append(ms_since(t))
        finally:
            await ws.close()
    finally:
        await api.destroy(kernel_id)
    return [Figure(STREAM_RT, samples, baseline=QUERY_RT)]
