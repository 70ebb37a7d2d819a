"""Who a browser is: the session cookie, and the checks a page's requests pass.

A browser never holds a secret key. Signing in (a one-time link, or a keypair
typed into the form) makes a session: a random token in an HttpOnly,
SameSite=Strict cookie (Secure over TLS), stored server-side by its hash with
the access key it acts for and a CSRF token. The page reads the CSRF token from
`GET <prefix>/session` (same origin only: the cookie is never sent cross-site,
and no CORS header lets another site read the answer) and sends it back in
`X-CSRF-Token` on every state-changing request. WebSocket handshakes, which carry
no custom headers, must come from the page's own origin (Origin header).

Every request looks the session and its key up again: a key disabled from the
command line ends its sessions at once.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
import urllib.parse
from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.responses import Response

from ...engine.store import Keypair, Store, WebSession, hash_web_token
from .settings import WebSettings

COOKIE = "sandbox_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = ("GET", "HEAD")


@dataclass(frozen=True)
class SignedIn:
    """A request's valid session and the active keypair it acts for."""

    token_hash: str
    session: WebSession
    keypair: Keypair


def new_token() -> str:
    """192 random bits, URL-safe: a sign-in link's token or a session's cookie."""
    return secrets.token_urlsafe(24)


def store_of(conn: HTTPConnection) -> Store:
    return conn.app.state.engine.store


def settings_of(conn: HTTPConnection) -> WebSettings:
    return conn.app.state.web


def start(conn: HTTPConnection, access_key: str) -> str:
    """A new session for `access_key`; the cookie's token."""
    token = new_token()
    hours = settings_of(conn).session_hours
    session = WebSession(access_key, new_token(), time.time() + hours * 3600)
    store_of(conn).web.start(hash_web_token(token), session)
    return token


def signed_in(conn: HTTPConnection) -> SignedIn | None:
    """The request's session if its cookie names a live one whose key is active."""
    token = conn.cookies.get(COOKIE)
    if not token or len(token) > 64:
        return None
    store, digest = store_of(conn), hash_web_token(token)
    session = store.web.get(digest, time.time())
    if session is None:
        return None
    keypair = store.keys.get(session.access_key)
    if keypair is None or not keypair.is_active:
        store.web.end_key(session.access_key)
        return None
    return SignedIn(digest, session, keypair)


def same_origin(conn: HTTPConnection, required: bool) -> bool:
    """The Origin header names this server (as the browser reached it: the Host
    header, so a TLS proxy in front changes nothing); a missing one passes unless
    `required`."""
    origin = conn.headers.get("origin")
    if origin is None:
        return not required
    host = conn.headers.get("host", "")
    return bool(host) and urllib.parse.urlsplit(origin).netloc.lower() == host.lower()


def csrf_ok(conn: HTTPConnection, who: SignedIn) -> bool:
    sent = conn.headers.get(CSRF_HEADER, "")
    return hmac.compare_digest(sent.encode(), who.session.csrf_token.encode())


def changes_state(conn: HTTPConnection) -> bool:
    """A request that needs the CSRF token: any method but GET and HEAD, and any
    request that asks to be routed as another method."""
    return conn.scope["method"] not in SAFE_METHODS or "x-method-override" in conn.headers


def over_tls(conn: HTTPConnection) -> bool:
    """Whether the browser reached us over TLS: the page's public address says so, or
    the TLS proxy in front on this machine does (X-Forwarded-Proto, believed from a
    loopback peer only, and only for this)."""
    if settings_of(conn).public_url.startswith("https://") or conn.url.scheme == "https":
        return True
    peer = conn.client.host if conn.client else ""
    try:
        loopback = ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False
    return loopback and conn.headers.get("x-forwarded-proto", "").lower() == "https"


def set_cookie(response: Response, conn: HTTPConnection, token: str) -> None:
    settings = settings_of(conn)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(settings.session_hours * 3600),
        path=settings.page_prefix or "/",
        secure=over_tls(conn),
        httponly=True,
        samesite="strict",
    )


def clear_cookie(response: Response, conn: HTTPConnection) -> None:
    response.delete_cookie(
        COOKIE, path=settings_of(conn).page_prefix or "/", httponly=True, samesite="strict"
    )
