"""The Jobe REST API's routes (docs/reference/jobe.md §1), under the prefix
CodeRunner and Jobe's own test client use and under /restapi.

Every answer is JSON; an error is a JSON string, as Jobe's are. Paths are
matched with and without a trailing slash (Jobe's framework trims it, and Jobe's
test client sends one): a redirect would not do, as clients do not follow one
for a POST. Anything else under the prefixes is Jobe's 404 with the body "".
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ...engine.store import FaceKey, FaceKeyRecords
from ..face_access import FaceAccess, KeyBusy, Refused
from ..http import BodyTooLarge, read_body
from . import languages as jobe_languages
from .file_cache import ID_RE, FileCache
from .outcomes import SERVER_OVERLOAD, RunResult
from .run import execute
from .run_spec import JobeError, parse
from .settings import JobeSettings

PREFIXES = ("/jobe/index.php/restapi", "/restapi")
# Jobe's hook for testing clients' handling of an overload
OVERLOAD_TEST = "!** TESTING OVERLOAD EXCEPTION **!"
MISSING_FILES = "One or more of the specified files is missing/unavailable"
EVERY_METHOD = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


class JobeFace:
    """What the Jobe face keeps while the server runs (app.state.jobe)."""

    def __init__(self, settings: JobeSettings, keys: FaceKeyRecords, data_dir: str) -> None:
        self.settings = settings
        self.access = FaceAccess("jobe", keys, settings.keyless_networks, settings.key_wait_seconds)
        self.cache = FileCache(os.path.join(data_dir, "jobe-files"), settings.max_cache_bytes)
        self._versions: dict[str, str] | None = None
        self._versions_lock = asyncio.Lock()

    async def languages(self) -> dict[str, str]:
        """{language_id: version} of what this server runs, asked once."""
        async with self._versions_lock:
            if self._versions is None:
                self._versions = await asyncio.to_thread(jobe_languages.installed)
        return self._versions


def answer(data: object, status: int = 200) -> Response:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return Response(body, status_code=status, media_type="application/json; charset=UTF-8")


def _admit(request: Request) -> tuple[JobeFace, Response | None, FaceKey | None]:
    face: JobeFace = request.app.state.jobe
    host = request.client.host if request.client else None
    try:
        record = face.access.admit(request.headers.get("x-api-key"), host)
    except Refused as e:
        return face, answer(e.message, e.status), None
    return face, None, record


async def get_languages(request: Request) -> Response:
    face, refused, _ = _admit(request)
    if refused:
        return refused
    versions = await face.languages()
    return answer([[name, version] for name, version in versions.items()])


async def post_runs(request: Request) -> Response:
    face, refused, record = _admit(request)
    if refused:
        return refused
    try:
        body = await read_body(request, face.settings.max_body_bytes)
        spec = parse(body, await face.languages(), face.settings.max_cputime_seconds)
    except BodyTooLarge as e:
        return answer(f"Request body too large (at most {e.limit} bytes)", 413)
    except JobeError as e:
        return answer(e.message, e.status)
    files = []
    for file_id, name in spec.file_list:
        data = await asyncio.to_thread(face.cache.get, file_id)
        if data is None:
            return answer(MISSING_FILES, 404)
        files.append((name, data))
    if spec.sourcecode == OVERLOAD_TEST:
        return answer(RunResult(SERVER_OVERLOAD, run_id="0").body())
    try:
        face.access.charge(record)
        async with face.access.slot(record):
            result = await execute(request.app.state.engine.jobs, spec, files)
    except Refused as e:
        return answer(e.message, e.status)
    except KeyBusy:
        result = RunResult(SERVER_OVERLOAD)
    return answer(result.body())


async def put_file(request: Request) -> Response:
    face, refused, _ = _admit(request)
    if refused:
        return refused
    file_id = request.path_params["file_id"]
    if not ID_RE.fullmatch(file_id):
        return answer("", 404)
    try:
        body = await read_body(request, face.settings.max_body_bytes)
    except BodyTooLarge as e:
        return answer(f"Request body too large (at most {e.limit} bytes)", 413)
    try:
        data = json.loads(body) if body.strip() else None
    except (UnicodeDecodeError, ValueError):
        return answer("put: the body is not JSON", 400)
    contents = data.get("file_contents") if isinstance(data, dict) else None
    if contents is None:
        return answer("put: missing file_contents parameter", 400)
    try:
        if not isinstance(contents, str):
            raise ValueError
        decoded = base64.b64decode(contents, validate=True)
    except (ValueError, binascii.Error):
        return answer(f"put: contents of file {file_id} are not valid base-64", 400)
    try:
        await asyncio.to_thread(face.cache.put, file_id, decoded)
    except OSError:
        return answer(f"put: failed to write file {file_id} to cache", 500)
    return Response(status_code=204)


async def head_file(request: Request) -> Response:
    face, refused, _ = _admit(request)
    if refused:
        return Response(status_code=refused.status_code)
    file_id = request.path_params["file_id"]
    found = ID_RE.fullmatch(file_id) and await asyncio.to_thread(face.cache.has, file_id)
    return Response(status_code=204 if found else 404)


async def not_found(request: Request) -> Response:
    return answer("", 404)


def routes() -> list[BaseRoute]:
    found: list[BaseRoute] = []
    for prefix in PREFIXES:
        for slash in ("", "/"):
            found += [
                Route(f"{prefix}/languages{slash}", get_languages, methods=["GET"]),
                Route(f"{prefix}/runs{slash}", post_runs, methods=["POST"]),
                Route(f"{prefix}/files/{{file_id}}{slash}", put_file, methods=["PUT"]),
                Route(f"{prefix}/files/{{file_id}}{slash}", head_file, methods=["HEAD"]),
            ]
        found.append(Route(f"{prefix}/{{rest:path}}", not_found, methods=EVERY_METHOD))
    found += [Route(prefix, not_found, methods=EVERY_METHOD) for prefix in PREFIXES]
    return found
