"""The operators' view of a running server, for `sandbox-admin kernels` and
`sandbox-admin status`: every live kernel (its id, owner's access key, language,
state, age, idle time, memory and CPU) and the server's state (the cgroup
layout, the warm pool, the limits, the jobs), and destroying one kernel.

Only clients on this machine are answered (a 403 for anyone else): the commands
run beside the server, and no key is needed, as none is for the data directory
they also read.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ...engine.engine import Engine
from ...engine.errors import KernelNotFound
from ..http import json_response

ADMIN_REASON = "destroyed by an admin"


def _local(request: Request) -> bool:
    try:
        return ipaddress.ip_address(request.client.host if request.client else "").is_loopback
    except ValueError:
        return False


def _refused() -> Response:
    return json_response({"error": "the admin API answers clients on this machine only"}, 403)


async def kernels(request: Request) -> Response:
    if not _local(request):
        return _refused()
    engine: Engine = request.app.state.engine
    now = time.monotonic()
    sessions = list(engine.registry.sessions.values())
    stats = await asyncio.gather(*(s.stats() for s in sessions))
    listing = [
        {
            "id": s.id,
            "key": s.access_key,
            "lang": s.lang,
            "state": s.state,
            "ageSeconds": round(now - s.created, 1),
            "idleSeconds": round(now - s.last_used, 1),
            "memoryBytes": st.get("memory_current", 0),
            "cpuMs": round(s.cpu_ms_before_restart + st.get("cpu_usec", 0) / 1000),
        }
        for s, st in zip(sessions, stats, strict=True)
    ]
    return json_response({"kernels": sorted(listing, key=lambda k: -k["ageSeconds"])})


async def destroy(request: Request) -> Response:
    if not _local(request):
        return _refused()
    engine: Engine = request.app.state.engine
    try:
        session = engine.session_by_id(request.path_params["kernel_id"])
    except KernelNotFound:
        return json_response({"error": "no such kernel"}, 404)
    gone = await engine.destroy(session, ADMIN_REASON)
    return json_response({"destroyed": session.id, "allGone": gone})


async def status(request: Request) -> Response:
    if not _local(request):
        return _refused()
    engine: Engine = request.app.state.engine
    registry, limits = engine.registry, engine.settings.limits
    spawner = await engine.spawner.info()
    return json_response({
        "layout": spawner.get("layout"),
        "kernels": len(registry.sessions),
        "maxKernels": limits.max_kernels,
        "pool": {lang: len(ready) for lang, ready in registry.pool.ready.items()},
        "poolSize": registry.pool.sizes(),
        "spares": len(spawner.get("spares", [])),
        "jobs": {"waiting": engine.jobs.waiting, "maxRunning": engine.jobs.max_running},
        "defaultMemoryBytes": limits.default_memory_bytes,
        "keys": len(registry.per_key),
    })  # fmt: skip


def routes() -> list[BaseRoute]:
    return [
        Route("/admin/kernels", kernels, methods=["GET"]),
        Route("/admin/kernels/{kernel_id}", destroy, methods=["DELETE"]),
        Route("/admin/status", status, methods=["GET"]),
    ]
