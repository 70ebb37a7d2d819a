"""The files clients PUT for later runs (Jobe's file cache), in the data directory.

CodeRunner names a support file by the MD5 of its contents and PUTs it only when
a run says it is missing (404), so the cache is a cache: a file may go at any
time and the client puts it back. Here it is bounded: past `max_bytes` the least
recently used files go (a run or a HEAD counts as a use). Ids are letters and
digits only (the route admits nothing else), so an id is a safe file name.
Writes go to a temporary name first: a run never reads half a file.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading

ID_RE = re.compile(r"[A-Za-z0-9]{1,128}")


class FileCache:
    def __init__(self, directory: str, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()  # the methods run in worker threads
        os.makedirs(directory, mode=0o700, exist_ok=True)
        for name in os.listdir(directory):  # a put the last server did not finish
            if not ID_RE.fullmatch(name):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(directory, name))

    def _path(self, file_id: str) -> str:
        if not ID_RE.fullmatch(file_id):
            raise ValueError(f"bad file id {file_id!r}")
        return os.path.join(self.directory, file_id)

    def put(self, file_id: str, data: bytes) -> None:
        """Store (or replace) a file; OSError if the disk refuses."""
        path = self._path(file_id)
        temporary = f"{path}.{threading.get_ident()}.part"
        with open(temporary, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
        self._trim()

    def has(self, file_id: str) -> bool:
        try:
            os.utime(self._path(file_id))
        except (OSError, ValueError):
            return False
        return True

    def get(self, file_id: str) -> bytes | None:
        """The file's contents, or None if the cache does not hold it."""
        try:
            with open(self._path(file_id), "rb") as f:
                data = f.read()
            os.utime(f.name)
        except (OSError, ValueError):
            return None
        return data

    def _trim(self) -> None:
        """Remove the least recently used files until the rest fit in max_bytes."""
        with self._lock:
            entries = []
            for entry in os.scandir(self.directory):
                with contextlib.suppress(OSError):
                    st = entry.stat()
                    entries.append((st.st_mtime, st.st_size, entry.path))
            total = sum(size for _, size, _ in entries)
            for _, size, path in sorted(entries):
                if total <= self.max_bytes:
                    break
                with contextlib.suppress(OSError):
                    os.unlink(path)
                total -= size
