"""The API's root: `GET /v2` (public: the version) and `/v2/authorize` (signed: an
echo that tells a client its signing works)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..http import Caller, json_response
from .layers import API_VERSION
from .request_schemas import AUTHORIZE, takes
from .signed import signed


async def version(request: Request) -> Response:
    response = json_response({"version": API_VERSION})
    state = request.app.state
    response.headers.update(
        state.limiter.public_headers(state.engine.settings.limits.default_rate_limit)
    )
    return response


@signed
@takes(AUTHORIZE)
async def authorize(caller: Caller, data: dict) -> Response:
    return json_response({"authorized": "yes", "echo": data.get("echo")})


def routes(prefix: str) -> list[Route]:
    return [Route(f"{prefix}/authorize", authorize, methods=["GET", "POST"])]
