"""v2 errors as RFC 7807 problems: `application/problem+json` with `type` and `title`.

The catalogue follows spec §4.2 with the corrected statuses (400 for bad
requests, never the 0.9.x 404). Context goes into the title in parentheses, as
the original servers did; clients key on `type`. `from_engine` is the one place
where the engine's errors become problems.
"""

from __future__ import annotations

import json

from starlette.requests import HTTPConnection
from starlette.responses import Response

from ...engine import errors

SORNA_BASE = "https://api.sorna.io/probs/"
BACKENDAI_BASE = "https://api.backend.ai/probs/"

# type suffix -> (status, title)
CATALOGUE: dict[str, tuple[int, str]] = {
    "general-error": (500, "General Backend API Error."),
    "generic-not-found": (404, "Unknown URL path."),
    "generic-bad-request": (400, "Bad request."),
    "method-not-allowed": (405, "HTTP Method Not Allowed."),
    "request-too-large": (413, "Request body too large."),
    "internal-server-error": (500, "Internal server error."),
    "service-unavailable": (503, "Service unavailable."),
    "not-implemented": (503, "This API query is not implemented."),
    "invalid-auth-params": (400, "Missing or invalid authorization parameters."),
    "auth-failed": (401, "Credential/signature mismatch."),
    "invalid-api-params": (400, "Missing or invalid API parameters."),
    "kernel-not-found": (404, "No such kernel."),
    "kernel-already-exists": (
        400,
        "The kernel already exists with a different runtime type (language).",
    ),
    "image-not-found": (404, "No such environment image."),
    "folder-not-found": (404, "No such virtual folder."),
    "folder-already-exists": (400, "The virtual folder already exists with the same name."),
    "quota-exceeded": (412, "You have reached your resource limit."),
    "not-acceptable": (406, "The requested limits exceed this server's limits."),
    "rate-limit-exceeded": (429, "You have reached your API query rate limit."),
    "instance-not-available": (503, "There is no available instance."),
    "kernel-creation-failed": (500, "Kernel creation has failed."),
    "kernel-destruction-failed": (500, "Kernel destruction has failed."),
    "kernel-restart-failed": (500, "Kernel restart has failed."),
    "kernel-execution-failed": (500, "Executing user code in the kernel has failed."),
}


class Problem(Exception):
    """Raise anywhere in a handler to answer with a problem document."""

    def __init__(self, kind: str, detail: str | None = None) -> None:
        if kind not in CATALOGUE:
            raise ValueError(f"unknown problem type {kind}")
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail

    @property
    def status(self) -> int:
        return CATALOGUE[self.kind][0]

    @property
    def title(self) -> str:
        title = CATALOGUE[self.kind][1]
        return f"{title} ({self.detail})" if self.detail else title


def bad_params(detail: str) -> Problem:
    """The most common problem: a field is missing or wrong; `detail` names it."""
    return Problem("invalid-api-params", detail)


# engine error -> problem type; the first match in order wins (subclasses first)
ENGINE_ERRORS: tuple[tuple[type[errors.EngineError], str], ...] = (
    (errors.InvalidRequest, "invalid-api-params"),
    (errors.KernelNotFound, "kernel-not-found"),
    (errors.LanguageMismatch, "kernel-already-exists"),
    (errors.UnknownLanguage, "image-not-found"),
    (errors.QuotaExceeded, "quota-exceeded"),
    (errors.NoCapacity, "instance-not-available"),
    (errors.ServiceUnavailable, "service-unavailable"),
    (errors.ExecutionFailed, "kernel-execution-failed"),
    (errors.DestructionFailed, "kernel-destruction-failed"),
    (errors.FolderNotFound, "folder-not-found"),
    (errors.FolderExists, "folder-already-exists"),
)


def from_engine(error: errors.EngineError) -> Problem:
    """The problem a v2 client gets for an engine error."""
    if isinstance(error, errors.KernelStartFailed):
        kind = "kernel-restart-failed" if error.restart else "kernel-creation-failed"
        return Problem(kind, error.detail or None)
    for cls, kind in ENGINE_ERRORS:
        if isinstance(error, cls):
            return Problem(kind, error.detail or None)
    return Problem("internal-server-error", error.detail or None)


def type_base(request: HTTPConnection) -> str:
    """Sorna-dialect requests get the sorna.io type URIs, everyone else backend.ai's."""
    headers = request.headers
    if "x-sorna-version" in headers and "x-backendai-version" not in headers:
        return SORNA_BASE
    return BACKENDAI_BASE


def problem_response(request: HTTPConnection, problem: Problem) -> Response:
    body = json.dumps({"type": type_base(request) + problem.kind, "title": problem.title})
    return Response(body, status_code=problem.status, media_type="application/problem+json")
