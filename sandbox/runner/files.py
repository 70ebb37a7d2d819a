"""File operations on a kernel's work directory, done by pid 1's file helper.

The host never resolves a path inside a kernel: it sends the path as the user
gave it, and the helper (which runs as the kernel's user, in the kernel's mount
namespace) does the work. Pid 1 (runner/kernel_init.c) starts it on the first
file operation, as `python3 -I -S` running this module from a zip (`serve`),
and ends it when it has been idle a while: pid 1 itself is not Python, and the
runner may be busy with user code.

The work directory belongs to user code, which may plant symlinks, FIFOs or
directories anywhere in it while the helper works. So a path is never resolved by the
kernel's path lookup as a whole: it is walked one component at a time from a
directory fd of the root, each directory opened with O_DIRECTORY|O_NOFOLLOW
relative to the previous one, and the last component opened with O_NOFOLLOW
and O_NONBLOCK, then checked with fstat. A symlink anywhere in the path is
refused (not followed), a FIFO never blocks the helper, and nothing outside the root is
ever opened.

Paths: relative, non-empty, no NUL, at most MAX_PATH_BYTES bytes once encoded,
no ".." component. "." and empty components ("a//b", "./a") are skipped.

Standard library only: this runs inside the kernel.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat

from . import protocol

WORK_DIR = "/home/work"
MAX_PATH_BYTES = 4096
MAX_DOWNLOAD = 1024 * 1024  # bytes; larger files are refused
MAX_LIST_ENTRIES = 10_000  # a larger directory is refused, not truncated
# A listing must fit in one frame, with room to spare for the rest of the reply.
MAX_LIST_JSON = protocol.MAX_JSON - 64 * 1024
DIR_MODE = 0o755
FILE_MODE = 0o644  # for new files, less the umask; an existing file keeps its mode


_VERBS = {
    "upload": "upload",
    "files": "list",
    "download": "download",
    "mkdir": "make directory",
    "delete": "delete",
}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_CHUNK = 256 * 1024


class FileOpError(Exception):
    """A file operation was refused or failed; str() is the message for the user."""


def _show(path: str) -> str:
    return repr(path if len(path) <= 200 else path[:200] + "...")


def _components(path: object, verb: str, want_file: bool) -> tuple[str, list[str]]:
    """Check a path; return it (for messages) and its components.

    want_file: the path must name a file, not just a directory ("a/", ".").
    """
    if not isinstance(path, str):
        raise FileOpError(f"cannot {verb}: the path must be a string")
    shown = _show(path)
    if not path:
        raise FileOpError(f"cannot {verb} {shown}: the path is empty")
    if "\0" in path:
        raise FileOpError(f"cannot {verb} {shown}: the path contains a NUL character")
    try:
        encoded = os.fsencode(path)
    except UnicodeError:
        raise FileOpError(f"cannot {verb} {shown}: the path is not a valid file name") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise FileOpError(f"cannot {verb} {shown}: the path is longer than {MAX_PATH_BYTES} bytes")
    if path.startswith("/"):
        raise FileOpError(f"cannot {verb} {shown}: the path must be relative to the work directory")
    parts = path.split("/")
    if ".." in parts:
        raise FileOpError(f"cannot {verb} {shown}: the path must not contain '..'")
    if want_file and parts[-1] in ("", "."):
        raise FileOpError(f"cannot {verb} {shown}: the path does not name a file")
    return shown, [p for p in parts if p not in ("", ".")]


def _reason(e: OSError, name: str) -> str:
    """What went wrong with one component of a path, for the user."""
    shown = _show(name)
    if e.errno == errno.ELOOP:
        return f"{shown} is a symbolic link"
    if e.errno == errno.ENOTDIR:
        return f"{shown} is not a directory"
    if e.errno == errno.ENOENT:
        return f"{shown} does not exist"
    if e.errno == errno.EISDIR:
        return f"{shown} is a directory"
    if e.errno == errno.ENXIO:
        return f"{shown} is not a regular file"
    return f"{shown}: {e.strerror or e}"


def _open_dirs(root: str, parts: list[str], create: bool, verb: str, shown: str) -> int:
    """A directory fd for root/parts[0]/.../parts[-1], never following a symlink.

    create: make missing directories (mode DIR_MODE) on the way.
    """
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise FileOpError(f"cannot {verb} {shown}: the work directory: {e.strerror}") from None
    try:
        for i, part in enumerate(parts):
            walked = "/".join(parts[: i + 1])
            try:
                next_fd = _open_dir(fd, part, create)
            except OSError as e:
                if e.errno == errno.ENOTDIR and _is_symlink(fd, part):
                    # O_DIRECTORY|O_NOFOLLOW on a symlink fails with ENOTDIR
                    e = OSError(errno.ELOOP, os.strerror(errno.ELOOP))
                raise FileOpError(f"cannot {verb} {shown}: {_reason(e, walked)}") from None
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_symlink(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _open_dir(dir_fd: int, name: str, create: bool) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise
    try:
        os.mkdir(name, DIR_MODE, dir_fd=dir_fd)
    except FileExistsError:  # made meanwhile (or a dangling symlink: the open refuses it)
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:  # noqa: SIM105 - contextlib: 3 ms more for the file helper to start
        os.fchmod(fd, DIR_MODE)  # exactly 0755, whatever the umask
    except OSError:
        pass
    return fd


def upload(path: object, data: bytes, root: str = WORK_DIR) -> None:
    """Write data to root/path, creating directories, replacing a regular file."""
    verb = "upload"
    shown, parts = _components(path, verb, want_file=True)
    dir_fd = _open_dirs(root, parts[:-1], True, verb, shown)
    try:
        try:
            fd = os.open(
                parts[-1],
                os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                FILE_MODE,
                dir_fd=dir_fd,
            )
        except OSError as e:
            raise FileOpError(f"cannot {verb} {shown}: {_reason(e, '/'.join(parts))}") from None
    finally:
        os.close(dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileOpError(f"cannot {verb} {shown}: it exists and is not a regular file")
        # Truncated only now that it is known to be a regular file.
        os.ftruncate(fd, 0)
        protocol.write_all(fd, data)
    except OSError as e:
        raise FileOpError(f"cannot {verb} {shown}: {e.strerror or e}") from None
    finally:
        os.close(fd)


def list_files(
    path: object, root: str = WORK_DIR, max_entries: int = MAX_LIST_ENTRIES
) -> dict[str, object]:
    """The entries of the directory root/path: {"files": [...], "abspath": str}.

    Each entry is {"mode", "size", "ctime", "mtime", "atime", "filename"}
    from lstat (a symlink is listed as a symlink, not followed), sorted by name.
    """
    verb = "list"
    shown, parts = _components(path, verb, want_file=False)
    dir_fd = _open_dirs(root, parts, False, verb, shown)
    try:
        try:
            names = os.listdir(dir_fd)
        except OSError as e:
            raise FileOpError(f"cannot {verb} {shown}: {e.strerror or e}") from None
        if len(names) > max_entries:
            raise FileOpError(
                f"cannot {verb} {shown}: it has {len(names)} entries,"
                f" more than the {max_entries} that can be listed"
            )
        files: list[dict[str, object]] = []
        size = 0
        for name in sorted(names):
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:  # removed meanwhile
                continue
            except OSError as e:
                raise FileOpError(f"cannot {verb} {shown}: {_reason(e, name)}") from None
            entry = {
                "mode": stat.filemode(st.st_mode),
                "size": st.st_size,
                "ctime": st.st_ctime,
                "mtime": st.st_mtime,
                "atime": st.st_atime,
                "filename": name,
            }
            size += len(protocol.encode(entry))
            if size > MAX_LIST_JSON:
                raise FileOpError(f"cannot {verb} {shown}: the listing is too large")
            files.append(entry)
    finally:
        os.close(dir_fd)
    abspath = posixpath.normpath(posixpath.join(root, *parts)) if parts else root
    return {"files": files, "abspath": abspath}


def download(path: object, root: str = WORK_DIR, max_size: int = MAX_DOWNLOAD) -> bytes:
    """The bytes of the regular file root/path, if it is at most max_size bytes."""
    verb = "download"
    shown, parts = _components(path, verb, want_file=True)
    dir_fd = _open_dirs(root, parts[:-1], False, verb, shown)
    try:
        try:
            fd = os.open(
                parts[-1],
                os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC,
                dir_fd=dir_fd,
            )
        except OSError as e:
            raise FileOpError(f"cannot {verb} {shown}: {_reason(e, '/'.join(parts))}") from None
    finally:
        os.close(dir_fd)
    too_large = f"cannot {verb} {shown}: it is larger than the limit of {max_size} bytes"
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise FileOpError(f"cannot {verb} {shown}: it is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise FileOpError(f"cannot {verb} {shown}: it is not a regular file")
        if st.st_size > max_size:
            raise FileOpError(too_large)
        chunks, total = [], 0
        while True:  # the file may grow while it is read: read at most one byte too many
            chunk = os.read(fd, min(_READ_CHUNK, max_size + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_size:
                raise FileOpError(too_large)
        return b"".join(chunks)
    except OSError as e:
        raise FileOpError(f"cannot {verb} {shown}: {e.strerror or e}") from None
    finally:
        os.close(fd)


def make_dir(path: object, root: str = WORK_DIR) -> None:
    """Create root/path and any missing parents (an existing directory is fine)."""
    _shown, parts = _components(path, "make directory", want_file=False)
    os.close(_open_dirs(root, parts, True, "make directory", _shown))


def delete(path: object, recursive: bool, root: str = WORK_DIR) -> None:
    """Remove root/path: a file, a symlink (not what it points to), an empty
    directory, or with `recursive` a directory tree, fd by fd, following nothing."""
    verb = "delete"
    shown, parts = _components(path, verb, want_file=True)
    dir_fd = _open_dirs(root, parts[:-1], False, verb, shown)
    try:
        _remove(dir_fd, parts[-1], recursive, verb, shown)
    finally:
        os.close(dir_fd)


def _remove(dir_fd: int, name: str, recursive: bool, verb: str, shown: str) -> None:
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISDIR(info.st_mode):
            os.unlink(name, dir_fd=dir_fd)
            return
        if recursive:
            fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            try:
                for entry in os.listdir(fd):
                    _remove(fd, entry, True, verb, shown)
            finally:
                os.close(fd)
        os.rmdir(name, dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ENOTEMPTY:
            raise FileOpError(f"cannot {verb} {shown}: the directory is not empty") from None
        raise FileOpError(f"cannot {verb} {shown}: {_reason(e, name)}") from None


def handle(
    message: dict, blob: bytes, root: str = WORK_DIR, max_download: int = MAX_DOWNLOAD
) -> tuple[dict, bytes]:
    """Do one file op (message["op"] in protocol.FILE_OPS); return the reply frame
    (message, blob).

    Never raises for a bad request or a failed operation: those become
    {"ev": "reply", "rid": ..., "ok": false, "error": str}.
    """
    op = message.get("op")
    rid = message.get("rid")
    path = message.get("path")
    reply: dict[str, object] = {"ev": "reply", "rid": rid, "ok": True}
    try:
        if op == "upload":
            upload(path, blob, root)
            return reply, b""
        if op == "files":
            reply.update(list_files(path, root))
            return reply, b""
        if op == "download":
            return reply, download(path, root, max_download)
        if op == "mkdir":
            make_dir(path, root)
            return reply, b""
        if op == "delete":
            delete(path, bool(message.get("recursive")), root)
            return reply, b""
        raise FileOpError(f"unknown file operation {repr(op)[:100]}")
    except FileOpError as e:
        error = str(e)
    except Exception as e:  # a bug here must not end the helper
        verb = _VERBS.get(op, str(op)) if isinstance(op, str) else "do"
        shown = _show(path) if isinstance(path, str) else repr(path)[:100]
        error = f"cannot {verb} {shown}: {type(e).__name__}: {e}"
    return {"ev": "reply", "rid": rid, "ok": False, "error": error}, b""


def serve(fd: int, root: str = WORK_DIR) -> None:
    """The file helper's loop: one reply frame per request frame on the socket
    `fd`, in order, until pid 1 closes it."""
    while True:
        try:
            message, blob = protocol.read_frame(fd)
        except EOFError:
            return
        reply, reply_blob = handle(message, blob, root)
        protocol.write_all(fd, protocol.encode(reply, reply_blob))
