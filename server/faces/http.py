"""HTTP plumbing every face shares: the verified request, reading bodies within
bounds, and JSON responses. Faces import this module; none imports another face.

Bodies read before a request is verified are bounded by `BodyGate`: a signature
covers its body's hash, so the body of a request that names a known access key
must be read before the request can be verified, and whoever knows an access key
(it travels in every request) could make the server buffer bodies. The gate lets
at most `limit` such reads run at once. A new one evicts the oldest: a client that
sends its body promptly (every real client writes it right after its headers)
finishes within a moment and is never the oldest, while reads that dribble are
dropped.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from types import TracebackType

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from ..engine.store import Keypair

# The ASGI scope key under which a layer that authenticated the caller some other
# way (the web face's session cookie) hands the v2 face the caller's active
# keypair in place of a signature. Only server code writes scope keys: a client
# cannot set it.
AUTHENTICATED_KEYPAIR = "sandbox.authenticated_keypair"


class BadBody(ValueError):
    """The body is not what the endpoint reads (the message says why)."""


class BodyTooLarge(ValueError):
    """The body is (or says it is) larger than `limit` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} bytes")
        self.limit = limit


@dataclass
class Caller:
    """A verified request: who made it (an active keypair) and the body it carried."""

    request: Request
    keypair: Keypair
    body: bytes

    @property
    def access_key(self) -> str:
        return self.keypair.access_key

    def json(self) -> dict:
        """The body as a JSON object; empty means {}. BadBody naming why otherwise."""
        return json_object(self.body)


def json_object(body: bytes) -> dict:
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise BadBody(f"Malformed body: {e}") from None
    if not isinstance(data, dict):
        raise BadBody("Malformed body: expected a JSON object")
    return data


def json_response(data: object, status: int = 200) -> Response:
    return Response(json.dumps(data), status_code=status, media_type="application/json")


def declared_length(request: HTTPConnection) -> int | None:
    """The Content-Length the client sent, if it is a number."""
    declared = request.headers.get("content-length", "")
    return int(declared) if declared.isdigit() else None


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, BodyTooLarge as soon as it (or its Content-Length) passes `limit`."""
    declared = declared_length(request)
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


class BodyGate:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._reading: dict[asyncio.Timeout, None] = {}  # insertion-ordered: oldest first

    def __len__(self) -> int:
        return len(self._reading)

    def admitted(self) -> Place:
        """A place to hold while a block reads a body: `async with gate.admitted():`.
        TimeoutError out of the block if a newer read evicts this one."""
        return Place(self._reading, self.limit)


class Place:
    """One read's place in a BodyGate (a class, not a generator: it is on the path of
    every signed request)."""

    __slots__ = ("_reading", "_limit", "_timeout")

    def __init__(self, reading: dict[asyncio.Timeout, None], limit: int) -> None:
        self._reading = reading
        self._limit = limit
        self._timeout = asyncio.timeout(None)

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()
        while len(self._reading) >= self._limit:
            oldest = next(iter(self._reading))
            del self._reading[oldest]
            oldest.reschedule(asyncio.get_running_loop().time())  # raises at its await
        self._reading[self._timeout] = None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._reading.pop(self._timeout, None)
        return await self._timeout.__aexit__(exc_type, exc, tb)
