"""Virtual folder endpoints (spec §7.4): the v3 `/folders` routes and DOC-v2's forms.

Folders are addressed by name (v3 as implemented) or by id (DOC-v2). The engine
does each file operation inside a throw-away kernel that mounts the folder
(engine.folders); such a kernel counts against the key's concurrency and the
server's max_kernels while it lives (412 quota-exceeded, 503 instance-not-available).
"""

from __future__ import annotations

import json

from starlette.responses import Response
from starlette.routing import Route

from ...engine.folders import FolderInfo
from ...engine.kernel_files import check_path
from ...engine.store import Folder
from ..http import Caller, json_response
from .request_schemas import (
    CREATE_FOLDER,
    DELETE_FILES,
    DOWNLOAD,
    LIST_FILES,
    LIST_FILES_QUERY,
    MKDIR,
    takes,
)
from .signed import engine_of, no_content, signed
from .uploads import file_paths, multipart_download, read_upload


def _folder(caller: Caller) -> Folder:
    return engine_of(caller.request).folders.get(
        caller.access_key, caller.request.path_params["name"]
    )


def _describe(info: FolderInfo) -> dict:
    folder = info.folder
    return {
        "name": folder.name,
        "id": folder.id,
        "numFiles": info.files,
        "size": info.bytes,
        "created": folder.created,
        "is_owner": True,
        "permission": "rw",
    }


# -- the folders ---------------------------------------------------------------------


@signed
@takes(CREATE_FOLDER)
async def create(caller: Caller, data: dict) -> Response:
    folder = await engine_of(caller.request).folders.create(caller.access_key, data["name"])
    return json_response({"id": folder.id, "name": folder.name}, status=201)


@signed
@takes(CREATE_FOLDER)
async def create_v2(caller: Caller, data: dict) -> Response:
    """DOC-v2's POST /folder/create: answers {"folderId"} (and the v3 fields)."""
    folder = await engine_of(caller.request).folders.create(caller.access_key, data["name"])
    return json_response({"folderId": folder.id, "id": folder.id, "name": folder.name}, 201)


@signed
async def list_folders(caller: Caller) -> Response:
    folders = engine_of(caller.request).folders.list(caller.access_key)
    return json_response(
        [{"name": f.name, "id": f.id, "is_owner": True, "permission": "rw"} for f in folders]
    )


@signed
async def info(caller: Caller) -> Response:
    folders = engine_of(caller.request).folders
    return json_response(_describe(await folders.describe(_folder(caller))))


@signed
async def delete(caller: Caller) -> Response:
    await engine_of(caller.request).folders.delete(_folder(caller))
    return no_content()


# -- its files -----------------------------------------------------------------------


@signed
async def upload(caller: Caller) -> Response:
    folder = _folder(caller)
    files = await read_upload(caller, caller.request.app.state.v2)
    await engine_of(caller.request).folders.upload(caller.keypair, folder, files)
    return Response(status_code=201)


@signed
@takes(MKDIR)
async def mkdir(caller: Caller, data: dict) -> Response:
    folder = _folder(caller)
    path = check_path(data["path"], "path")
    await engine_of(caller.request).folders.mkdir(caller.keypair, folder, path)
    return Response(status_code=201)


@signed
@takes(LIST_FILES, query=LIST_FILES_QUERY)
async def list_files(caller: Caller, data: dict) -> Response:
    folder = _folder(caller)
    path = data.get("path") or caller.request.query_params.get("path") or "."
    path = check_path(path, "path")
    files = await engine_of(caller.request).folders.list_files(caller.keypair, folder, path)
    return json_response({"files": json.dumps(files)})


@signed
@takes(DOWNLOAD)
async def download(caller: Caller, data: dict) -> Response:
    folder = _folder(caller)
    paths = file_paths(data["files"], caller.request.app.state.v2.max_download_files)
    contents = await engine_of(caller.request).folders.download(caller.keypair, folder, paths)
    return multipart_download(contents)


@signed
@takes(DELETE_FILES)
async def delete_files(caller: Caller, data: dict) -> Response:
    folder = _folder(caller)
    paths = file_paths(data["files"], caller.request.app.state.v2.max_upload_files)
    recursive = data.get("recursive", False)
    await engine_of(caller.request).folders.delete_files(caller.keypair, folder, paths, recursive)
    return json_response({})


def routes(prefix: str) -> list[Route]:
    one = f"{prefix}/folders/{{name}}"
    return [
        Route(f"{prefix}/folders", create, methods=["POST"]),
        Route(f"{prefix}/folders/", create, methods=["POST"]),
        Route(f"{prefix}/folders", list_folders, methods=["GET"]),
        Route(f"{prefix}/folders/", list_folders, methods=["GET"]),
        Route(f"{prefix}/folder/create", create_v2, methods=["POST"]),
        Route(f"{prefix}/folder/{{name}}", info, methods=["GET"]),
        Route(f"{prefix}/folder/{{name}}", delete, methods=["DELETE"]),
        Route(one, info, methods=["GET"]),
        Route(one, delete, methods=["DELETE"]),
        Route(f"{one}/upload", upload, methods=["POST"]),
        Route(f"{one}/mkdir", mkdir, methods=["POST"]),
        Route(f"{one}/files", list_files, methods=["GET"]),
        Route(f"{one}/download", download, methods=["GET"]),
        Route(f"{one}/delete_files", delete_files, methods=["DELETE"]),
    ]
