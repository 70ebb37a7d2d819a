"""The last resort of the error mapping: a bug in a handler is a 500
internal-server-error problem that reveals nothing of the exception."""

from __future__ import annotations

import asyncio

import httpx
from starlette.routing import Route

from server.app import create_app
from server.config import ServerConfig


def test_an_unhandled_exception_is_an_internal_server_error_problem(tmp_path):
    app = create_app(ServerConfig(data_dir=str(tmp_path)))

    async def buggy(request):
        raise RuntimeError("a secret detail: /etc/shadow")

    app.router.routes.append(Route("/v2/buggy", buggy))  # lifespan not run: no spawner
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/v2/buggy")

    r = asyncio.run(get())
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json() == {
        "type": "https://api.backend.ai/probs/internal-server-error",
        "title": "Internal server error.",
    }
    assert int(r.headers["content-length"]) == len(r.content)
