"""The streaming and log endpoints (spec §5.9, §7.1-7.3), which this server does not
offer: 503 `not-implemented`, as every v2/v3 manager answered for the events stream,
so that a client learns so instead of a bare 404. The kernel must still be the
caller's (404 otherwise), as it would be for an implemented endpoint.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from ..http import Caller
from .problems import Problem
from .signed import session_for, signed

UNSUPPORTED = {
    "stream/kernel/{kernel_id}/pty": "terminal streams",
    "stream/kernel/{kernel_id}/events": "the events stream",
    "stream/kernel/{kernel_id}/ws": "WebSocket execution",
    "stream/kernel/{kernel_id}/execute": "WebSocket execution",
    "kernel/{kernel_id}/logs": "kernel logs",
}


def _not_implemented(what: str):
    @signed
    async def endpoint(caller: Caller) -> Response:
        session_for(caller)
        raise Problem("not-implemented", f"{what}: not offered here; use execute")

    return endpoint


def routes(prefix: str) -> list[Route]:
    return [
        Route(f"{prefix}/{path}", _not_implemented(what), methods=["GET"])
        for path, what in UNSUPPORTED.items()
    ]
