"""The v2 API as an OpenAPI 3.1 document, at GET /v2/openapi.json, and as a page
at GET /v2/docs (Redoc, its script served from here).

The document is built from the running app's route table: every HTTP route
under /v2 (the WebSocket streams aside) must have an entry in
operations.OPERATIONS, and its request shapes are the ones its handler declared
with request_schemas.takes, the same objects that validate its requests. A route
without an entry, or an entry without a route, fails the build (and the tests),
so the document follows the routes.

Streams are not in it: OpenAPI describes request and response, not a WebSocket,
and a plain GET on a stream's path only ever answers 400. docs/api.md describes
them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from ...engine.folders import NAME_RE
from .. import route_groups
from . import streams
from .layers import API_VERSION
from .operations import OPERATIONS, Operation
from .problems import CATALOGUE, Problem, problem_response
from .request_schemas import REGISTRY, Shape
from .response_schemas import KERNEL_ID, PROBLEM

PREFIX = "/v2"  # what the document describes; /v3 and /v1 serve the same
VENDOR_DIR = os.path.join(os.path.dirname(__file__), "docs_static", "vendor")
REDOC = "redoc.standalone.js"  # npm redoc, pinned in server/faces/web/assets; scripts/setup-web

PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "kernel_id": KERNEL_ID,
    "name": {
        "type": "string",
        "pattern": NAME_RE.pattern,
        "description": "a folder's name, or its id",
    },
}
RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
# An upload's form as uploads.read_upload reads it (its own checks, not a schema's):
# any field name (the clients send "src"); each file part's filename is its path.
UPLOAD_FORM = {
    "type": "object",
    "properties": {"src": {"type": "array", "items": {"type": "string", "format": "binary"}}},
    "description": "Each part's filename is its path under /home/work. The signature "
    "covers an empty body.",
}

SIGNING = """\
Every request but the public ones (GET /v2, GET /v2/kernel/languages, this document \
and its page) is signed with the key pair's secret key (spec §2):

1. `key = HMAC(HMAC(secret_key, YYYYMMDD), host)`, where YYYYMMDD is the date \
written in the date header and host is the Host header as sent (port included).
2. The string to sign is seven lines joined by `\\n`: the method in upper case; \
the path with its query string; the date header's value as sent; \
`host:<Host>`; `content-type:<the MIME type alone, lower case; \
application/octet-stream if none>`; `x-backendai-version:<version>` (or \
`x-sorna-version:`, whichever header was sent); the hex SHA-256 of the body \
(of an empty body for multipart/form-data uploads).
3. `Authorization: BackendAI signMethod=HMAC-SHA256, credential=<access key>:<hex \
HMAC-SHA256(key, string to sign)>` (`Sorna` works as the type too).

With it go `Date` (or `X-BackendAI-Date`), within 15 minutes of the server's \
clock, and `X-BackendAI-Version: v2.20170315` (or `X-Sorna-Version`). \
`sandbox-admin sign` prints the headers of one request."""

DESCRIPTION = f"""\
The Backend.AI / Sorna HTTP API v2 as this server speaks it. `/v3` and `/v1` \
serve the same operations as `/v2`.

Errors are RFC 7807 problem documents (`application/problem+json`); the title \
names the field or the reason. Responses to signed requests carry \
X-RateLimit-* headers. `X-Method-Override: M` on a POST routes it as M (signed \
as M).

The WebSocket streams (`/v2/stream/kernel/{{kernel_id}}/execute`, `pty`, \
`events`) are not in this document: OpenAPI describes requests and responses, \
not sockets. docs/api.md describes them.

{SIGNING}"""

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; "
    "style-src 'self' 'unsafe-inline'; "  # Redoc's styled-components write <style> elements
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "worker-src blob:; "  # its search index runs in a worker made from a blob
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sandbox-server: the v2 API</title>
</head>
<body>
<redoc spec-url="openapi.json"></redoc>
<script src="docs/{REDOC}"></script>
</body>
</html>
"""


def _problem_responses() -> dict[str, Any]:
    kinds: dict[int, list[str]] = {}
    for kind, (status, _title) in CATALOGUE.items():
        kinds.setdefault(status, []).append(f"`{kind}`")
    return {
        f"Problem{status}": {
            "description": "A problem: " + ", ".join(names),
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
        }
        for status, names in sorted(kinds.items())
    }


def _request(op: Operation, route: Route) -> tuple[list[dict], dict | None]:
    """The operation's parameters and request body, from what its handler declared."""
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": PATH_PARAMETERS[name]}
        for name in route.param_convertors
    ]
    query: Shape | None = getattr(route.endpoint, "request_query", None)
    if query is not None:
        required = query.schema.get("required", [])
        parameters += [
            {"name": name, "in": "query", "required": name in required, "schema": schema}
            for name, schema in query.schema["properties"].items()
        ]
    body: Shape | None = getattr(route.endpoint, "request_body", None)
    if op.upload:
        form = {"multipart/form-data": {"schema": UPLOAD_FORM}}
        return parameters, {"required": True, "content": form}
    if body is None:
        return parameters, None
    ref = {"$ref": f"#/components/schemas/{body.name}"}
    needed = bool(body.schema.get("required") or body.schema.get("anyOf"))
    return parameters, {"required": needed, "content": {"application/json": {"schema": ref}}}


def _operation(op: Operation, route: Route) -> dict[str, Any]:
    parameters, body = _request(op, route)
    found: dict[str, Any] = {"operationId": op.id, "summary": op.summary, "tags": [op.tag]}
    if op.description:
        found["description"] = op.description
    if parameters:
        found["parameters"] = parameters
    if body is not None:
        found["requestBody"] = body
    responses: dict[str, Any] = {}
    if op.status is not None:
        ok: dict[str, Any] = {"description": "Done."}
        if op.body is not None:
            ok["content"] = {op.media: {"schema": op.body}}
        if not op.public:
            ok["headers"] = {
                name: {"$ref": f"#/components/headers/{name}"} for name in RATE_HEADERS
            }
        if op.links:
            ok["links"] = op.links
        responses[str(op.status)] = ok
    for status in op.errors:
        responses[str(status)] = {"$ref": f"#/components/responses/Problem{status}"}
    found["responses"] = responses
    if op.public:
        found["security"] = []
    return found


def _api_routes(routes: Iterable[BaseRoute]) -> Iterable[tuple[str, Route]]:
    """(method, route) of each HTTP route under PREFIX but the streams' (HEAD aside)."""
    sockets = {route.path for route in streams.routes(PREFIX)}
    for route in route_groups.flat(routes):
        if not isinstance(route, Route) or route.path in sockets:
            continue
        if route.path == PREFIX or route.path.startswith(PREFIX + "/"):
            for method in sorted((route.methods or set()) - {"HEAD"}):
                yield method, route


def document(routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the /v2 routes among `routes`."""
    paths: dict[str, dict[str, Any]] = {}
    for method, route in _api_routes(routes):
        op = OPERATIONS.get((method, route.path[len(PREFIX) :]))
        if op is None:
            raise LookupError(f"{method} {route.path} is not in operations.OPERATIONS")
        paths.setdefault(route.path, {})[method.lower()] = _operation(op, route)
    documented = {(m.upper(), p) for p, item in paths.items() for m in item}
    unrouted = {(m, PREFIX + p) for m, p in OPERATIONS} - documented
    if unrouted:
        raise LookupError(f"operations without a route: {sorted(unrouted)}")
    rate = "Per key; the window starts at the key's first request in it."
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "sandbox-server: the v2 API",
            "version": API_VERSION,
            "description": DESCRIPTION,
        },
        "tags": [
            {"name": "meta", "description": "The API itself."},
            {"name": "kernels", "description": "Kernels and running code (spec §5, §6)."},
            {"name": "files", "description": "A kernel's files (spec §5.6, §5.9)."},
            {"name": "folders", "description": "Virtual folders (spec §7.4)."},
        ],
        "security": [{"signature": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "signature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": SIGNING,
                }
            },
            "schemas": {
                "Problem": PROBLEM,
                **{name: shape.schema for name, shape in REGISTRY.items()},
            },
            "responses": _problem_responses(),
            "headers": {
                "X-RateLimit-Limit": {
                    "description": "The key's requests per window.",
                    "schema": {"type": "integer", "minimum": 0},
                },
                "X-RateLimit-Remaining": {
                    "description": "Requests left in this window. " + rate,
                    "schema": {"type": "integer", "minimum": 0},
                },
                "X-RateLimit-Reset": {
                    "description": "Milliseconds until the window ends.",
                    "schema": {"type": "integer", "minimum": 0},
                },
            },
        },
    }


async def openapi_json(request: Request) -> Response:
    state = request.app.state
    body = getattr(state, "v2_openapi", None)
    if body is None:  # built once per app, at the first request
        body = state.v2_openapi = json.dumps(document(request.app.routes)).encode()
    return Response(body, media_type="application/json")


async def docs(request: Request) -> Response:
    return HTMLResponse(PAGE, headers=SECURITY_HEADERS)


async def docs_script(request: Request) -> Response:
    path = os.path.join(VENDOR_DIR, REDOC)
    if not os.path.isfile(path):
        detail = f"{REDOC} is not installed here (scripts/setup-web installs it)"
        return problem_response(request, Problem("generic-not-found", detail))
    headers = {**SECURITY_HEADERS, "cache-control": "no-cache"}  # revalidate: ETag
    return FileResponse(path, media_type="text/javascript", headers=headers)


def routes() -> list[Route]:
    return [
        Route(f"{PREFIX}/openapi.json", openapi_json, methods=["GET"]),
        Route(f"{PREFIX}/docs", docs, methods=["GET"]),
        Route(f"{PREFIX}/docs/{REDOC}", docs_script, methods=["GET"]),
    ]
