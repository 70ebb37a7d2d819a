"""The web face's error answers: problem documents like the API's (the page shows
`title` and `detail`), and plain HTML pages for the sign-in flow."""

from __future__ import annotations

import json

from starlette.responses import Response

TYPE_BASE = "https://api.backend.ai/probs/"


def problem(status: int, kind: str, title: str, detail: str = "") -> Response:
    body: dict[str, str] = {"type": TYPE_BASE + kind, "title": title}
    if detail:
        body["detail"] = detail
    return Response(json.dumps(body), status_code=status, media_type="application/problem+json")


def not_signed_in() -> Response:
    return problem(401, "auth-failed", "Not signed in", "sign in again: the session ended")


def forbidden(detail: str) -> Response:
    return problem(403, "forbidden", "Forbidden", detail)
