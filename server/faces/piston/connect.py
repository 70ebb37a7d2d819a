"""Piston's interactive socket, GET /api/v2/connect (docs/reference/piston.md §5).

The client sends `init` (the execute request's fields) within a second, then
`data` frames for stdin and `signal` frames; the server sends `runtime`, then
per stage `stage`, `data` as the program prints and `exit`, and closes with
4999 "Job Completed", or with Piston's close codes for what went wrong (4000
a second init, 4001 no init in time, 4002 after an `error` frame, 4003 data
before init, 4004 data for another stream than stdin, 4005 an unknown signal).

A stage runs as a streamed run of its command in the job's kernel, so output
comes as it is printed; stdin from the client is handed over when the program
reads. Beyond Piston: signals are delivered (SIGINT and SIGQUIT interrupt,
SIGKILL and SIGTERM end the stage; Piston accepts and drops them), and a client
that leaves ends its job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time

from starlette.websockets import WebSocket, WebSocketDisconnect

from sandbox.run_result import RunResult

from ...engine.errors import EngineError
from ...engine.jobs import JobKernel, Jobs, StepLimits
from ..face_access import KeyBusy, Refused
from .endpoints import face_of
from .stages import commands, environment, kernel_memory, signal_name
from .submission import PistonError, StageLimits, Submission, parse

INIT_SECONDS = 1.0
HOLD_SECONDS = 0.25
SIGNALS = {s.name for s in signal.Signals} | {"SIGRTMIN", "SIGRTMAX"}
ENDING = {"SIGKILL", "SIGTERM"}  # end the stage; the others interrupt it
WRITE_FILES = StepLimits(cpu_seconds=5, wall_seconds=10, output_bytes=4096)


class Close(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class Client:
    """The socket's client frames after init, read by a task of their own."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.stdin: asyncio.Queue[str] = asyncio.Queue(maxsize=256)
        self.signals: asyncio.Queue[str] = asyncio.Queue(maxsize=16)
        self.closed: Close | None = None
        self.arrived = asyncio.Event()

    async def read(self) -> None:
        try:
            while True:
                frame = json.loads(await self.websocket.receive_text())
                kind = frame.get("type") if isinstance(frame, dict) else None
                if kind == "init":
                    raise Close(4000, "Already Initialized")
                if kind == "data":
                    if frame.get("stream") != "stdin":
                        raise Close(4004, "Can only write to stdin")
                    if isinstance(frame.get("data"), str):
                        await self.stdin.put(frame["data"])
                elif kind == "signal":
                    if frame.get("signal") not in SIGNALS:
                        raise Close(4005, "Invalid signal")
                    await self.signals.put(frame["signal"])
                self.arrived.set()
        except Close as e:
            self.closed = e
        except (WebSocketDisconnect, RuntimeError, ValueError, KeyError):
            self.closed = Close(1000, "gone")
        self.arrived.set()


async def _init(websocket: WebSocket) -> dict:
    """The init frame, within INIT_SECONDS of the connection (other types are skipped)."""
    deadline = asyncio.get_running_loop().time() + INIT_SECONDS
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                text = await websocket.receive_text()
        except TimeoutError:
            raise Close(4001, "Initialization Timeout") from None
        try:
            frame = json.loads(text)
        except ValueError as e:
            raise PistonError(str(e)) from None
        kind = frame.get("type") if isinstance(frame, dict) else None
        if kind == "init":
            return frame
        if kind in ("data", "signal"):
            raise Close(4003, "Not yet initialized")


async def connect(websocket: WebSocket) -> None:
    face = face_of(websocket)
    try:
        key = face.admit(websocket)
    except Refused as e:
        await websocket.close(1008, e.message)  # before the handshake: a 403
        return
    await websocket.accept()
    engine = websocket.app.state.engine
    try:
        try:
            init = await _init(websocket)
            sub = parse(init, await face.runtimes(), face.settings,
                        engine.settings.limits.max_memory_bytes)  # fmt: skip
            face.access.charge(key)
            async with face.access.slot(key):
                await _job(websocket, engine.jobs, sub)
        except (PistonError, Refused, KeyBusy, EngineError) as e:
            text = getattr(e, "message", None) or getattr(e, "detail", None) or str(e)
            await websocket.send_json({"type": "error", "message": text})
            raise Close(4002, "Notified Error") from None
        raise Close(4999, "Job Completed")
    except Close as e:
        if e.code != 1000:
            with contextlib.suppress(Exception):
                await websocket.close(e.code, e.reason)
    except (WebSocketDisconnect, RuntimeError):
        return


async def _job(websocket: WebSocket, jobs: Jobs, sub: Submission) -> None:
    runtime = sub.installed.runtime
    compile_command, run_command = commands(sub)
    stages = [("run", run_command, sub.run)]
    if runtime.compile:
        stages.insert(0, ("compile", compile_command, sub.compile))
    seconds = sum(limits.timeout_ms for _, _, limits in stages) / 1000
    client = Client(websocket)
    reader = asyncio.create_task(client.read())
    try:
        async with jobs.kernel(runtime.kernel, seconds, kernel_memory(sub)) as job:
            await job.step("true", b"", WRITE_FILES, files=list(sub.files), env=environment(sub))
            await websocket.send_json(
                {"type": "runtime", "language": runtime.language, "version": sub.installed.version}
            )
            for name, command, limits in stages:
                await websocket.send_json({"type": "stage", "stage": name})
                code, sig = await _stage(websocket, job, client, command, limits)
                await websocket.send_json(
                    {"type": "exit", "stage": name, "code": code, "signal": sig}
                )
                if code != 0:
                    break
    finally:
        reader.cancel()
    if client.closed is not None:
        raise client.closed


async def _stage(
    websocket: WebSocket, job: JobKernel, client: Client, command: str, limits: StageLimits
) -> tuple[int | None, str | None]:
    """Run one stage to its end, its deadline or its killing: (code, signal name)."""
    cpu = max(1, round(limits.cpu_time_ms / 1000))
    deadline = time.monotonic() + limits.timeout_ms / 1000
    result = await job.start(f"ulimit -t {cpu}; {command}", HOLD_SECONDS)
    while True:
        for kind, text in result.console:
            if kind in ("stdout", "stderr"):
                await websocket.send_json({"type": "data", "stream": kind, "data": text})
        if result.status == "finished":
            return _code_and_signal(result)
        if client.closed is not None:
            raise client.closed
        if time.monotonic() >= deadline:
            return None, "SIGKILL"  # the kernel goes with the job
        while not client.signals.empty():
            sig = client.signals.get_nowait()
            if sig in ENDING:
                return None, sig
            await job.interrupt()
        if result.status == "waiting-input" and not client.stdin.empty():
            result = await job.give(client.stdin.get_nowait(), HOLD_SECONDS)
        elif result.status == "waiting-input":
            client.arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await client.arrived.wait()
            result = RunResult("waiting-input")
        else:
            result = await job.more(HOLD_SECONDS)


def _code_and_signal(result: RunResult) -> tuple[int | None, str | None]:
    code = result.exit_code
    if code is not None and code > 128:  # the shell's convention for a signal
        return None, signal_name(code - 128)
    return code, None
