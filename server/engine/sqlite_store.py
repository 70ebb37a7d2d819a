"""The store in one SQLite file (`<data dir>/sandbox.sqlite`): keypairs and the
faces' keys, read through memory caches; folder records; the web face's sign-in
links and sessions.

Every signed request looks its key up, so `keys.get` answers from a dict (and
every one-shot run, so does `face_keys.find`). The
server and `sandbox-admin` share the file: before answering, the cache checks
SQLite's `data_version`, which changes when another connection commits, so a
key created or disabled from the command line takes effect without a restart.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid

from .store import (
    Duplicate,
    FaceKey,
    Folder,
    Keypair,
    WebSession,
    hash_face_key,
    new_face_key,
    new_keypair,
    now,
)

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS keypairs (
    access_key        TEXT PRIMARY KEY,
    secret_key        TEXT NOT NULL,
    is_active         INTEGER NOT NULL DEFAULT 1,
    concurrency_limit INTEGER NOT NULL,
    rate_limit        INTEGER NOT NULL,
    created           TEXT NOT NULL
)""",
    """
CREATE TABLE IF NOT EXISTS face_keys (
    key_hash          TEXT PRIMARY KEY,
    id                TEXT NOT NULL UNIQUE,
    face              TEXT NOT NULL,
    name              TEXT NOT NULL,
    is_active         INTEGER NOT NULL DEFAULT 1,
    concurrency_limit INTEGER NOT NULL,
    rate_limit        INTEGER NOT NULL,
    created           TEXT NOT NULL
)""",
    """
CREATE TABLE IF NOT EXISTS web_links (
    token_hash TEXT PRIMARY KEY,
    access_key TEXT NOT NULL,
    expires    REAL NOT NULL,
    used       INTEGER NOT NULL DEFAULT 0
)""",
    """
CREATE TABLE IF NOT EXISTS web_sessions (
    token_hash TEXT PRIMARY KEY,
    access_key TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    expires    REAL NOT NULL
)""",
    """
CREATE TABLE IF NOT EXISTS folders (
    id         TEXT PRIMARY KEY,
    access_key TEXT NOT NULL,
    name       TEXT NOT NULL,
    created    TEXT NOT NULL,
    UNIQUE (access_key, name)
)""",
)
KEY_COLUMNS = "access_key, secret_key, is_active, concurrency_limit, rate_limit, created"
FOLDER_COLUMNS = "id, access_key, name, created"
FACE_KEY_COLUMNS = "key_hash, id, face, name, is_active, concurrency_limit, rate_limit, created"


class _Database:
    """One connection shared by the tables, serialised by a lock (threads use it)."""

    def __init__(self, path: str) -> None:
        # The file holds secrets: create it owner-only (SQLite gives its WAL the same mode).
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.lock = threading.Lock()
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=5000")  # the other process may be writing
        for table in SCHEMA:
            self.db.execute(table)


class SqliteKeys:
    """The keypair table; safe to share between threads."""

    def __init__(self, database: _Database) -> None:
        self._db = database.db
        self._lock = database.lock
        self._cache: dict[str, Keypair] = {}
        self._version = -1
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        """Reload the cache if anyone else committed since the last load. Hold the lock."""
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version == self._version:
            return
        rows = self._db.execute(f"SELECT {KEY_COLUMNS} FROM keypairs ORDER BY rowid")
        self._cache = {row[0]: _keypair(row) for row in rows}
        self._version = version

    def create(
        self,
        access_key: str | None,
        secret_key: str | None,
        concurrency: int,
        rate_limit: int,
    ) -> Keypair:
        keypair = new_keypair(access_key, secret_key, concurrency, rate_limit)
        with self._lock:
            try:
                self._db.execute(
                    f"INSERT INTO keypairs ({KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        keypair.access_key,
                        keypair.secret_key,
                        1,
                        keypair.concurrency_limit,
                        keypair.rate_limit,
                        keypair.created,
                    ),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"access_key: {keypair.access_key} exists already") from None
            self._refresh()
            # Our own commits do not move data_version: put the row in by hand.
            self._cache[keypair.access_key] = keypair
        return keypair

    def get(self, access_key: str) -> Keypair | None:
        """The keypair, active or not, or None."""
        with self._lock:
            self._refresh()
            return self._cache.get(access_key)

    def list(self) -> list[Keypair]:
        """All keypairs, oldest first (the cache keeps insertion order)."""
        with self._lock:
            self._refresh()
            return list(self._cache.values())

    def disable(self, access_key: str) -> bool:
        """Mark a keypair inactive; False if there is no such key."""
        with self._lock:
            changed = self._db.execute(
                "UPDATE keypairs SET is_active = 0 WHERE access_key = ?", (access_key,)
            ).rowcount
            self._refresh()
            if changed:
                row = self._db.execute(
                    f"SELECT {KEY_COLUMNS} FROM keypairs WHERE access_key = ?", (access_key,)
                ).fetchone()
                self._cache[access_key] = _keypair(row)
        return bool(changed)

    def count(self) -> int:
        """How many keypairs exist, disabled ones included."""
        with self._lock:
            self._refresh()
            return len(self._cache)


class SqliteFaceKeys:
    """The faces' key table, cached by hash; safe to share between threads."""

    def __init__(self, database: _Database) -> None:
        self._db = database.db
        self._lock = database.lock
        self._cache: dict[str, FaceKey] = {}  # hash -> record, oldest first
        self._version = -1
        with self._lock:
            self._refresh()

    def _refresh(self, force: bool = False) -> None:
        """Reload if anyone committed since the last load (or `force`). Hold the lock."""
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version == self._version and not force:
            return
        rows = self._db.execute(f"SELECT {FACE_KEY_COLUMNS} FROM face_keys ORDER BY rowid")
        self._cache = {row[0]: FaceKey(*row[1:4], bool(row[4]), *row[5:]) for row in rows}
        self._version = version

    def create(
        self, face: str, name: str, concurrency: int, rate_limit: int, key: str | None = None
    ) -> tuple[FaceKey, str]:
        record, key = new_face_key(face, name, concurrency, rate_limit, key)
        with self._lock:
            try:
                self._db.execute(
                    f"INSERT INTO face_keys ({FACE_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (hash_face_key(key), record.id, face, name, 1, concurrency, rate_limit,
                     record.created),
                )  # fmt: skip
            except sqlite3.IntegrityError:
                raise ValueError("key: exists already") from None
            self._refresh(force=True)  # our own commits do not move data_version
        return record, key

    def find(self, face: str, key: str) -> FaceKey | None:
        with self._lock:
            self._refresh()
            record = self._cache.get(hash_face_key(key))
        return record if record is not None and record.face == face else None

    def list(self) -> list[FaceKey]:
        with self._lock:
            self._refresh()
            return list(self._cache.values())

    def disable(self, key_id: str) -> bool:
        with self._lock:
            changed = self._db.execute(
                "UPDATE face_keys SET is_active = 0 WHERE id = ?", (key_id,)
            ).rowcount
            self._refresh(force=True)
        return bool(changed)


class SqliteFolders:
    """The folder table; safe to share between threads."""

    def __init__(self, database: _Database) -> None:
        self._db = database.db
        self._lock = database.lock

    def add(self, access_key: str, name: str) -> Folder:
        folder = Folder(uuid.uuid4().hex, access_key, name, now())
        with self._lock:
            try:
                self._db.execute(
                    f"INSERT INTO folders ({FOLDER_COLUMNS}) VALUES (?, ?, ?, ?)",
                    (folder.id, folder.access_key, folder.name, folder.created),
                )
            except sqlite3.IntegrityError:
                raise Duplicate(name) from None
        return folder

    def get(self, access_key: str, name_or_id: str) -> Folder | None:
        """A key's folder by name, or by id (DOC-v2 addresses folders by id)."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {FOLDER_COLUMNS} FROM folders "
                "WHERE access_key = ? AND (name = ? OR id = ?)",
                (access_key, name_or_id, name_or_id),
            ).fetchone()
        return Folder(*row) if row else None

    def list(self, access_key: str) -> list[Folder]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {FOLDER_COLUMNS} FROM folders WHERE access_key = ? ORDER BY created, name",
                (access_key,),
            ).fetchall()
        return [Folder(*row) for row in rows]

    def all(self) -> list[Folder]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {FOLDER_COLUMNS} FROM folders ORDER BY created, id"
            ).fetchall()
        return [Folder(*row) for row in rows]

    def remove(self, folder_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM folders WHERE id = ?", (folder_id,))


class SqliteWebSessions:
    """The web face's sign-in links and sessions; safe to share between threads. Not
    cached: a page's request costs one indexed lookup, and a session ended from the
    command line (its key disabled) must end at once. Expired rows are swept as new
    ones are written."""

    def __init__(self, database: _Database) -> None:
        self._db = database.db
        self._lock = database.lock

    def _sweep(self, at: float) -> None:
        self._db.execute("DELETE FROM web_links WHERE expires <= ? OR used = 1", (at,))
        self._db.execute("DELETE FROM web_sessions WHERE expires <= ?", (at,))

    def add_link(self, access_key: str, token_hash: str, expires: float) -> None:
        with self._lock:
            self._sweep(time.time())
            self._db.execute(
                "INSERT INTO web_links (token_hash, access_key, expires) VALUES (?, ?, ?)",
                (token_hash, access_key, expires),
            )

    def link_key(self, token_hash: str, at: float) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT access_key FROM web_links "
                "WHERE token_hash = ? AND used = 0 AND expires > ?",
                (token_hash, at),
            ).fetchone()
        return row[0] if row else None

    def redeem_link(self, token_hash: str, at: float) -> str | None:
        with self._lock:
            # one statement: of two redeemers (two server processes) only one updates
            row = self._db.execute(
                "UPDATE web_links SET used = 1 "
                "WHERE token_hash = ? AND used = 0 AND expires > ? RETURNING access_key",
                (token_hash, at),
            ).fetchone()
        return row[0] if row else None

    def start(self, token_hash: str, session: WebSession) -> None:
        with self._lock:
            self._sweep(time.time())
            self._db.execute(
                "INSERT INTO web_sessions (token_hash, access_key, csrf_token, expires) "
                "VALUES (?, ?, ?, ?)",
                (token_hash, session.access_key, session.csrf_token, session.expires),
            )

    def get(self, token_hash: str, at: float) -> WebSession | None:
        with self._lock:
            row = self._db.execute(
                "SELECT access_key, csrf_token, expires FROM web_sessions "
                "WHERE token_hash = ? AND expires > ?",
                (token_hash, at),
            ).fetchone()
        return WebSession(*row) if row else None

    def end(self, token_hash: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM web_sessions WHERE token_hash = ?", (token_hash,))

    def end_key(self, access_key: str) -> int:
        with self._lock:
            ended = self._db.execute(
                "DELETE FROM web_sessions WHERE access_key = ?", (access_key,)
            ).rowcount
            ended += self._db.execute(
                "DELETE FROM web_links WHERE access_key = ?", (access_key,)
            ).rowcount
        return ended


class SqliteStore:
    """Keys, the faces' keys, folders and the web face's sessions over one SQLite file."""

    def __init__(self, path: str) -> None:
        self._database = _Database(path)
        self.keys = SqliteKeys(self._database)
        self.face_keys = SqliteFaceKeys(self._database)
        self.folders = SqliteFolders(self._database)
        self.web = SqliteWebSessions(self._database)

    def copy_to(self, path: str) -> None:
        """SQLite's online backup into a new file: one consistent moment of the whole
        store, while the server and other commands keep writing."""
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        target = sqlite3.connect(path)
        try:
            with self._database.lock:
                self._database.db.backup(target)
        finally:
            target.close()

    def close(self) -> None:
        with self._database.lock:
            self._database.db.close()


def _keypair(row: tuple) -> Keypair:
    access_key, secret_key, is_active, concurrency, rate_limit, created = row
    return Keypair(access_key, secret_key, bool(is_active), concurrency, rate_limit, created)
