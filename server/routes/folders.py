"""Virtual folder endpoints (spec §7.4): the v3 `/folders` routes and DOC-v2's forms.

Folders are addressed by name (v3 as implemented) or by id (DOC-v2). File
operations on a folder's contents are never done by the host on paths that
kernel code may have shaped: each request starts a small throw-away kernel
with the folder bound at /home/work/folder, and its pid 1 does the work
(`sandbox.runner.files`: walked fd by fd, no symlink followed, FIFOs never
opened for blocking I/O), as the kernels' user, in a mount namespace where no
host file exists. That costs a kernel start (milliseconds) per request, and each
such kernel counts against the key's concurrency and the server's max_kernels
while it lives (412 quota-exceeded, 503 instance-not-available), as a create does:
otherwise a burst of slow folder requests would hold kernels beyond any limit.

What blocks (mkfs, usage, deletes) runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import secrets
from collections.abc import AsyncIterator

from starlette.responses import Response
from starlette.routing import Route

from sandbox.kernel import Kernel, KernelGone
from sandbox.spawner_client import SpawnerError
from sandbox.spec import WORK_DIR, Bind, KernelSpec, MiB

from ..app import Call, json_response, no_content, signed
from ..errors import Problem, bad_params
from ..folder_use import holding, let_go
from ..folders import NAME_RE, Folder, FolderBusy, FolderExists
from ..registry import spawner_problem
from .files import MAX_FILES, ask, check_path, multipart_download, read_upload

INSIDE = "folder"  # where a folder kernel mounts the folder, under /home/work
PREFIX = INSIDE + "/"


# what the file helper says when a write meets the folder's byte or inode quota
FULL = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))


async def _write(
    kernel: Kernel, folder: Folder, op: str, blob: bytes = b"", **fields: object
) -> None:
    """A writing file op in a folder kernel; a full folder is 412 quota-exceeded."""
    try:
        await ask(kernel, op, blob, **fields)
    except Problem as e:
        if e.kind == "invalid-api-params" and any(text in (e.detail or "") for text in FULL):
            raise Problem("quota-exceeded", f"folder {folder.name!r} is full: {e.detail}") from e
        raise


def _folder(call: Call) -> Folder:
    name = call.request.path_params["name"]
    folder = call.request.app.state.folders.get(call.access_key, name)
    if folder is None:
        raise Problem("folder-not-found", f"no folder named {name!r}")
    return folder


@contextlib.asynccontextmanager
async def folder_kernel(call: Call, folder: Folder) -> AsyncIterator[Kernel]:
    """A kernel that mounts `folder` read-write at /home/work/folder, for one request,
    counted against the key's concurrency and max_kernels while it lives."""
    state = call.request.app.state
    kernel_id = "folder-" + secrets.token_hex(8)
    async with (
        state.registry.counted(call.access_key, call.keypair.concurrency_limit),
        holding(state, [folder]) as sources,
    ):
        owner = state.folders.owner(folder)
        spec = KernelSpec(
            memory_bytes=64 * MiB,
            pids=8,
            work_bytes=1 * MiB,
            tmp_bytes=1 * MiB,
            binds=(Bind(sources[folder.id], f"{WORK_DIR}/{INSIDE}", False, owner),),
        )
        try:
            pid, sock = await state.spawner.spawn(kernel_id, spec)
        except SpawnerError as e:
            raise spawner_problem(e, "kernel-creation-failed", "folder access: ") from e
        try:
            kernel = await Kernel.connect(kernel_id, pid, sock)
            try:
                await kernel.wait_ready()
                yield kernel
            except KernelGone as e:
                raise Problem("kernel-execution-failed", f"folder access: {e}") from e
            finally:
                await kernel.close()
        finally:
            with contextlib.suppress(SpawnerError):
                await state.spawner.destroy(kernel_id)


async def _describe(call: Call, folder: Folder) -> dict:
    try:
        usage = await asyncio.to_thread(call.request.app.state.folders.usage, folder)
    except FileNotFoundError as e:  # its image was removed behind the server's back
        detail = f"folder {folder.name!r}: its files are gone from the data directory ({e})"
        raise Problem("folder-not-found", f"{detail}; delete it") from e
    return {
        "name": folder.name,
        "id": folder.id,
        "numFiles": usage.files,
        "size": usage.bytes,
        "created": folder.created,
        "is_owner": True,
        "permission": "rw",
    }


# -- the folders ---------------------------------------------------------------------


@signed
async def create(call: Call) -> Response:
    folder = await _create(call)
    return json_response({"id": folder.id, "name": folder.name}, status=201)


@signed
async def create_v2(call: Call) -> Response:
    """DOC-v2's POST /folder/create: answers {"folderId"} (and the v3 fields)."""
    folder = await _create(call)
    return json_response({"folderId": folder.id, "id": folder.id, "name": folder.name}, 201)


async def _create(call: Call) -> Folder:
    data = call.json()
    extra = sorted(set(data) - {"name"})
    if extra:
        raise bad_params(f"body: unknown field {extra[0]!r}")
    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise bad_params(
            "name: 1-64 letters, digits, '.', '_' or '-', starting and ending with "
            "a letter or digit"
        )
    state = call.request.app.state
    config, store = state.config, state.folders
    if len(store.list(call.access_key)) >= config.max_folders_per_key:
        raise Problem("quota-exceeded", f"at most {config.max_folders_per_key} folders per key")
    # the key's folders are their images' sizes: what they can hold, not what they do
    used = await asyncio.to_thread(store.reserved_bytes, call.access_key)
    if used + config.folder_bytes > config.max_folder_bytes_per_key:
        raise Problem(
            "quota-exceeded",
            f"folders of this key may hold {config.max_folder_bytes_per_key} bytes; "
            f"{used} are reserved and a folder takes {config.folder_bytes}",
        )
    try:
        return await asyncio.to_thread(
            store.create, call.access_key, name, config.folder_bytes, config.folder_inodes
        )
    except FolderExists:
        raise Problem("folder-already-exists", f"{name!r}") from None
    except OSError as e:
        raise Problem(
            "instance-not-available", f"no room for a folder of {config.folder_bytes} bytes: {e}"
        ) from e


@signed
async def list_folders(call: Call) -> Response:
    folders = call.request.app.state.folders.list(call.access_key)
    return json_response(
        [{"name": f.name, "id": f.id, "is_owner": True, "permission": "rw"} for f in folders]
    )


@signed
async def info(call: Call) -> Response:
    return json_response(await _describe(call, _folder(call)))


@signed
async def delete(call: Call) -> Response:
    folder = _folder(call)
    users = call.request.app.state.registry.mounting(folder.id)
    if users:
        raise bad_params(
            f"folder {folder.name!r} is mounted by {len(users)} kernel(s) "
            f"({', '.join(users)}); destroy them first"
        )
    state = call.request.app.state
    await let_go(state)  # the devices of kernels that are gone
    try:
        await asyncio.to_thread(state.folders.delete, folder)
    except FolderBusy:
        raise bad_params(f"folder {folder.name!r} is in use by a folder operation") from None
    return no_content()


# -- its files -----------------------------------------------------------------------


@signed
async def upload(call: Call) -> Response:
    folder = _folder(call)
    contents = await read_upload(call)
    async with folder_kernel(call, folder) as kernel:
        for path, data in contents:
            await _write(kernel, folder, "upload", data, path=PREFIX + path)
    return Response(status_code=201)


@signed
async def mkdir(call: Call) -> Response:
    folder = _folder(call)
    path = check_path(call.json().get("path"), "path")
    async with folder_kernel(call, folder) as kernel:
        await _write(kernel, folder, "mkdir", path=PREFIX + path)
    return Response(status_code=201)


@signed
async def list_files(call: Call) -> Response:
    folder = _folder(call)
    data = call.json()
    path = data.get("path") or call.request.query_params.get("path") or "."
    path = check_path(path, "path")
    async with folder_kernel(call, folder) as kernel:
        reply, _ = await ask(kernel, "files", path=PREFIX + path)
    return json_response({"files": json.dumps(reply.get("files", []))})


@signed
async def download(call: Call) -> Response:
    folder = _folder(call)
    async with folder_kernel(call, folder) as kernel:
        return await multipart_download(kernel, call.json().get("files"), PREFIX)


@signed
async def delete_files(call: Call) -> Response:
    folder = _folder(call)
    data = call.json()
    names, recursive = data.get("files"), data.get("recursive", False)
    if not isinstance(names, list) or not names or len(names) > MAX_FILES:
        raise bad_params(f"files: expected a list of 1 to {MAX_FILES} paths")
    if not isinstance(recursive, bool):
        raise bad_params("recursive: expected true or false")
    paths = [check_path(name, "files") for name in names]
    async with folder_kernel(call, folder) as kernel:
        for path in paths:
            await ask(kernel, "delete", path=PREFIX + path, recursive=recursive)
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
