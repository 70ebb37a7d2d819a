"""Uploads as the public clients send them: multipart/form-data, one "src" part
per file."""

from __future__ import annotations

import io
import uuid

import httpx

from helpers.api_server import SignedClient


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, data in files:
        out.write(f"--{boundary}\r\n".encode())
        out.write(f'Content-Disposition: form-data; name="src"; filename="{name}"\r\n'.encode())
        out.write(b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def upload(api: SignedClient, kid: str, files: list[tuple[str, bytes]]) -> httpx.Response:
    body, ctype = multipart(files)
    return api.request("POST", f"/v2/kernel/{kid}/upload", raw=body, content_type=ctype)
