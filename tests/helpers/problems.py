"""The check of an error answer: RFC 7807 problem+json with the status and the
kind of problem (under either dialect's type URL) that the v2 spec gives."""

from __future__ import annotations

import httpx

PROBS = ("https://api.sorna.io/probs/", "https://api.backend.ai/probs/")


def problem(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"].startswith(PROBS) and body["type"].endswith("/" + kind), body
    return body["title"]
