"""The live kernels' records, for the next server to adopt them (kernels outlive a
server restart: sandbox.spawner, --keep-for).

One row per session, written when it is created and removed when it ends, so that
a server that was killed (SIGKILL, a crash) leaves its successor every kernel's
owner, token, language, spec and limits; a server that stops (SIGTERM) also
writes each one's run state and what it held undelivered (registry.suspend).

Kept in a file of its own beside the store, not in it: these rows are runtime
state. They are written on every create, so without fsync (synchronous=OFF): a
crash of the host loses the kernels anyway, and a file that does not open is
started afresh. Backups (engine/backup.py) leave it out.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading

log = logging.getLogger(__name__)

FILE_NAME = "kernels.sqlite"
_SCHEMA = "CREATE TABLE IF NOT EXISTS kernels (id TEXT PRIMARY KEY, record TEXT NOT NULL)"


class KernelRecords:
    """The kernels table; safe to share between threads."""

    def __init__(self, data_dir: str) -> None:
        self.path = os.path.join(data_dir, FILE_NAME)
        self._lock = threading.Lock()
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as e:
            log.warning("%s: %s; starting it afresh", self.path, e)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path + suffix)
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        # Tokens are in it: owner-only, like the store.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        db.execute(_SCHEMA)
        db.execute("SELECT count(*) FROM kernels").fetchone()  # a damaged file fails here
        return db

    def save(self, kernel_id: str, record: dict) -> None:
        text = json.dumps(record, separators=(",", ":"))
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO kernels (id, record) VALUES (?, ?)", (kernel_id, text)
            )

    def remove(self, kernel_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM kernels WHERE id = ?", (kernel_id,))

    def all(self) -> dict[str, dict]:
        """Every record by kernel id; one that does not parse is dropped and logged."""
        with self._lock:
            rows = self._db.execute("SELECT id, record FROM kernels").fetchall()
        records = {}
        for kernel_id, text in rows:
            try:
                records[kernel_id] = json.loads(text)
            except ValueError as e:
                log.warning("kernel record %s does not parse: %s", kernel_id, e)
        return records

    def clear(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM kernels")

    def close(self) -> None:
        with self._lock:
            self._db.close()
