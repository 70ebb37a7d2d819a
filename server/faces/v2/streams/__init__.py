"""The v2 streaming API over WebSockets (spec §7): execute, the terminal, events.

Each kind answers at `/stream/kernel/:id/<kind>` under every API prefix and
without one (18.12 clients), and at `/stream/session/:id/<kind>` (newer
Backend.AI clients name the kernel a session). `ws` is DOC-v3's name for the
execute stream. A plain GET (no upgrade) on these paths is a 400 that says so.

admission.py lets streams in and counts them; socket.py is the WebSocket with
its bounds and close codes; one module per kind serves it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from ..problems import Problem, problem_response
from . import events, execute, terminal
from .admission import OpenStreams, endpoint

__all__ = ["OpenStreams", "routes"]

KINDS = {
    "execute": execute.KIND,
    "ws": execute.KIND,
    "pty": terminal.KIND,
    "events": events.KIND,
}


async def _not_upgraded(request: Request) -> Response:
    detail = "a WebSocket endpoint: connect with an Upgrade: websocket handshake"
    return problem_response(request, Problem("generic-bad-request", detail))


def routes(prefix: str) -> list[BaseRoute]:
    found: list[BaseRoute] = []
    for noun in ("kernel", "session"):
        for path, kind in KINDS.items():
            full = f"{prefix}/stream/{noun}/{{kernel_id}}/{path}"
            found.append(WebSocketRoute(full, endpoint(kind)))
            found.append(Route(full, _not_upgraded, methods=["GET"]))
    return found
