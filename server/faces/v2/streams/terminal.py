"""The terminal (spec §7.1): a shell on a real pty inside the kernel, over a WebSocket.

Client messages, JSON text: `{"type": "stdin", "chars": <base64>}`,
`{"type": "resize", "rows", "cols"}`, `{"type": "ping"}` (keeps the kernel from
idling out) and `{"type": "restart"}` (restarts the kernel, as PATCH does; the
terminal goes on with a shell in the new kernel). Server messages:
`{"type": "out", "data": <base64 of the pty's bytes>}` and
`{"type": "error", "data": <text>}`.

The shell is the kernel's own process (engine.open_terminal: the kernel's
namespaces, cgroup, seccomp, uid and /home/work). `?shell=python` gives a python3
kernel's interactive interpreter instead of bash. When the shell exits (`exit`),
a new one starts, as a terminal window that reopens, after a line that says so;
one that keeps dying at once ends the stream. Closing the socket ends the shell
(and what it started), never the kernel; a second terminal on a kernel is a
second shell.

Output is sent as it comes; a client that does not read holds it in the kernel's
bounded buffers (its programs then block in write()), never in the server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import time

from starlette.websockets import WebSocket

from ....engine.session import Session
from ..signed import engine_of
from .admission import Kind
from .socket import INVALID, POLICY, StreamEnd, StreamSocket

SHELLS = ("bash", "python")
MAX_SIZE = 1000  # rows or columns a resize may ask for
QUICK_DEATH_SECONDS = 1.0  # a shell that exits sooner than this...
QUICK_DEATHS = 3  # ...this many times in a row ends the stream


def error_frame(message: str) -> dict:
    return {"type": "error", "data": message}


def restarting_frame(message: str) -> dict:
    return {"type": "error", "data": message}


def _size(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIZE:
        raise StreamEnd(POLICY, f"resize: {name} must be an integer from 1 to {MAX_SIZE}")
    return value


def parse_message(text: str) -> dict:
    """A client message, checked: StreamEnd 1007 (not JSON, bad base64) or 1008
    (not an object, an unknown type, a bad field) naming what is wrong."""
    try:
        data = json.loads(text)
    except ValueError:
        raise StreamEnd(INVALID, "a message must be a JSON object") from None
    if not isinstance(data, dict):
        raise StreamEnd(POLICY, "a message must be a JSON object")
    kind = data.get("type")
    if kind == "stdin":
        chars = data.get("chars")
        if not isinstance(chars, str):
            raise StreamEnd(POLICY, "stdin: chars must be a base64 string")
        try:
            return {"type": "stdin", "data": base64.b64decode(chars, validate=True)}
        except (binascii.Error, ValueError):
            raise StreamEnd(INVALID, "stdin: chars is not valid base64") from None
    if kind == "resize":
        return {"type": "resize", "rows": _size(data.get("rows"), "rows"),
                "cols": _size(data.get("cols"), "cols")}  # fmt: skip
    if kind in ("ping", "restart"):
        return {"type": kind}
    raise StreamEnd(POLICY, f"unknown message type {str(kind)[:40]!r}")


def _shell_of(websocket: WebSocket) -> str:
    shell = websocket.query_params.get("shell", "bash")
    if shell not in SHELLS:
        raise StreamEnd(POLICY, f"shell: one of {', '.join(SHELLS)}")
    return shell


def _exit_code(status: int | None) -> str:
    """A wait status as a shell tells it: the exit code, or 128 + the signal."""
    if status is None or status < 0:
        return "it could not start"
    if os.WIFSIGNALED(status):
        return str(128 + os.WTERMSIG(status))
    return str(os.WEXITSTATUS(status))


class _Pty:
    """The stream's current shell, and the task that sends what it prints."""

    def __init__(self, sock: StreamSocket, session: Session, websocket: WebSocket) -> None:
        self.sock, self.session, self.websocket = sock, session, websocket
        self.engine = engine_of(websocket)
        self.shell = _shell_of(websocket)
        self.rows, self.cols = 24, 80
        self.terminal = None
        self.pump: asyncio.Task | None = None
        self.quick_deaths = 0

    async def open(self) -> None:
        self.terminal = await self.engine.open_terminal(
            self.session, rows=self.rows, cols=self.cols, shell=self.shell
        )
        self.started = time.monotonic()
        self.pump = asyncio.create_task(self._pump(self.terminal))

    async def _pump(self, terminal) -> None:
        while True:
            data = await terminal.read()
            if data is None:
                return
            self.session.keep_alive()
            await self.sock.send({"type": "out", "data": base64.b64encode(data).decode()})

    async def close(self) -> None:
        """End the shell, then the pump: a closed terminal's read() returns None, so
        the pump ends even if its cancellation is lost."""
        if self.terminal is not None:
            await self.terminal.close()
        if self.pump is not None:
            self.pump.cancel()
            await asyncio.wait({self.pump})  # its own end (Gone, a failed send) is moot now
            if not self.pump.cancelled():
                self.pump.exception()
        self.terminal, self.pump = None, None

    async def reopen_if_exited(self) -> None:
        """A shell that exited gives way to a new one (after the last of its output)."""
        if self.pump is None or not self.pump.done():
            return
        self.pump.result()  # Gone or StreamEnd from a send: the stream ends
        lived = time.monotonic() - self.started
        self.quick_deaths = self.quick_deaths + 1 if lived < QUICK_DEATH_SECONDS else 0
        if self.quick_deaths >= QUICK_DEATHS:
            raise StreamEnd(POLICY, "the shell keeps exiting at once")
        await self.session.check_alive()  # KernelNotFound once the kernel is gone
        status = self.terminal.exit_status if self.terminal is not None else None
        await self.close()
        await self.open()
        note = f"\r\n[the shell exited ({_exit_code(status)}); a new one started]\r\n"
        await self.sock.send({"type": "out", "data": base64.b64encode(note.encode()).decode()})


async def serve(sock: StreamSocket, session: Session, websocket: WebSocket) -> None:
    pty = _Pty(sock, session, websocket)
    await pty.open()
    try:
        while True:
            arrived = asyncio.ensure_future(sock.arrival())
            try:
                await asyncio.wait({arrived, pty.pump}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                arrived.cancel()
            await pty.reopen_if_exited()
            if not sock.waiting:
                continue
            message = parse_message(await sock.receive(timeout=0))
            if message["type"] == "stdin":
                await pty.terminal.write(message["data"])
            elif message["type"] == "resize":
                pty.rows, pty.cols = message["rows"], message["cols"]
                await pty.terminal.resize(pty.rows, pty.cols)
            elif message["type"] == "ping":
                session.keep_alive()
            else:  # restart: the shell dies with the kernel; a new one opens in the new
                await pty.close()
                await engine_of(websocket).restart(session)
                await pty.open()
    finally:
        await pty.close()


KIND = Kind("pty", serve, error_frame, restarting_frame, unsigned=True)
