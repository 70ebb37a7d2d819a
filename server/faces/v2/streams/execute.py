"""WebSocket execute (spec §7.3): one socket, runs one after another, output as it comes.

The client's first message, and the first after each run, is a run:
`{"mode": "query"|"batch", "code": ..., "options": {...}}`. The server answers
with messages shaped as the HTTP execute result (`status`, `console`,
`exitCode`, `options`, `files`), each sent as soon as the kernel has printed
something (no fixed poll: the engine answers a stream "eagerly", see
Kernel.collect). `waiting-input` is answered by the client's next message, the
input as raw text. A run ends with `finished`; `exec-timeout` ends the kernel
(as over HTTP) and the stream. Messages a client sends ahead wait in order: the
answer to the next prompt, or the next run.

A client that leaves mid-run has its run interrupted, and what is left of it is
taken (Session.abandon), so the kernel is idle for the next client; the kernel
itself lives on.
"""

from __future__ import annotations

import json

from starlette.websockets import WebSocket

from ....engine.session import IDLE, Session
from ..signed import engine_of
from .admission import Kind
from .socket import INVALID, NORMAL, POLICY, Gone, StreamEnd, StreamSocket

MODES = ("query", "batch")
# A silent run is looked at this often (the client gone? the kernel?); output does
# not wait for it. Short enough that a restart or a destroy never waits long for
# the session lock a call holds.
HOLD_SECONDS = 1.0
RUN_FIELDS = {"mode", "code", "options", "runId"}


def error_frame(message: str) -> dict:
    return {"status": "error", "msg": message}


def restarting_frame(message: str) -> dict:
    return {"status": "server-restarting", "msg": message}


def parse_run(text: str) -> tuple[str, str, dict]:
    """mode, code, options of a run message; StreamEnd (1007 not JSON, 1008 not a
    run) naming what is wrong."""
    try:
        data = json.loads(text)
    except ValueError:
        raise StreamEnd(INVALID, "a run must be a JSON object") from None
    if not isinstance(data, dict):
        raise StreamEnd(POLICY, "a run must be a JSON object")
    unknown = sorted(set(data) - RUN_FIELDS)
    if unknown:
        raise StreamEnd(POLICY, f"unknown field {unknown[0]!r}")
    mode, code, options = data.get("mode"), data.get("code", ""), data.get("options")
    if mode not in MODES:
        raise StreamEnd(POLICY, 'mode: required, "query" or "batch"')
    if not isinstance(code, str):
        raise StreamEnd(POLICY, "code: expected a string")
    if options is not None and not isinstance(options, dict):
        raise StreamEnd(POLICY, "options: expected an object or null")
    return mode, code, options or {}


async def _next_message(sock: StreamSocket, session: Session) -> str:
    """The client's next message; the kernel going meanwhile ends the stream."""
    while True:
        text = await sock.receive(timeout=HOLD_SECONDS)
        if text is not None:
            return text
        await session.check_alive()  # KernelNotFound once its watcher destroyed it
        if session.ended:
            raise StreamEnd(NORMAL, f"the kernel is gone: {session.ended}")


async def serve(sock: StreamSocket, session: Session, websocket: WebSocket) -> None:
    while True:
        mode, code, options = parse_run(await _next_message(sock, session))
        if session.state != IDLE:  # another client's run (over HTTP) is active
            raise StreamEnd(POLICY, "another run is active on this kernel")
        session.touch()  # a run is a query, as an HTTP execute call is
        try:
            await _run(sock, session, websocket, mode, code, options)
        except (Gone, StreamEnd):  # nobody will read the rest of the run
            await session.abandon()
            raise


async def _run(
    sock: StreamSocket, session: Session, websocket: WebSocket, mode: str, code: str, options: dict
) -> None:
    engine = engine_of(websocket)

    def gone() -> bool:
        return sock.ended

    result, _ = await engine.execute(
        session, mode, code, options, None, HOLD_SECONDS, eager=True, gone=gone
    )
    while True:
        session.keep_alive()
        sock.check()
        if result.console or result.status != "continued":
            await sock.send(
                {
                    "status": result.status,
                    "console": result.console,
                    "exitCode": result.exit_code,
                    "options": result.options,
                    "files": [],
                }
            )
        if result.status == "finished":
            return
        if result.status == "exec-timeout":  # the docs' promise: the kernel is destroyed
            await engine.destroy(session, reason="exec timeout")
            raise StreamEnd(NORMAL, "exec timeout: the kernel was destroyed")
        if result.status == "waiting-input":
            answer = await _next_message(sock, session)
            result, _ = await engine.execute(
                session, "input", answer, {}, None, HOLD_SECONDS, eager=True, gone=gone
            )
        else:
            result, _ = await engine.execute(
                session, "continue", "", {}, None, HOLD_SECONDS, eager=True, gone=gone
            )


KIND = Kind("execute", serve, error_frame, restarting_frame)
