"""File operations in a kernel: upload, list, download, mkdir, delete.

The engine never resolves a path inside a kernel: it checks a path's shape, then
asks the kernel's pid 1, which does the file operation inside the kernel's mount
namespace as the kernel's user and refuses symlinks and paths that leave
/home/work (sandbox.runner.files). This removes the host-side symlink class
(threat model row 1) by construction.
"""

from __future__ import annotations

from sandbox.kernel import Kernel, KernelGone
from sandbox.spec import WORK_DIR

from .errors import ExecutionFailed, InvalidRequest
from .session import Session

MAX_PATH = 4096


def check_path(path: object, field: str, absolute: bool = False) -> str:
    """Reject what is obviously wrong before asking the kernel (which checks for real).
    With `absolute`, a path under /home/work may be given whole ("either absolute or
    relative, but only sub-directories under /home/work"); it is made relative."""
    if not isinstance(path, str) or not path or "\0" in path or len(path) > MAX_PATH:
        raise InvalidRequest(f"{field}: expected a relative path")
    if absolute and (path == WORK_DIR or path.startswith(WORK_DIR + "/")):
        path = path[len(WORK_DIR) :].lstrip("/") or "."
    if path.startswith("/") or ".." in path.split("/"):
        raise InvalidRequest(f"{field}: {path!r} leaves /home/work")
    return path


async def ask(
    kernel: Kernel, op: str, blob: bytes = b"", session: Session | None = None, **fields: object
) -> tuple[dict, bytes]:
    """A file op done by the kernel's pid 1; InvalidRequest naming the problem if it
    refuses. A session's kernel that died answers as the session says (KernelNotFound
    with the reason)."""
    try:
        reply, data = await kernel.request(op, blob, **fields)
    except KernelGone as e:
        if session is not None:
            raise await session.gone_error(kernel, e) from e
        raise ExecutionFailed(str(e)) from e
    if not reply.get("ok"):
        raise InvalidRequest(str(reply.get("error", f"{op} failed")))
    return reply, data


async def upload(session: Session, files: list[tuple[str, bytes]]) -> None:
    """Write files (paths relative to /home/work) into a session's kernel; never into
    a folder it mounts (the folder API writes those, under the folder's quota)."""
    for path, _data in files:
        alias = session.mounted_at(path)
        if alias is not None:
            raise InvalidRequest(
                f"filename: {path!r} is inside the mounted folder {alias!r}; "
                "upload into a folder with the folder API"
            )
    for path, data in files:
        await ask(session.kernel, "upload", data, session, path=path)


async def list_files(kernel: Kernel, path: str, session: Session | None = None) -> dict:
    """The kernel's listing of `path`: {"files": [...], "abspath": ...}."""
    reply, _ = await ask(kernel, "files", session=session, path=path)
    return {"files": reply.get("files", []), "abspath": reply.get("abspath")}


async def download(
    kernel: Kernel, paths: list[str], session: Session | None = None
) -> list[tuple[str, bytes]]:
    """Each path's content, read by the kernel's pid 1."""
    contents = []
    for path in paths:
        _reply, content = await ask(kernel, "download", session=session, path=path)
        contents.append((path, content))
    return contents
