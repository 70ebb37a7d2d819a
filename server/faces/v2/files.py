"""A kernel's files: upload, list, download (spec §5.6, §5.9). The engine asks the
kernel's pid 1 to do each operation inside the kernel (engine.kernel_files)."""

from __future__ import annotations

import json

from starlette.responses import Response
from starlette.routing import Route

from ...engine.kernel_files import check_path
from ..http import Caller, json_response
from .request_schemas import DOWNLOAD, LIST_FILES, LIST_FILES_QUERY, takes
from .signed import engine_of, no_content, session_for, signed
from .uploads import file_paths, multipart_download, read_upload


@signed
async def upload(caller: Caller) -> Response:
    session = session_for(caller)
    files = await read_upload(caller, caller.request.app.state.v2, absolute=True)
    await engine_of(caller.request).upload(session, files)
    return no_content()


@signed
@takes(LIST_FILES, query=LIST_FILES_QUERY)
async def list_files(caller: Caller, data: dict) -> Response:
    # in the body as the clients send it, or in the query (browsers' GETs have no body)
    path = data.get("path") or caller.request.query_params.get("path") or "."
    path = check_path(path, "path", absolute=True)
    session = session_for(caller)
    listing = await engine_of(caller.request).list_files(session, path)
    return json_response(
        {"files": json.dumps(listing["files"]), "errors": "", "abspath": listing["abspath"]}
    )


@signed
@takes(DOWNLOAD)
async def download(caller: Caller, data: dict) -> Response:
    """Each requested file as one tar archive in a multipart/mixed body (spec §5.9)."""
    session = session_for(caller)
    most = caller.request.app.state.v2.max_download_files
    paths = file_paths(data["files"], most, absolute=True)
    return multipart_download(await engine_of(caller.request).download(session, paths))


def routes(prefix: str) -> list[Route]:
    kernel = f"{prefix}/kernel/{{kernel_id}}"
    return [
        Route(f"{kernel}/upload", upload, methods=["POST"]),
        Route(f"{kernel}/files", list_files, methods=["GET"]),
        Route(f"{kernel}/download", download, methods=["GET"]),
    ]
