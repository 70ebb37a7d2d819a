"""API keypairs in SQLite (`<data dir>/sandbox.sqlite`), read through a memory cache.

Every signed request looks its key up, so `get` answers from a dict. The
server and `sandbox-admin` share the file: before answering, the cache checks
SQLite's `data_version`, which changes when another connection commits, so a
key created or disabled from the command line takes effect without a restart.
"""

from __future__ import annotations

import base64
import datetime
import os
import re
import secrets
import sqlite3
import threading
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS keypairs (
    access_key        TEXT PRIMARY KEY,
    secret_key        TEXT NOT NULL,
    is_active         INTEGER NOT NULL DEFAULT 1,
    concurrency_limit INTEGER NOT NULL,
    rate_limit        INTEGER NOT NULL,
    created           TEXT NOT NULL
)
"""
COLUMNS = "access_key, secret_key, is_active, concurrency_limit, rate_limit, created"

ACCESS_KEY_RE = re.compile(r"[A-Za-z0-9]{4,64}")
SECRET_KEY_RE = re.compile(r"[\x21-\x7e]{8,128}")  # printable ASCII, no space


@dataclass(frozen=True)
class Keypair:
    access_key: str
    secret_key: str
    is_active: bool
    concurrency_limit: int
    rate_limit: int
    created: str  # ISO 8601, UTC


def generate_access_key() -> str:
    """AWS-looking, as the original: "AKIA" + base32 of 10 random bytes (20 chars)."""
    return "AKIA" + base64.b32encode(secrets.token_bytes(10)).decode()


def generate_secret_key() -> str:
    """URL-safe base64 of 30 random bytes (40 chars)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(30)).decode()


def _positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: must be a positive integer, not {value!r}")


class KeyStore:
    """The keypair table; safe to share between threads."""

    def __init__(self, path: str) -> None:
        # The file holds secrets: create it owner-only (SQLite gives its WAL the same mode).
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")  # the other process may be writing
        self._db.execute(SCHEMA)
        self._cache: dict[str, Keypair] = {}
        self._version = -1
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        """Reload the cache if anyone else committed since the last load. Hold the lock."""
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version == self._version:
            return
        rows = self._db.execute(f"SELECT {COLUMNS} FROM keypairs ORDER BY rowid")
        self._cache = {row[0]: _keypair(row) for row in rows}
        self._version = version

    def create(
        self,
        access_key: str | None = None,
        secret_key: str | None = None,
        concurrency: int = 5,
        rate_limit: int = 1000,
    ) -> Keypair:
        """Store a keypair, generating whichever key is not given.

        Raises ValueError naming the field for a malformed key, a non-positive
        limit or an access key that exists already.
        """
        if access_key is not None and not ACCESS_KEY_RE.fullmatch(access_key):
            raise ValueError("access_key: must be 4-64 letters or digits")
        if secret_key is not None and not SECRET_KEY_RE.fullmatch(secret_key):
            raise ValueError("secret_key: must be 8-128 printable ASCII characters, no spaces")
        _positive("concurrency", concurrency)
        _positive("rate_limit", rate_limit)
        keypair = Keypair(
            access_key=access_key or generate_access_key(),
            secret_key=secret_key or generate_secret_key(),
            is_active=True,
            concurrency_limit=concurrency,
            rate_limit=rate_limit,
            created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        )
        with self._lock:
            try:
                self._db.execute(
                    f"INSERT INTO keypairs ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
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
                    f"SELECT {COLUMNS} FROM keypairs WHERE access_key = ?", (access_key,)
                ).fetchone()
                self._cache[access_key] = _keypair(row)
        return bool(changed)

    def count(self) -> int:
        """How many keypairs exist, disabled ones included."""
        with self._lock:
            self._refresh()
            return len(self._cache)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _keypair(row: tuple) -> Keypair:
    access_key, secret_key, is_active, concurrency, rate_limit, created = row
    return Keypair(access_key, secret_key, bool(is_active), concurrency, rate_limit, created)
