"""The events stream (spec §7.2): a kernel's lifecycle, read-only, over a WebSocket.

DOC-v2 describes it as a GET upgraded to a WebSocket that only the server
writes to, one JSON object per event with `name` and `reason`; no manager ever
implemented it. Here the names are `kernel_started`, `kernel_restarted` and
`kernel_terminated`, the reason a slug as the docs give them ("out-of-memory",
"execution-timeout", "idle-timeout", "user-requested", ...) with the server's
sentence in `detail`. A watcher first gets the events so far (the last few),
then each as it happens; `kernel_terminated` is the last, then the socket
closes (1000). A client message on it closes it (1008): it is read-only.
"""

from __future__ import annotations

import asyncio
from asyncio import FIRST_COMPLETED

from starlette.websockets import WebSocket

from ....engine.lifecycle import TERMINATED
from ....engine.session import Session
from .admission import Kind
from .socket import NORMAL, POLICY, StreamEnd, StreamSocket


def error_frame(message: str) -> dict:
    return {"name": "error", "reason": "error", "detail": message}


def restarting_frame(message: str) -> dict:
    return {"name": "server_restarting", "reason": "server-restart", "detail": message}


async def serve(sock: StreamSocket, session: Session, websocket: WebSocket) -> None:
    with session.lifecycle.watching() as events:
        while True:
            event_task = asyncio.ensure_future(events.get())
            client_task = asyncio.ensure_future(sock.arrival())
            try:
                await asyncio.wait({event_task, client_task}, return_when=FIRST_COMPLETED)
            finally:
                event_task.cancel()
                client_task.cancel()
            if sock.waiting:  # the client left, or sent something (Gone, StreamEnd)
                await sock.receive(timeout=0)
                raise StreamEnd(POLICY, "the events stream is read-only")
            event = event_task.result()
            if event is None:
                raise StreamEnd(POLICY, "this watcher fell too far behind")
            await sock.send({**event.as_json(), "kernelId": session.id})
            if event.name == TERMINATED:
                raise StreamEnd(NORMAL, event.reason)


KIND = Kind("events", serve, error_frame, restarting_frame)
