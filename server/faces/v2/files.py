"""A kernel's files: upload, list, download (spec §5.6, §5.9). The engine asks the
kernel's pid 1 to do each operation inside the kernel (engine.kernel_files)."""

from __future__ import annotations

import json

from starlette.responses import Response
from starlette.routing import Route

from ...engine.kernel_files import check_path
from ..http import Caller, json_response
from .signed import engine_of, no_content, session_for, signed
from .uploads import file_paths, multipart_download, read_upload


@signed
async def upload(caller: Caller) -> Response:
    session = session_for(caller)
    files = await read_upload(caller, caller.request.app.state.v2, absolute=True)
    await engine_of(caller.request).upload(session, files)
    return no_content()


@signed
async def list_files(caller: Caller) -> Response:
    # in the body as the clients send it, or in the query (browsers' GETs have no body)
    data = caller.json() or dict(caller.request.query_params)
    path = check_path(data.get("path", ".") or ".", "path", absolute=True)
    session = session_for(caller)
    listing = await engine_of(caller.request).list_files(session, path)
    return json_response(
        {"files": json.dumps(listing["files"]), "errors": "", "abspath": listing["abspath"]}
    )


@signed
async def download(caller: Caller) -> Response:
    """Each requested file as one tar archive in a multipart/mixed body (spec §5.9)."""
    session = session_for(caller)
    settings = caller.request.app.state.v2
    names = caller.json().get("files")
    paths = file_paths(names, settings.max_download_files, absolute=True)
    return multipart_download(await engine_of(caller.request).download(session, paths))


def routes(prefix: str) -> list[Route]:
    kernel = f"{prefix}/kernel/{{kernel_id}}"
    return [
        Route(f"{kernel}/upload", upload, methods=["POST"]),
        Route(f"{kernel}/files", list_files, methods=["GET"]),
        Route(f"{kernel}/download", download, methods=["GET"]),
    ]
