"""The stream figures, over a real WebSocket (the `websockets` package's client):
print(1) run over the execute stream, beside the same query over HTTP; a key typed
into a terminal until its echo comes back, beside a WebSocket ping on the same
socket (what the pty relay adds to the transport)."""

from __future__ import annotations

import base64
import json
import time

from websockets.asyncio.client import ClientConnection, connect

from .api import QUERY, Api
from .checks import expect
from .figures import KEY_ECHO, QUERY_RT, STREAM_RT, WS_PING, Figure, ms_since

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


def _keys(text: str) -> str:
    return json.dumps({"type": "stdin", "chars": base64.b64encode(text.encode()).decode()})


async def _read_until(ws: ClientConnection, marker: bytes, seen: bytes = b"") -> bytes:
    """Read the terminal until `marker` has come; what came after it."""
    while marker not in seen:
        message = json.loads(await ws.recv())
        expect(message["type"] == "out", f"terminal: {message}")
        seen += base64.b64decode(message["data"])
    return seen.partition(marker)[2]


async def _clear_line(ws: ClientConnection) -> None:
    """Drop the typed line (ctrl-U) and wait for a marker and the next prompt."""
    await ws.send(_keys("\x15echo '<'M'>'\n"))
    rest = await _read_until(ws, b"<M>")
    await _read_until(ws, b"> ", rest)


async def measure_terminal(api: Api, runs: int) -> list[Figure]:
    """One key typed into bash until its echo arrives, `runs` times (the line is
    cleared every 50 keys), and a WebSocket ping on the same socket."""
    kernel_id = await api.create()
    try:
        ws = await _stream(api, f"/v2/stream/kernel/{kernel_id}/pty")
        try:
            await ws.send(json.dumps({"type": "resize", "rows": 50, "cols": 200}))
            await ws.send(_keys("PS1='> '\n"))  # a prompt without the typed letter
            await _clear_line(ws)
            echoes, pings = [], []
            for i in range(runs):
                t = time.perf_counter()
                await ws.send(_keys("q"))
                await _read_until(ws, b"q")
                echoes.append(ms_since(t))
                if i % 50 == 49:
                    await _clear_line(ws)
                t = time.perf_counter()
                await (await ws.ping())
                pings.append(ms_since(t))
        finally:
            await ws.close()
    finally:
        await api.destroy(kernel_id)
    return [Figure(WS_PING, pings), Figure(KEY_ECHO, echoes, baseline=WS_PING)]
