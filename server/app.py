"""The Starlette application: routes, the signed-request wrapper, and error mapping.

Every signed endpoint goes through `signed`: check what the headers say
(the Authorization header, the date, an active key) before reading anything
more, read the body (capped, under `BodyGate`), verify the signature (spec §2),
count the request against the key's rate limit (§3), run the handler, and turn
any `Problem` into a problem document. Rate-limit
headers go on every response to a signed request, errors and 429s included
(an improvement over the original, spec §3).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.spawner_client import SpawnerClient

from . import auth, ratelimit
from .body_gate import BodyGate
from .config import ServerConfig
from .errors import Problem, bad_params, problem_response
from .folders import FolderStore
from .registry import Registry
from .store import Keypair, KeyStore

log = logging.getLogger("sandbox.server")

API_VERSION = "v2.20170315"
SERVER_HEADER = f"BackendAI-API/{API_VERSION}"


@dataclass
class Call:
    """A verified request: who made it and what it carried."""

    request: Request
    keypair: Keypair
    body: bytes

    @property
    def access_key(self) -> str:
        return self.keypair.access_key

    def json(self) -> dict:
        """The body as a JSON object; empty means {}. Bad JSON is a 400 naming why."""
        if not self.body.strip():
            return {}
        try:
            data = json.loads(self.body)
        except (UnicodeDecodeError, ValueError) as e:
            raise bad_params(f"Malformed body: {e}") from None
        if not isinstance(data, dict):
            raise bad_params("Malformed body: expected a JSON object")
        return data


Handler = Callable[[Call], Awaitable[Response]]


def json_response(data: object, status: int = 200) -> Response:
    return Response(json.dumps(data), status_code=status, media_type="application/json")


def no_content() -> Response:
    return Response(status_code=204, media_type="application/json")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Problem("request-too-large", f"at most {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem("request-too-large", f"at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_version(request: Request) -> None:
    """A version header that is not "v<major>.<yyyymmdd>" is a bad request (spec §2.4;
    0.9.x answered 404, corrected to 400). A missing one is the signature's business."""
    for name in auth.VERSION_HEADERS:
        value = request.headers.get(name)
        if value is not None and not auth.VERSION_RE.match(value.strip()):
            raise Problem("generic-bad-request", f"Invalid API version: {name}: {value!r}")


def _signed_path(request: Request) -> str:
    path = request.scope["raw_path"].decode("latin-1")
    if request.scope.get("query_string"):
        path += "?" + request.scope["query_string"].decode("latin-1")
    return path


def _claimed_keypair(request: Request) -> tuple[auth.Claim, Keypair]:
    """The header checks that need no body: the Authorization header's form, the date,
    the hash, and an active key. An unknown or disabled key gets the same answer as a
    wrong signature."""
    state = request.app.state
    try:
        claim = auth.parse_claim(request.headers, allow_md5=state.config.allow_md5_signatures)
    except auth.AuthError as e:
        raise Problem(e.kind, e.detail) from None
    if claim is None:
        raise Problem("auth-failed", "Missing authorization header")
    declared = request.headers.get("content-length", "")
    limit = state.config.max_body_bytes
    if auth.signs_body(claim) and declared.isdigit() and int(declared) > limit:
        raise Problem("request-too-large", f"at most {limit} bytes")  # for any key alike
    keypair = state.store.get(claim.access_key)
    if keypair is None or not keypair.is_active:
        raise Problem("auth-failed")
    return claim, keypair


async def _verified_body(request: Request, claim: auth.Claim, keypair: Keypair) -> bytes:
    """The body, read under the gate's bound, once the signature over it verifies.
    The signed method is the one routed: X-Method-Override's, if it was sent."""
    state = request.app.state
    body = b""
    if auth.signs_body(claim):  # multipart bodies are signed as empty: read later
        try:
            async with state.body_gate.admitted():
                body = await read_body(request, state.config.max_body_bytes)
        except TimeoutError:
            raise Problem(
                "service-unavailable", "too many requests are sending their bodies"
            ) from None
    method = request.scope.get(SIGNED_METHOD, request.method)
    if not auth.verify(claim, method, _signed_path(request), body, keypair.secret_key):
        raise Problem("auth-failed")
    return body


def signed(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler that needs a verified caller. Everything the headers can tell
    is checked before the body is read: a refusal then leaves the body unread
    (uvicorn drops it as it comes; `http_guard` bounds how long)."""

    async def endpoint(request: Request) -> Response:
        state = request.app.state
        rate_headers: dict[str, str] = {}
        try:
            _check_version(request)
            claim, keypair = _claimed_keypair(request)
            body = await _verified_body(request, claim, keypair)
            allowed, rate_headers = state.limiter.hit(keypair.access_key, keypair.rate_limit)
            if not allowed:
                raise Problem("rate-limit-exceeded")
            response = await handler(Call(request, keypair, body))
        except Problem as problem:
            response = problem_response(request, problem)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is left to read it
        response.headers.update(rate_headers)
        return response

    return endpoint


# -- public endpoints ----------------------------------------------------------------


async def version(request: Request) -> Response:
    response = json_response({"version": API_VERSION})
    response.headers.update(ratelimit.PUBLIC_HEADERS)
    return response


@signed
async def authorize(call: Call) -> Response:
    data = call.json()
    return json_response({"authorized": "yes", "echo": data.get("echo")})


# -- errors outside handlers ------------------------------------------------------------


async def http_error(request: Request, exc: HTTPException) -> Response:
    kind = {404: "generic-not-found", 405: "method-not-allowed"}.get(
        exc.status_code, "generic-bad-request"
    )
    return problem_response(request, Problem(kind))


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(request, Problem("internal-server-error"))


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


SIGNED_METHOD = "sandbox.signed_method"
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


def create_app(config: ServerConfig) -> Starlette:
    from .routes import api_routes

    routes = [Route(f"/v{n}", version, methods=["GET"]) for n in (1, 2, 3)]
    for prefix in ("/v2", "/v3", "/v1"):  # matched in order: the clients' /v2 first
        routes.append(Route(f"{prefix}/authorize", authorize, methods=["GET", "POST"]))
        routes += api_routes(prefix)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        store = KeyStore(config.database_path)
        app.state.config = config
        app.state.store = store
        app.state.folders = FolderStore(config.database_path, config.folders_path)
        app.state.limiter = ratelimit.RateLimiter()
        app.state.body_gate = BodyGate(config.max_unverified_bodies)
        app.state.spawner = await SpawnerClient.start(
            spares=config.spare_processes, uids=config.uid_range
        )
        app.state.registry = Registry(app.state.spawner, config)
        app.state.registry.start()
        try:
            yield
        finally:
            await app.state.registry.close()
            await app.state.spawner.close()
            app.state.folders.close()
            store.close()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.add_middleware(MethodOverride)
    app.add_middleware(ResponseHeaders)
    return app
