"""The Piston face: API v2 of engineer-man/piston (runtimes, execute, the
interactive connect socket), which chat bots and classroom tools call, served by
this server's engine: each submission in a kernel of its own, destroyed after.
Off unless enabled (`[faces] enabled`, `--enable piston`)."""

from starlette.routing import BaseRoute, Route, WebSocketRoute

from .connect import connect
from .endpoints import (
    EVERY_METHOD,
    PREFIX,
    PistonFace,
    content_type_gate,
    get_runtimes,
    post_execute,
)

__all__ = ["PREFIX", "PistonFace", "routes"]


def routes() -> list[BaseRoute]:
    return [
        Route(f"{PREFIX}/runtimes", get_runtimes, methods=["GET"]),
        Route(f"{PREFIX}/execute", post_execute, methods=["POST"]),
        WebSocketRoute(f"{PREFIX}/connect", connect),
        Route(f"{PREFIX}/{{rest:path}}", content_type_gate, methods=EVERY_METHOD),
    ]
