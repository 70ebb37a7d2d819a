"""Virtual folders: persistent directories that belong to an access key.

Metadata lives in the SQLite store (`folders` table, beside the keypairs);
contents live under `<data dir>/folders/<id>/`, owned by the kernels' user,
because kernels that mount a folder write into it. The directory is named by
id, never by the user's name for it, so a name can never become a path.

Kernel code can plant anything in a folder it mounts (symlinks to host files,
FIFOs). So the host never opens a path inside a folder: the only host-side
look is a walk with lstat (sizes and file counts), which follows nothing and
opens nothing, and removal with shutil.rmtree, which unlinks symlinks rather
than following them (both fd-based). Every other file operation runs inside a throw-away
kernel that mounts the folder (see routes/folders.py).
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import sqlite3
import stat
import threading
import uuid
from dataclasses import dataclass

from sandbox.kernel_uids import FOLDER_UID

SCHEMA = """
CREATE TABLE IF NOT EXISTS folders (
    id         TEXT PRIMARY KEY,
    access_key TEXT NOT NULL,
    name       TEXT NOT NULL,
    created    TEXT NOT NULL,
    UNIQUE (access_key, name)
)
"""
# v3's rule (spec §7.4), at most 64 characters
NAME_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9._-]{0,62}[a-zA-Z0-9])?$")


@dataclass(frozen=True)
class Folder:
    id: str  # 32 hex digits
    access_key: str
    name: str
    created: str  # ISO 8601, UTC


@dataclass(frozen=True)
class Usage:
    files: int
    bytes: int


class FolderExists(ValueError):
    pass


class FolderStore:
    """The folder table and the folders' directories; safe to share between threads."""

    def __init__(self, database: str, root: str) -> None:
        self.root = root
        os.makedirs(root, mode=0o711, exist_ok=True)
        self._db = sqlite3.connect(database, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute(SCHEMA)
        self._lock = threading.Lock()

    def path(self, folder: Folder) -> str:
        return os.path.join(self.root, folder.id)

    def create(self, access_key: str, name: str) -> Folder:
        """A new empty folder; FolderExists if the key has one of that name."""
        folder = Folder(
            uuid.uuid4().hex,
            access_key,
            name,
            datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        )
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO folders (id, access_key, name, created) VALUES (?, ?, ?, ?)",
                    (folder.id, folder.access_key, folder.name, folder.created),
                )
            except sqlite3.IntegrityError:
                raise FolderExists(name) from None
        path = self.path(folder)
        os.mkdir(path, 0o755)
        os.chown(path, FOLDER_UID, FOLDER_UID)
        return folder

    def list(self, access_key: str) -> list[Folder]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, access_key, name, created FROM folders WHERE access_key = ? "
                "ORDER BY created, name",
                (access_key,),
            ).fetchall()
        return [Folder(*row) for row in rows]

    def get(self, access_key: str, name_or_id: str) -> Folder | None:
        """A key's folder by name, or by id (DOC-v2 addresses folders by id)."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, access_key, name, created FROM folders "
                "WHERE access_key = ? AND (name = ? OR id = ?)",
                (access_key, name_or_id, name_or_id),
            ).fetchone()
        return Folder(*row) if row else None

    def delete(self, folder: Folder) -> None:
        with self._lock:
            self._db.execute("DELETE FROM folders WHERE id = ?", (folder.id,))
        shutil.rmtree(self.path(folder), ignore_errors=True)

    def usage(self, folder: Folder) -> Usage:
        """Files and bytes in a folder. os.fwalk goes from directory fd to directory
        fd without following symlinks, so a directory swapped for a symlink while
        we count cannot lead the walk out of the folder; entries are lstat'ed only."""
        files = size = 0
        for _top, dirs, names, dir_fd in os.fwalk(self.path(folder), follow_symlinks=False):
            for name in names + dirs:
                try:
                    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except OSError:
                    continue  # changed under us: kernels write while we count
                size += info.st_blocks * 512
                files += not stat.S_ISDIR(info.st_mode)  # a symlink to a dir is a file here
        return Usage(files, size)

    def close(self) -> None:
        with self._lock:
            self._db.close()
