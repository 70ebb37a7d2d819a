"""The Starlette application: the engine, and the faces mounted over it.

`create_app` opens the store and starts the engine (and with it the spawner) in
the application's lifespan, puts what faces share on `app.state` (the engine, the
body gate, each face's settings), and adds each face's routes and ASGI layers.
Errors that escape every face's handling are answered here in the v2 dialect,
the API every client of this server speaks today.
"""

from __future__ import annotations

import contextlib
import logging
import signal

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .engine.engine import Engine
from .engine.store_backends import open_store
from .faces import admin, jobe, metrics, piston, v2, web
from .faces.http import BodyGate
from .faces.route_groups import grouped
from .faces.v2.layers import MethodOverride, ResponseHeaders
from .faces.v2.problems import Problem, problem_response
from .faces.v2.rate_limit import RateLimiter
from .faces.v2.streams import OpenStreams
from .logs import RequestIds
from .settings import ServerConfig

log = logging.getLogger("sandbox.server")


async def http_error(request: Request, exc: HTTPException) -> Response:
    kind = {404: "generic-not-found", 405: "method-not-allowed"}.get(
        exc.status_code, "generic-bad-request"
    )
    return problem_response(request, Problem(kind))


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(request, Problem("internal-server-error"))


def create_app(config: ServerConfig) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        store = open_store(config.server.data_dir)
        app.state.v2 = config.v2
        app.state.metrics_settings = config.metrics
        app.state.web = config.web
        app.state.limiter = RateLimiter(config.v2.rate_window_seconds)
        app.state.body_gate = BodyGate(config.server.max_unverified_bodies)
        app.state.engine = await Engine.open(config.engine, store, config.server.data_dir)
        if "jobe" in config.faces.enabled:
            app.state.jobe = jobe.JobeFace(config.jobe, store.face_keys, config.server.data_dir)
        if "piston" in config.faces.enabled:
            app.state.piston = piston.PistonFace(config.piston, store.face_keys)
        try:
            yield
        finally:
            # A service manager's stop or restart (SIGTERM) leaves the kernels to the
            # next server; Ctrl-C (SIGINT) is an operator's full stop.
            keep = getattr(app.state, "stop_signal", None) == signal.SIGTERM
            await app.state.engine.close(keep_kernels=keep)
            store.close()

    routes = v2.routes() + metrics.routes() + admin.routes()
    if "jobe" in config.faces.enabled:
        routes += jobe.routes()
    if "piston" in config.faces.enabled:
        routes += piston.routes()
    if "web" in config.faces.enabled:
        routes += web.routes(config.web)
    routes = grouped(v2.PREFIXES + jobe.PREFIXES + (piston.PREFIX,), routes)
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    # before the lifespan: a stopping server (server.__main__) ends the streams
    # before uvicorn drops their connections
    app.state.streams = OpenStreams(config.v2)
    if "web" in config.faces.enabled:
        app.add_middleware(web.ApiGate, settings=config.web)
    app.add_middleware(MethodOverride)
    app.add_middleware(ResponseHeaders)
    app.add_middleware(RequestIds)  # outermost: its id is on every line of the request
    return app
