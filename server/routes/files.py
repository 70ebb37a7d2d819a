"""A kernel's files: upload, list, download (spec §5.6, §5.9).

The server never resolves a path inside a kernel: it validates the request's
shape and limits, then asks the kernel's pid 1, which does the file operation
inside the kernel's mount namespace as the kernel's user and refuses symlinks
and paths that leave /home/work (sandbox.runner.files). This removes the
host-side symlink class (threat model row 1) by construction.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import tarfile
import time

from starlette.datastructures import UploadFile
from starlette.responses import Response
from starlette.routing import Route

from sandbox.kernel import Kernel, KernelGone
from sandbox.spec import WORK_DIR, MiB

from ..app import Call, json_response, no_content, signed
from ..errors import Problem, bad_params
from ..registry import Session
from .kernels import session_for

MAX_FILES = 20
MAX_FILE_BYTES = 1 * MiB
MAX_DOWNLOADS = 5
# multipart framing per part is small; anything far beyond 20 full files is not an upload
MAX_UPLOAD_BODY = MAX_FILES * (MAX_FILE_BYTES + 64 * 1024)


def check_path(path: object, field: str, absolute: bool = False) -> str:
    """Reject what is obviously wrong before asking the kernel (which checks for real).
    With `absolute`, a path under /home/work may be given whole ("either absolute or
    relative, but only sub-directories under /home/work"); it is made relative."""
    if not isinstance(path, str) or not path or "\0" in path or len(path) > 4096:
        raise bad_params(f"{field}: expected a relative path")
    if absolute and (path == WORK_DIR or path.startswith(WORK_DIR + "/")):
        path = path[len(WORK_DIR) :].lstrip("/") or "."
    if path.startswith("/") or ".." in path.split("/"):
        raise bad_params(f"{field}: {path!r} leaves /home/work")
    return path


async def ask(
    kernel: Kernel, op: str, blob: bytes = b"", session: Session | None = None, **fields: object
) -> tuple[dict, bytes]:
    """A file op done by the kernel's pid 1; 400 naming the problem if it refuses. A
    session's kernel that died answers as the session says (404 with the reason)."""
    try:
        reply, data = await kernel.request(op, blob, **fields)
    except KernelGone as e:
        if session is not None:
            raise await session.problem_for(kernel, e) from e
        raise Problem("kernel-execution-failed", str(e)) from e
    if not reply.get("ok"):
        raise bad_params(str(reply.get("error", f"{op} failed")))
    return reply, data


async def read_upload(call: Call, absolute: bool = False) -> list[tuple[str, bytes]]:
    """The (path, content) pairs of a multipart upload, checked against the limits;
    `absolute`: filenames may be absolute under /home/work (see check_path)."""
    request = call.request
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise bad_params("Content-Type: expected multipart/form-data")
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        raise bad_params("Content-Length: required for uploads")
    if int(declared) > MAX_UPLOAD_BODY:
        raise Problem("request-too-large", f"at most {MAX_FILES} files of {MAX_FILE_BYTES} bytes")
    try:
        form = await request.form(max_files=MAX_FILES + 1, max_fields=MAX_FILES + 1)
    except Exception as e:  # the parser's own limits and malformed multipart
        raise bad_params(f"Malformed multipart body: {e}") from None
    files = [v for _k, v in form.multi_items() if isinstance(v, UploadFile)]
    if not files:
        raise bad_params("no files in the upload")
    if len(files) > MAX_FILES:
        raise bad_params(f"Too many files: at most {MAX_FILES}")
    contents = []
    for part in files:
        path = check_path(part.filename, "filename", absolute)
        data = await part.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise bad_params(f"Too large file: {path} is over {MAX_FILE_BYTES} bytes")
        contents.append((path, data))
    await form.close()
    return contents


@signed
async def upload(call: Call) -> Response:
    session = session_for(call)
    contents = await read_upload(call, absolute=True)
    for path, _data in contents:
        alias = session.mounted_at(path)
        if alias is not None:
            raise bad_params(
                f"filename: {path!r} is inside the mounted folder {alias!r}; "
                "upload into a folder with the folder API"
            )
    for path, data in contents:
        await ask(session.kernel, "upload", data, session, path=path)
    return no_content()


@signed
async def list_files(call: Call) -> Response:
    data = call.json()
    path = check_path(data.get("path", ".") or ".", "path", absolute=True)
    session = session_for(call)
    reply, _ = await ask(session.kernel, "files", session=session, path=path)
    return json_response(
        {"files": json.dumps(reply.get("files", [])), "errors": "", "abspath": reply.get("abspath")}
    )


@signed
async def download(call: Call) -> Response:
    """Each requested file as one tar archive in a multipart/mixed body (spec §5.9)."""
    session = session_for(call)
    files = call.json().get("files")
    return await multipart_download(session.kernel, files, session=session, absolute=True)


async def multipart_download(
    kernel: Kernel,
    names: object,
    prefix: str = "",
    session: Session | None = None,
    absolute: bool = False,
) -> Response:
    """Download `names` (paths under prefix; `absolute`: see check_path) through the
    kernel's pid 1."""
    if not isinstance(names, list) or not names or len(names) > MAX_DOWNLOADS:
        raise bad_params(f"files: expected a list of 1 to {MAX_DOWNLOADS} paths")
    boundary = secrets.token_hex(16)
    body = io.BytesIO()
    for name in names:
        path = check_path(name, "files", absolute)
        _reply, content = await ask(kernel, "download", session=session, path=prefix + path)
        archive = _tar_one(os.path.basename(path), content)
        body.write(f"--{boundary}\r\n".encode())
        body.write(b"Content-Type: application/x-tar\r\n")
        body.write(f'Content-Disposition: attachment; filename="{path}.tar"\r\n\r\n'.encode())
        body.write(archive + b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return Response(body.getvalue(), media_type=f"multipart/mixed; boundary={boundary}")


def _tar_one(name: str, content: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(content), 0o644, int(time.time())
        tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def routes(prefix: str) -> list[Route]:
    kernel = f"{prefix}/kernel/{{kernel_id}}"
    return [
        Route(f"{kernel}/upload", upload, methods=["POST"]),
        Route(f"{kernel}/files", list_files, methods=["GET"]),
        Route(f"{kernel}/download", download, methods=["GET"]),
    ]
