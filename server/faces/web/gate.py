"""The page's way into the API: `<prefix>/web/v2/...` answered by the v2 API as the
signed-in browser's key.

An ASGI layer in front of the router: a request under `<prefix>/web/` with a live
session (sessions.py) and, if it changes state, the session's CSRF token (a
WebSocket handshake: the page's own Origin) is routed as `/v2/...`, with the
session's keypair in the ASGI scope under `AUTHENTICATED_KEYPAIR`, which the v2
face takes in place of a signature. Everything else about the request is the
API's: ownership of kernels, limits, rate limits, errors. Nothing outside /v2 is
reachable this way, and a cookie sent to /v2 itself counts for nothing.

A stream lives longer than a request: the gate looks at its session again every
WATCH_SECONDS, and once the session has ended (signed out, expired, its key
disabled) the stream sees its client leave, as if the browser had closed it,
and the browser gets a close with 1008.
"""

from __future__ import annotations

import asyncio

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from ..http import AUTHENTICATED_KEYPAIR
from . import sessions
from .problems import forbidden, not_signed_in, problem
from .settings import WebSettings

WATCH_SECONDS = 2.0
POLICY = 1008  # the WebSocket close code for a policy violation: the session ended


class ApiGate:
    def __init__(self, app: ASGIApp, settings: WebSettings) -> None:
        self.app = app
        self.prefix = settings.page_prefix + "/web"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not scope["path"].startswith(
            self.prefix + "/"
        ):
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        target = scope["path"][len(self.prefix) :]
        denial = None
        who = sessions.signed_in(conn)
        if not target.startswith("/v2/"):
            denial = problem(404, "generic-not-found", "Not found", "the page reaches /v2 only")
        elif who is None:
            denial = not_signed_in()
        elif scope["type"] == "websocket":
            if not sessions.same_origin(conn, required=True):
                denial = forbidden("a stream must be opened from the page's own origin")
        elif sessions.changes_state(conn) and not (
            sessions.same_origin(conn, required=False) and sessions.csrf_ok(conn, who)
        ):
            denial = forbidden("missing or wrong X-CSRF-Token (reload the page)")
        if denial is not None:
            if scope["type"] == "websocket":
                await WebSocket(scope, receive, send).send_denial_response(denial)
            else:
                await denial(scope, receive, send)
            return
        assert who is not None
        raw = scope.get("raw_path") or scope["path"].encode()
        scope = {
            **scope,
            "path": target,
            "raw_path": raw[len(self.prefix) :],
            AUTHENTICATED_KEYPAIR: who.keypair,
        }
        if scope["type"] == "websocket":
            await _while_signed_in(self.app, scope, receive, send, conn)
        else:
            await self.app(scope, receive, send)


async def _while_signed_in(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, conn: HTTPConnection
) -> None:
    """Serve a stream until it ends or its session does (see the module's docstring)."""
    ended = asyncio.Event()
    closed = False
    waiting: asyncio.Future | None = None  # the client's next message, once asked for

    async def watch() -> None:
        while sessions.signed_in(conn) is not None:
            await asyncio.sleep(WATCH_SECONDS)
        ended.set()

    async def receive_while_signed_in() -> Message:
        nonlocal waiting
        if not ended.is_set():
            waiting = waiting or asyncio.ensure_future(receive())
            end = asyncio.ensure_future(ended.wait())
            await asyncio.wait({waiting, end}, return_when=asyncio.FIRST_COMPLETED)
            end.cancel()
            if waiting.done():
                message, waiting = waiting.result(), None
                return message
        return {"type": "websocket.disconnect", "code": POLICY}

    async def send_noting_close(message: Message) -> None:
        nonlocal closed
        closed = closed or message["type"] in ("websocket.close", "websocket.http.response.start")
        await send(message)

    watcher = asyncio.create_task(watch())
    try:
        await app(scope, receive_while_signed_in, send_noting_close)
        if ended.is_set() and not closed:
            await send({"type": "websocket.close", "code": POLICY, "reason": "signed out"})
    finally:
        watcher.cancel()
        if waiting is not None:
            waiting.cancel()
