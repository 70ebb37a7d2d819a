"""What the server keeps across restarts: API keypairs, the one-shot faces' keys and
virtual folders' records.

Callers see only these interfaces and records, and get a store from
`store_backends.open_store`; `sqlite_store` is the one implementation today (one
SQLite file in the data directory). Another database (PostgreSQL, for several
servers sharing keys) is a new module implementing `Store`, chosen in
`open_store`, with no caller changed. Validation and key
generation live here, not in an implementation, so every store accepts the same.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Protocol

ACCESS_KEY_RE = re.compile(r"[A-Za-z0-9]{4,64}")
SECRET_KEY_RE = re.compile(r"[\x21-\x7e]{8,128}")  # printable ASCII, no space
DATABASE_NAME = "sandbox.sqlite"


@dataclass(frozen=True)
class Keypair:
    access_key: str
    secret_key: str
    is_active: bool
    concurrency_limit: int
    rate_limit: int
    created: str  # ISO 8601, UTC


@dataclass(frozen=True)
class Folder:
    id: str  # 32 hex digits
    access_key: str
    name: str
    created: str  # ISO 8601, UTC


@dataclass(frozen=True)
class FaceKey:
    """A key of a one-shot face (Jobe's X-API-KEY, Piston's bearer key). Only its
    hash is stored; `id`, the hash's first digits, is how an admin names it."""

    id: str
    face: str  # one of FACES
    name: str  # whom it was given to, for the admin
    is_active: bool
    concurrency_limit: int  # its runs at once
    rate_limit: int  # its runs per minute; 0: no limit
    created: str


FACES = ("jobe", "piston")
FACE_KEY_RE = re.compile(r"[\x21-\x7e]{8,128}")  # printable ASCII, no space


def hash_face_key(key: str) -> str:
    """SHA-256, not a slow password hash: generated keys carry 192 random bits, so
    a fast hash cannot be searched, and every run looks its key up."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_face_key(
    face: str, name: str, concurrency: int, rate_limit: int, key: str | None
) -> tuple[FaceKey, str]:
    """A record to store and the key to hand out (generated unless given: a school
    keeps the key its Moodle already sends). ValueError naming the field."""
    if face not in FACES:
        raise ValueError(f"face: one of {', '.join(FACES)}, not {face!r}")
    if key is not None and not FACE_KEY_RE.fullmatch(key):
        raise ValueError("key: must be 8-128 printable ASCII characters, no spaces")
    if not name.isprintable() or len(name) > 200:
        raise ValueError("name: at most 200 printable characters")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency: must be a positive integer, not {concurrency!r}")
    if isinstance(rate_limit, bool) or not isinstance(rate_limit, int) or rate_limit < 0:
        raise ValueError(f"rate_limit: must be an integer >= 0, not {rate_limit!r}")
    key = key or secrets.token_urlsafe(24)
    digest = hash_face_key(key)
    record = FaceKey(digest[:12], face, name, True, concurrency, rate_limit, now())
    return record, key


class Duplicate(ValueError):
    """A record with that unique name exists already."""


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def generate_access_key() -> str:
    """AWS-looking, as the original: "AKIA" + base32 of 10 random bytes (20 chars)."""
    return "AKIA" + base64.b32encode(secrets.token_bytes(10)).decode()


def generate_secret_key() -> str:
    """URL-safe base64 of 30 random bytes (40 chars)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(30)).decode()


def new_keypair(
    access_key: str | None, secret_key: str | None, concurrency: int, rate_limit: int
) -> Keypair:
    """A keypair to store, generating whichever key is not given. ValueError naming
    the field for a malformed key or a non-positive limit."""
    if access_key is not None and not ACCESS_KEY_RE.fullmatch(access_key):
        raise ValueError("access_key: must be 4-64 letters or digits")
    if secret_key is not None and not SECRET_KEY_RE.fullmatch(secret_key):
        raise ValueError("secret_key: must be 8-128 printable ASCII characters, no spaces")
    for name, value in (("concurrency", concurrency), ("rate_limit", rate_limit)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: must be a positive integer, not {value!r}")
    return Keypair(
        access_key=access_key or generate_access_key(),
        secret_key=secret_key or generate_secret_key(),
        is_active=True,
        concurrency_limit=concurrency,
        rate_limit=rate_limit,
        created=now(),
    )


class KeyRecords(Protocol):
    """Keypairs. Every signed request looks one up: `get` must be cheap, and must see
    what another process (sandbox-admin) committed."""

    def create(
        self,
        access_key: str | None,
        secret_key: str | None,
        concurrency: int,
        rate_limit: int,
    ) -> Keypair:
        """Store a new keypair (see new_keypair); ValueError for bad fields or an
        access key that exists already."""
        ...

    def get(self, access_key: str) -> Keypair | None: ...

    def list(self) -> list[Keypair]:
        """Oldest first."""
        ...

    def disable(self, access_key: str) -> bool:
        """False if there is no such key."""
        ...

    def count(self) -> int: ...


class FolderRecords(Protocol):
    """Virtual folders' records (their contents live in images: folder_storage)."""

    def add(self, access_key: str, name: str) -> Folder:
        """A new record with a fresh id; Duplicate if the key has that name already."""
        ...

    def get(self, access_key: str, name_or_id: str) -> Folder | None: ...

    def list(self, access_key: str) -> list[Folder]: ...

    def all(self) -> list[Folder]:
        """Every key's folders (for backups)."""
        ...

    def remove(self, folder_id: str) -> None: ...


class FaceKeyRecords(Protocol):
    """The one-shot faces' keys. Every run looks one up: `find` must be cheap, and
    must see what another process (sandbox-admin) committed."""

    def create(
        self, face: str, name: str, concurrency: int, rate_limit: int, key: str | None = None
    ) -> tuple[FaceKey, str]:
        """Store a new key (see new_face_key); the record and the key, shown once.
        ValueError for bad fields or a key that exists already."""
        ...

    def find(self, face: str, key: str) -> FaceKey | None:
        """The record of `key` for `face`, active or not, or None."""
        ...

    def list(self) -> list[FaceKey]:
        """Oldest first."""
        ...

    def disable(self, key_id: str) -> bool:
        """False if no key has that id."""
        ...


@dataclass(frozen=True)
class WebSession:
    """A signed-in browser of the web face: whose key it acts for, the token its
    state-changing requests must echo (CSRF), and when it ends (Unix seconds)."""

    access_key: str
    csrf_token: str
    expires: float


def hash_web_token(token: str) -> str:
    """Sign-in links and session cookies are stored by their SHA-256 only: whoever
    reads the database cannot sign in (the tokens carry 192 random bits)."""
    return hashlib.sha256(token.encode()).hexdigest()


class WebSessionRecords(Protocol):
    """The web face's one-time sign-in links and its sessions, by token hash. Shared
    with sandbox-admin, which makes links while the server runs."""

    def add_link(self, access_key: str, token_hash: str, expires: float) -> None: ...

    def link_key(self, token_hash: str, at: float) -> str | None:
        """The access key of an unused, unexpired link, or None; the link stays."""
        ...

    def redeem_link(self, token_hash: str, at: float) -> str | None:
        """Use a link up (once only, even against a second server process): its
        access key, or None if it is unknown, used or expired."""
        ...

    def start(self, token_hash: str, session: WebSession) -> None: ...

    def get(self, token_hash: str, at: float) -> WebSession | None:
        """An unexpired session, or None."""
        ...

    def end(self, token_hash: str) -> None: ...

    def end_key(self, access_key: str) -> int:
        """End every session and unused link of a key (it was disabled); how many."""
        ...


class Store(Protocol):
    keys: KeyRecords
    face_keys: FaceKeyRecords
    folders: FolderRecords
    web: WebSessionRecords

    def copy_to(self, path: str) -> None:
        """A consistent copy of the whole store in a new file at `path` (a backup),
        taken while others use it."""
        ...

    def close(self) -> None: ...
