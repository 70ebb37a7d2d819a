"""Signed request heads, reused while their second lasts: the client signs once a
second, not once a request."""

from __future__ import annotations

import email.utils
import time

from server.faces.v2 import signing as auth

from .services import Server

API_VERSION = "v2.20170315"


class Signer:
    """Request heads (request line and headers) signed as server.faces.v2.signing verifies them.

    The Date has whole seconds, so a head is kept per (method, path, content type,
    body) and reused while the second lasts: the same request repeated is signed
    once a second, not once a request (the server allows 15 minutes of skew)."""

    def __init__(self, server: Server) -> None:
        self.keys = (server.access_key, server.secret_key)
        self.host = server.endpoint.split("://", 1)[1]
        self.second, self.date = -1, ""
        self.heads: dict[tuple[str, str, str, bytes], bytes] = {}

    def headers(self, method: str, path: str) -> dict[str, str]:
        """Signed headers of a request without a body (a WebSocket handshake)."""
        date = email.utils.formatdate(time.time(), usegmt=True)
        headers = {"Host": self.host, "Date": date, "X-Sorna-Version": API_VERSION}
        headers["Authorization"] = auth.sign(method, path, headers, b"", *self.keys)
        return headers

    def head(self, method: str, path: str, mime: str, body: bytes) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second, self.heads = now, {}
            self.date = email.utils.formatdate(now, usegmt=True)  # RFC 1123
        key = (method, path, mime, body)
        head = self.heads.get(key)
        if head is None:
            headers = {"Host": self.host, "Date": self.date, "X-Sorna-Version": API_VERSION}
            if mime:
                headers["Content-Type"] = mime
            headers["Authorization"] = auth.sign(method, path, headers, body, *self.keys)
            headers["Content-Length"] = str(len(body))
            lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
            head = self.heads[key] = ("\r\n".join(lines) + "\r\n\r\n").encode()
        return head
