"""ASGI layers the v2 clients rely on: the Server header and Content-Type/Length on
every response (sorna-client 0.9.8 reads them unconditionally), and
X-Method-Override ([v3], spec §1)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .problems import Problem, problem_response
from .signed import SIGNED_METHOD

API_VERSION = "v2.20170315"
SERVER_HEADER = f"BackendAI-API/{API_VERSION}"


class ResponseHeaders:
    """ASGI layer: a Server header everywhere, and Content-Type/Length even on a 204
    (sorna-client 0.9.8 reads them unconditionally)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"server"]
                names = {k for k, _ in headers}
                headers.append((b"server", SERVER_HEADER.encode()))
                if b"content-length" not in names:
                    headers.append((b"content-length", b"0"))
                if b"content-type" not in names:
                    headers.append((b"content-type", b"application/json"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


OVERRIDABLE = {"GET", "PUT", "PATCH", "DELETE", "REPORT"}


class MethodOverride:
    """ASGI layer: `X-Method-Override: M` on a POST routes it as M ([v3], spec §1).
    REPORT, DOC-v3's "GET with a JSON body", is routed as GET. The signature must
    cover M as sent (as the Backend.AI manager verified it), never the POST: a
    captured POST does not replay as a DELETE. An M that cannot be routed is a 400."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            for name, value in scope.get("headers", []):
                if name == b"x-method-override":
                    method = value.decode("latin-1").strip().upper()
                    if method not in OVERRIDABLE:
                        detail = f"X-Method-Override: not one of {sorted(OVERRIDABLE)}"
                        problem = Problem("generic-bad-request", detail)
                        await problem_response(Request(scope), problem)(scope, receive, send)
                        return
                    target = "GET" if method == "REPORT" else method
                    scope = {**scope, "method": target, SIGNED_METHOD: method}
                    break
        await self.app(scope, receive, send)
