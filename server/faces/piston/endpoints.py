"""Piston's API v2 routes (docs/reference/piston.md §0-4): GET /api/v2/runtimes,
POST /api/v2/execute, and the connect socket (connect.py).

Errors are `{"message": ...}` with Piston's statuses: 400 for a bad request, 415
for a POST that is not application/json, 404 for anything else under /api/v2.
Beyond Piston: a key (`Authorization: <key>` or `Bearer <key>`) from clients
outside the key-less networks, 413 for a body over the limit, 429 past a key's
rate or concurrency, 503 when the server's job queue is full.
"""

from __future__ import annotations

import asyncio
import json

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from ...engine.errors import EngineError, NoCapacity, QuotaExceeded
from ...engine.jobs import Overloaded
from ...engine.store import FaceKey, FaceKeyRecords
from ..face_access import FaceAccess, KeyBusy, Refused
from ..http import BodyTooLarge, json_response, read_body
from . import runtimes as piston_runtimes
from .settings import PistonSettings
from .stages import execute
from .submission import PistonError, parse

PREFIX = "/api/v2"
EVERY_METHOD = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


class PistonFace:
    """What the Piston face keeps while the server runs (app.state.piston)."""

    def __init__(self, settings: PistonSettings, keys: FaceKeyRecords) -> None:
        self.settings = settings
        self.access = FaceAccess(
            "piston", keys, settings.keyless_networks, settings.key_wait_seconds
        )
        self._runtimes: list[piston_runtimes.Installed] | None = None
        self._lock = asyncio.Lock()

    async def runtimes(self) -> list[piston_runtimes.Installed]:
        """What this server runs, asked once."""
        async with self._lock:
            if self._runtimes is None:
                self._runtimes = await asyncio.to_thread(piston_runtimes.installed)
        return self._runtimes

    def admit(self, connection: HTTPConnection) -> FaceKey | None:
        """The caller's key (None: key-less); Refused otherwise."""
        given = connection.headers.get("authorization", "").strip()
        if given.lower().startswith("bearer "):
            given = given[7:].strip()
        host = connection.client.host if connection.client else None
        return self.access.admit(given or None, host)


def message(text: str, status: int) -> Response:
    return json_response({"message": text}, status)


def face_of(connection: HTTPConnection) -> PistonFace:
    return connection.app.state.piston


async def get_runtimes(request: Request) -> Response:
    face = face_of(request)
    try:
        face.admit(request)
    except Refused as e:
        return message(e.message, e.status)
    return json_response([r.listing() for r in await face.runtimes()])


async def post_execute(request: Request) -> Response:
    face = face_of(request)
    if not request.headers.get("content-type", "").startswith("application/json"):
        return message("requests must be of type application/json", 415)
    try:
        key = face.admit(request)
        body = await read_body(request, face.settings.max_body_bytes)
    except Refused as e:
        return message(e.message, e.status)
    except BodyTooLarge as e:
        return message(f"the body is larger than {e.limit} bytes", 413)
    engine = request.app.state.engine
    try:
        data = json.loads(body)
        sub = parse(
            data, await face.runtimes(), face.settings, engine.settings.limits.max_memory_bytes
        )
        face.access.charge(key)
        async with face.access.slot(key):
            result = await execute(engine.jobs, sub, face.settings)
    except (UnicodeDecodeError, ValueError) as e:
        return message(f"the body is not JSON: {e}", 400)
    except PistonError as e:
        return message(e.message, e.status)
    except Refused as e:
        return message(e.message, e.status)
    except KeyBusy as e:
        return message(str(e), 429)
    except (Overloaded, NoCapacity, QuotaExceeded) as e:
        return message(f"the server is busy: {e.detail}; try again", 503)
    except EngineError as e:
        return message(f"the run failed: {e.detail}", 500)
    return json_response(result)


async def content_type_gate(request: Request) -> Response:
    """Piston answers a POST or DELETE of the wrong type with 415 before anything."""
    if request.method in ("POST", "DELETE") and not request.headers.get(
        "content-type", ""
    ).startswith("application/json"):
        return message("requests must be of type application/json", 415)
    return message("Not Found", 404)
