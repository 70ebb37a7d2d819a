"""Files in v2 bodies: multipart uploads read within the `[v2]` limits, and
downloads answered as one tar archive per file in a multipart/mixed body (spec §5.9)."""

from __future__ import annotations

import io
import os
import secrets
import tarfile
import time

from starlette.datastructures import UploadFile
from starlette.responses import Response

from ...engine.kernel_files import check_path
from ..http import Caller, declared_length
from .problems import Problem, bad_params
from .settings import V2Settings


async def read_upload(
    caller: Caller, settings: V2Settings, absolute: bool = False
) -> list[tuple[str, bytes]]:
    """The (path, content) pairs of a multipart upload, checked against the limits;
    `absolute`: filenames may be absolute under /home/work (see check_path)."""
    request = caller.request
    most, largest = settings.max_upload_files, settings.max_file_bytes
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise bad_params("Content-Type: expected multipart/form-data")
    declared = declared_length(request)
    if declared is None:
        raise bad_params("Content-Length: required for uploads")
    if declared > settings.max_upload_bytes:
        raise Problem("request-too-large", f"at most {most} files of {largest} bytes")
    try:
        form = await request.form(max_files=most + 1, max_fields=most + 1)
    except Exception as e:  # the parser's own limits and malformed multipart
        raise bad_params(f"Malformed multipart body: {e}") from None
    files = [v for _k, v in form.multi_items() if isinstance(v, UploadFile)]
    if not files:
        raise bad_params("no files in the upload")
    if len(files) > most:
        raise bad_params(f"Too many files: at most {most}")
    contents = []
    for part in files:
        path = check_path(part.filename, "filename", absolute)
        data = await part.read(largest + 1)
        if len(data) > largest:
            raise bad_params(f"Too large file: {path} is over {largest} bytes")
        contents.append((path, data))
    await form.close()
    return contents


def file_paths(names: list[str], most: int, absolute: bool = False) -> list[str]:
    """The `files` of a request (a download, a delete; a non-empty list of strings, as
    its schema says), checked: at most `most` paths, each one a path under /home/work."""
    if len(names) > most:
        raise bad_params(f"files: at most {most} paths")
    return [check_path(name, "files", absolute) for name in names]


def multipart_download(contents: list[tuple[str, bytes]]) -> Response:
    """Each (path, content) as one tar archive in a multipart/mixed body."""
    boundary = secrets.token_hex(16)
    body = io.BytesIO()
    for path, content in contents:
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
