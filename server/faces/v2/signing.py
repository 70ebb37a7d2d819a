"""Request signing and verification as sorna-manager 0.9.x did it (spec §2).

A client signs seven lines (method, path, raw date header, host, MIME type,
version header, body hash) with a key derived from its secret, the calendar
date written in its date header and the Host header. We verify exactly that,
accept both the Sorna and the BackendAI header and type names, and, for
third-party clients, also try the other version header name and the host
without its port before answering a mismatch (spec §12.2). Everything but the
signature itself is checked from the headers (`parse_claim`), so that a server
can refuse a request before it reads the body; an unknown key and a wrong
signature get the same answer. MD5 is refused unless allowed.

Dates are parsed with the standard library: ISO 8601 (what every known client
sends: Python's `isoformat()`, JavaScript's `toISOString()`, the docs'
`20160930T012345Z`) and the RFC 5322/7231 HTTP date (`toUTCString()`, PHP).
"""

from __future__ import annotations

import datetime
import email.utils
import functools
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

INVALID = "invalid-auth-params"
FAILED = "auth-failed"

MAX_SKEW = datetime.timedelta(minutes=15)
AUTH_TYPES = ("Sorna", "BackendAI")
DATE_HEADERS = ("date", "x-backendai-date", "x-sorna-date")
VERSION_HEADERS = ("x-backendai-version", "x-sorna-version")  # preferred first
VERSION_RE = re.compile(r"^v\d+\.\d{8}$")  # "v2.20170315": major, then the date
DEFAULT_CONTENT_TYPE = "application/octet-stream"  # aiohttp's when none is sent

# Variable-length digests cannot key an HMAC, so they are not signing hashes.
SUPPORTED_HASHES = frozenset(h for h in hashlib.algorithms_guaranteed if not h.startswith("shake"))
# Refused unless the operator allows them (ServerConfig.allow_md5_signatures): no
# known client signs with MD5 by default (both public clients use sha256).
WEAK_HASHES = frozenset({"md5"})
# The one answer to an unknown key and to a wrong signature alike.
MISMATCH = "Signature mismatch"


class AuthError(Exception):
    """A request that cannot be verified; the app maps `kind` to the problem type."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def parse_date(value: str) -> datetime.datetime | None:
    """The header's date as written (its own offset kept), or None if unparsable.

    A value without a timezone is UTC, as in the original server.
    """
    value = value.strip()
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed


@functools.lru_cache(maxsize=1024)
def _derive_key(secret_key: str, yyyymmdd: str, host: str, hash_name: str) -> bytes:
    # Cached: a key changes once a day per (secret, host), and every request needs one.
    k_date = hmac.new(secret_key.encode(), yyyymmdd.encode(), hash_name).digest()
    return hmac.new(k_date, host.encode(), hash_name).digest()


def _key_for(secret_key: str, date: datetime.datetime, host: str, hash_name: str) -> bytes:
    return _derive_key(secret_key, date.strftime("%Y%m%d"), host, hash_name)


def signing_key(secret_key: str, date_value: str, host: str, hash_name: str = "sha256") -> bytes:
    """Step 1 of §2.3: HMAC(HMAC(secret, YYYYMMDD of the header's date), host).

    Raises ValueError when `date_value` is not a date.
    """
    date = parse_date(date_value)
    if date is None:
        raise ValueError(f"not a date: {date_value!r}")
    return _key_for(secret_key, date, host, hash_name)


def mime_type(content_type: str | None) -> str:
    """The content-type line's value: the MIME type alone, lower-cased, with aiohttp's default."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    return mime or DEFAULT_CONTENT_TYPE


def string_to_sign(
    method: str,
    path: str,
    date_value: str,
    host: str,
    content_type: str | None,
    version_header: str,
    version: str,
    body: bytes,
    hash_name: str = "sha256",
) -> str:
    """Step 2 of §2.3: the seven lines. Multipart bodies are signed as empty (uploads)."""
    mime = mime_type(content_type)
    return _join(
        method,
        path,
        date_value,
        host,
        mime,
        version_header,
        version,
        _body_hash(mime, body, hash_name),
    )


def _body_hash(mime: str, body: bytes, hash_name: str) -> str:
    return hashlib.new(hash_name, b"" if mime.startswith("multipart/") else body).hexdigest()


def _join(
    method: str,
    path: str,
    date_value: str,
    host: str,
    mime: str,
    version_header: str,
    version: str,
    body_hash: str,
) -> str:
    lines = (
        method.upper(),
        path,
        date_value,
        f"host:{host}",
        f"content-type:{mime}",
        f"{version_header}:{version}",
        body_hash,
    )
    return "\n".join(lines)


def _signature(key: bytes, text: str, hash_name: str) -> str:
    return hmac.new(key, text.encode(), hash_name).hexdigest()


def _first(headers: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str] | None:
    """The first of `names` present with a non-empty value, as (name, value)."""
    for name in names:
        value = headers.get(name)
        if value:
            return name, value
    return None


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names lower-cased, the first of repeated ones kept (as Starlette's `get`)."""
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        lowered.setdefault(name.lower(), value)
    return lowered


def sign(
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    access_key: str,
    secret_key: str,
    hash_name: str = "sha256",
    auth_type: str = "Sorna",
) -> str:
    """The Authorization header value for a request carrying `headers`.

    `headers` must hold Host, a date header and a version header; the same
    choice rules as `authenticate` apply, so what is signed here verifies there.
    """
    headers = _lower(headers)
    date = _first(headers, DATE_HEADERS)
    version = _first(headers, VERSION_HEADERS)
    if date is None or version is None:
        raise ValueError("sign() needs a date header and a version header")
    host = headers.get("host", "")
    key = signing_key(secret_key, date[1], host, hash_name)
    text = string_to_sign(
        method, path, date[1], host, headers.get("content-type"), *version, body, hash_name
    )
    signature = _signature(key, text, hash_name)
    return f"{auth_type} signMethod=HMAC-{hash_name.upper()}, credential={access_key}:{signature}"


def _parse_authorization(value: str, allow_md5: bool) -> tuple[str, str, str]:
    """(hash name, access key, signature) from the header, per §2.3 step 4."""
    auth_type, _, rest = value.strip().partition(" ")
    if not rest.strip():
        raise AuthError(INVALID, "Malformed authorization header")
    if auth_type not in AUTH_TYPES:
        raise AuthError(INVALID, "Invalid authorization type name")
    params: dict[str, str] = {}
    for piece in rest.split(","):
        name, eq, param = piece.strip().partition("=")
        if not eq:
            raise AuthError(INVALID, f"Malformed authorization parameter {piece.strip()!r}")
        params[name] = param
    if not params.get("signMethod"):
        raise AuthError(INVALID, "Missing signMethod in authorization header")
    access_key, colon, signature = params.get("credential", "").partition(":")
    if not (access_key and colon and signature):
        raise AuthError(INVALID, "Missing or malformed credential (expected ACCESS_KEY:SIGNATURE)")
    mac, dash, hash_name = params["signMethod"].lower().partition("-")
    if mac != "hmac" or not dash:
        raise AuthError(INVALID, "Unsupported request signing method (MAC type)")
    if hash_name not in SUPPORTED_HASHES or (hash_name in WEAK_HASHES and not allow_md5):
        raise AuthError(INVALID, "Unsupported request signing method (hash type)")
    return hash_name, access_key, signature


def _without_port(host: str) -> str:
    head, colon, port = host.rpartition(":")
    if colon and port.isdigit() and (head.endswith("]") or ":" not in head):
        return head
    return host


def _in_sync(date: datetime.datetime, now: datetime.datetime) -> bool:
    try:
        return abs(date - now) <= MAX_SKEW
    except OverflowError:  # e.g. year 1 with a positive offset
        return False


def check_date(headers: Mapping[str, str]) -> None:
    """AuthError unless the headers carry a version and a Date within the allowed
    skew: what an unsigned request must still show (spec §2.6's middleware order)."""
    headers = _lower(headers)
    date = parse_date((_first(headers, DATE_HEADERS) or ("", ""))[1])
    if date is None or not _in_sync(date, datetime.datetime.now(datetime.UTC)):
        raise AuthError(INVALID, "Date/time sync error")
    if _first(headers, VERSION_HEADERS) is None:
        raise AuthError(INVALID, "API version missing in request headers")


@dataclass(frozen=True)
class Claim:
    """What a request's headers say about its signature: all of it can be checked
    before the body is read, except the signature itself (it covers the body hash)."""

    access_key: str
    signature: str
    hash_name: str
    date_value: str
    date: datetime.datetime
    version_name: str
    version_value: str
    host: str
    mime: str


def parse_claim(
    headers: Mapping[str, str],
    now: datetime.datetime | None = None,
    allow_md5: bool = False,
) -> Claim | None:
    """The claim of a request's headers; None if it carries no Authorization.

    A request without Authorization is the caller's to refuse (401 on protected
    endpoints), so its date is not checked here. A bad date, a malformed header,
    an unsupported hash (MD5 unless `allow_md5`) or a missing version header
    raise AuthError `invalid-auth-params`.
    """
    headers = _lower(headers)
    authorization = headers.get("authorization")
    if authorization is None:
        return None
    date_value = (_first(headers, DATE_HEADERS) or ("", ""))[1]
    date = parse_date(date_value)
    if now is None:
        now = datetime.datetime.now(datetime.UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=datetime.UTC)
    if date is None or not _in_sync(date, now):
        raise AuthError(INVALID, "Date/time sync error")
    hash_name, access_key, signature = _parse_authorization(authorization, allow_md5)
    version = _first(headers, VERSION_HEADERS)
    if version is None:
        raise AuthError(INVALID, "API version missing in request headers")
    return Claim(
        access_key=access_key,
        signature=signature,
        hash_name=hash_name,
        date_value=date_value,
        date=date,
        version_name=version[0],
        version_value=version[1],
        host=headers.get("host", ""),
        mime=mime_type(headers.get("content-type")),
    )


def signs_body(claim: Claim) -> bool:
    """Whether the signature covers the body: multipart bodies are signed as empty."""
    return not claim.mime.startswith("multipart/")


def verify(claim: Claim, method: str, path: str, body: bytes, secret_key: str) -> bool:
    """Whether the claim's signature is the one `secret_key` makes for this request,
    with the leniencies of §12.2 (the other version header name, the host without
    its port)."""
    other_name = VERSION_HEADERS[1 - VERSION_HEADERS.index(claim.version_name)]
    hosts = dict.fromkeys([claim.host, _without_port(claim.host)])  # ordered, de-duplicated
    given = claim.signature.encode("utf-8", "replace")
    body_hash = _body_hash(claim.mime, body, claim.hash_name)
    for try_host in hosts:
        key = _key_for(secret_key, claim.date, try_host, claim.hash_name)
        for name in (claim.version_name, other_name):
            text = _join(
                method, path, claim.date_value, try_host, claim.mime, name,
                claim.version_value, body_hash,
            )  # fmt: skip
            if hmac.compare_digest(_signature(key, text, claim.hash_name).encode(), given):
                return True
    return False


def authenticate(
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    lookup_secret: Callable[[str], str | None],
    now: datetime.datetime | None = None,
    allow_md5: bool = False,
) -> str | None:
    """The access key of a correctly signed request; None if it carries no Authorization.

    Raises AuthError as `parse_claim` does, and `auth-failed` with one and the same
    detail for an unknown key and a wrong signature, so that keys cannot be told
    apart from the answer.
    """
    claim = parse_claim(headers, now, allow_md5)
    if claim is None:
        return None
    secret_key = lookup_secret(claim.access_key)
    if secret_key is None or not verify(claim, method, path, body, secret_key):
        raise AuthError(FAILED, MISMATCH)
    return claim.access_key
