"""Grouping routes under their prefixes (server/faces/route_groups.py) changes no
answer: the same requests get the same routes, 405s, redirects and 404s from a
grouped router as from the flat list, and the server's own app keeps every route."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from server.app import create_app
from server.faces import admin, jobe, metrics, piston, route_groups, v2
from server.faces.route_groups import RouteGroup, grouped
from server.settings import ServerConfig

EVERY = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


def _answer(name: str):
    async def endpoint(request: Request) -> PlainTextResponse:
        route = request.scope["route"]
        return PlainTextResponse(f"{name} {route.path} {sorted(request.path_params.items())}")

    return endpoint


def _routes() -> list:
    found: list = [Route(f"/v{n}", _answer(f"version{n}"), methods=["GET"]) for n in (1, 2)]
    for prefix in ("/v2", "/v1"):
        found += [
            Route(f"{prefix}/kernel/languages", _answer("languages"), methods=["GET"]),
            Route(f"{prefix}/kernel/{{kernel_id}}", _answer("get"), methods=["GET"]),
            Route(f"{prefix}/kernel/{{kernel_id}}", _answer("execute"), methods=["POST"]),
            Route(f"{prefix}/kernel/", _answer("create"), methods=["POST"]),
        ]
    found += [Route("/stream/kernel/{kernel_id}", _answer("stream"), methods=["GET"])]
    for slash in ("", "/"):
        found.append(Route(f"/restapi/runs{slash}", _answer("runs"), methods=["POST"]))
    found.append(Route("/restapi/{rest:path}", _answer("jobe-404"), methods=EVERY))
    found.append(Route("/restapi", _answer("jobe-bare"), methods=EVERY))
    found.append(Mount("/static", app=PlainTextResponse("static")))
    return found


REQUESTS = [
    ("GET", "/v2"),
    ("GET", "/v1"),
    ("GET", "/v3"),
    ("POST", "/v2"),
    ("GET", "/v2/kernel/languages"),
    ("POST", "/v2/kernel/languages"),  # a partial match of another route: 405
    ("GET", "/v2/kernel/abc"),
    ("POST", "/v2/kernel/abc"),
    ("DELETE", "/v2/kernel/abc"),
    ("POST", "/v2/kernel/"),
    ("POST", "/v2/kernel"),  # redirected to the trailing slash
    ("GET", "/v2/kernel/abc/"),  # redirected without it
    ("GET", "/v1/kernel/xyz"),
    ("GET", "/v2x/kernel/abc"),
    ("GET", "/v2/nothing"),
    ("GET", "/stream/kernel/k1"),
    ("POST", "/restapi/runs"),
    ("POST", "/restapi/runs/"),
    ("GET", "/restapi/runs"),
    ("PUT", "/restapi/files/f1"),
    ("GET", "/restapi"),
    ("GET", "/restapi/"),
    ("GET", "/static/a.js"),
    ("GET", "/"),
    ("GET", "/elsewhere"),
]


def _answers(routes: list) -> list[tuple[int, str, str]]:
    app = Starlette(routes=routes)

    async def ask() -> list[tuple[int, str, str]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            found = []
            for method, path in REQUESTS:
                r = await client.request(method, path, follow_redirects=False)
                found.append((r.status_code, r.headers.get("location", ""), r.text))
            return found

    return asyncio.run(ask())


def test_a_grouped_router_answers_as_the_flat_list():
    flat = _answers(_routes())
    routes = grouped(("/v2", "/v1", "/restapi"), _routes())
    assert sum(isinstance(r, RouteGroup) for r in routes) == 3
    assert len(routes) < len(_routes())
    assert _answers(routes) == flat
    # the cases above do reach every kind of answer
    statuses = {status for status, _, _ in flat}
    assert {200, 307, 404, 405} <= statuses


def test_a_route_that_could_match_under_a_prefix_is_refused():
    catch_all = Route("/{rest:path}", _answer("all"), methods=["GET"])
    with pytest.raises(ValueError, match="could match under '/v2'"):
        grouped(("/v2",), [*_routes(), catch_all])
    with pytest.raises(ValueError, match="could match under '/v2'"):
        grouped(("/v2",), [*_routes(), Mount("", app=PlainTextResponse("all"))])
    with pytest.raises(ValueError, match="not under"):
        RouteGroup("/v2", [Route("/v1/x", _answer("x"))])


def test_the_servers_app_keeps_every_route_in_its_order(tmp_path):
    config = {"server": {"data_dir": str(tmp_path)}, "faces": {"enabled": ["jobe", "piston"]}}
    app = create_app(ServerConfig.build(config))
    prefixes = {r.prefix for r in app.routes if isinstance(r, RouteGroup)}
    assert prefixes == {"/v2", "/v3", "/v1", "/jobe/index.php/restapi", "/restapi", "/api/v2"}

    def key(route) -> tuple[str, tuple[str, ...]]:
        return route.path, tuple(sorted(getattr(route, "methods", None) or ()))

    made = v2.routes() + metrics.routes() + admin.routes() + jobe.routes() + piston.routes()
    served = list(route_groups.flat(app.routes))
    assert sorted(map(key, served)) == sorted(map(key, made))
    for prefix in prefixes:  # in each group, the routes in the order the faces made them
        group = next(r for r in app.routes if getattr(r, "prefix", None) == prefix)
        under = [key(r) for r in made if r.path == prefix or r.path.startswith(prefix + "/")]
        assert [key(r) for r in group.routes] == under
