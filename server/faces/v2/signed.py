"""The signed-request wrapper every v2 endpoint but the public ones goes through.

`signed` checks what the headers say (the Authorization header, the date, an
active key) before reading anything more, reads the body (capped, under the
server's `BodyGate`), verifies the signature (spec §2), counts the request
against the key's rate limit (§3), runs the handler, and turns any `Problem` or
engine error into a problem document. Rate-limit headers go on every response to
a signed request, errors and 429s included (an improvement over the original, §3).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect, HTTPConnection, Request
from starlette.responses import Response

from ...engine.engine import Engine
from ...engine.errors import EngineError
from ...engine.session import Session
from ...engine.store import Keypair
from ..http import (
    AUTHENTICATED_KEYPAIR,
    BadBody,
    BodyTooLarge,
    Caller,
    declared_length,
    read_body,
)
from . import signing
from .problems import Problem, bad_params, from_engine, problem_response

Handler = Callable[[Caller], Awaitable[Response]]
SIGNED_METHOD = "sandbox.signed_method"  # the method the client signed (X-Method-Override)


def engine_of(request: HTTPConnection) -> Engine:
    return request.app.state.engine


def no_content() -> Response:
    return Response(status_code=204, media_type="application/json")


def session_for(caller: Caller) -> Session:
    """The caller's kernel named in the path (404 for unknown or foreign ids); counts
    the call."""
    kernel_id = caller.request.path_params["kernel_id"]
    return engine_of(caller.request).session(caller.keypair, kernel_id)


def _check_version(request: HTTPConnection) -> None:
    """A version header that is not "v<major>.<yyyymmdd>" is a bad request (spec §2.4;
    0.9.x answered 404, corrected to 400). A missing one is the signature's business."""
    for name in signing.VERSION_HEADERS:
        value = request.headers.get(name)
        if value is not None and not signing.VERSION_RE.match(value.strip()):
            raise Problem("generic-bad-request", f"Invalid API version: {name}: {value!r}")


def _signed_path(request: HTTPConnection) -> str:
    path = request.scope["raw_path"].decode("latin-1")
    if request.scope.get("query_string"):
        path += "?" + request.scope["query_string"].decode("latin-1")
    return path


def _claimed_keypair(request: HTTPConnection) -> tuple[signing.Claim, Keypair]:
    """The header checks that need no body: the Authorization header's form, the date,
    the hash, and an active key. An unknown or disabled key gets the same answer as a
    wrong signature."""
    state = request.app.state
    try:
        claim = signing.parse_claim(request.headers, allow_md5=state.v2.allow_md5_signatures)
    except signing.AuthError as e:
        raise Problem(e.kind, e.detail) from None
    if claim is None:
        raise Problem("auth-failed", "Missing authorization header")
    declared, limit = declared_length(request), state.v2.max_body_bytes
    if signing.signs_body(claim) and declared is not None and declared > limit:
        raise Problem("request-too-large", f"at most {limit} bytes")  # for any key alike
    keypair = engine_of(request).store.keys.get(claim.access_key)
    if keypair is None or not keypair.is_active:
        raise Problem("auth-failed")
    return claim, keypair


async def _verified_body(request: Request, claim: signing.Claim, keypair: Keypair) -> bytes:
    """The body, read under the gate's bound, once the signature over it verifies.
    The signed method is the one routed: X-Method-Override's, if it was sent."""
    state = request.app.state
    body = b""
    if signing.signs_body(claim):  # multipart bodies are signed as empty: read later
        try:
            async with state.body_gate.admitted():
                body = await read_body(request, state.v2.max_body_bytes)
        except TimeoutError:
            raise Problem(
                "service-unavailable", "too many requests are sending their bodies"
            ) from None
    method = request.scope.get(SIGNED_METHOD, request.method)
    if not signing.verify(claim, method, _signed_path(request), body, keypair.secret_key):
        raise Problem("auth-failed")
    return body


async def _authenticated_body(request: Request) -> bytes:
    """The body of a request a server layer authenticated (AUTHENTICATED_KEYPAIR):
    read under the same bounds, with nothing to verify; multipart is left to the
    handler, as for signed requests."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        return b""
    try:
        async with request.app.state.body_gate.admitted():
            return await read_body(request, request.app.state.v2.max_body_bytes)
    except TimeoutError:
        raise Problem("service-unavailable", "too many requests are sending their bodies") from None


def authenticated(conn: HTTPConnection) -> Keypair | None:
    """The keypair a server layer vouched for (the web face's session), if any."""
    return conn.scope.get(AUTHENTICATED_KEYPAIR)


def verified_handshake(conn: HTTPConnection) -> Keypair:
    """The caller of a WebSocket handshake, a GET without a body signed like any
    request (the signature travels in its headers), counted against the key's rate
    limit. Problem if it is not signed right."""
    keypair = authenticated(conn)
    if keypair is None:
        _check_version(conn)
        claim, keypair = _claimed_keypair(conn)
        if not signing.verify(claim, "GET", _signed_path(conn), b"", keypair.secret_key):
            raise Problem("auth-failed")
    allowed, _headers = conn.app.state.limiter.hit(keypair.access_key, keypair.rate_limit)
    if not allowed:
        conn.app.state.engine.tally.refused["rate-limit"] += 1
        raise Problem("rate-limit-exceeded")
    return keypair


def checked_date(conn: HTTPConnection) -> None:
    """What an unsigned handshake must still carry, as the 0.9.x manager's middleware
    required of sorna-client 0.9.8's terminal: a version header and a fresh Date."""
    _check_version(conn)
    try:
        signing.check_date(conn.headers)
    except signing.AuthError as e:
        raise Problem(e.kind, e.detail) from None


def signed(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler that needs a verified caller. Everything the headers can tell
    is checked before the body is read: a refusal then leaves the body unread
    (uvicorn drops it as it comes; server.http_guard bounds how long). The endpoint
    keeps the handler's name and attributes (the shapes `takes` declared), which
    the OpenAPI document reads."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        state = request.app.state
        rate_headers: dict[str, str] = {}
        try:
            try:
                keypair = authenticated(request)
                if keypair is not None:
                    body = await _authenticated_body(request)
                else:
                    _check_version(request)
                    claim, keypair = _claimed_keypair(request)
                    body = await _verified_body(request, claim, keypair)
                allowed, rate_headers = state.limiter.hit(keypair.access_key, keypair.rate_limit)
                if not allowed:
                    state.engine.tally.refused["rate-limit"] += 1
                    raise Problem("rate-limit-exceeded")
                response = await handler(Caller(request, keypair, body))
            except EngineError as e:
                raise from_engine(e) from e
            except BadBody as e:
                raise bad_params(str(e)) from e
            except BodyTooLarge as e:
                raise Problem("request-too-large", str(e)) from e
        except Problem as problem:
            response = problem_response(request, problem)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is left to read it
        response.headers.update(rate_headers)
        return response

    return endpoint
