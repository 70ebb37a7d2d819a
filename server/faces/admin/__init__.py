"""The operators' view of a running server, for `sandbox-admin kernels`,
`sandbox-admin status` and `sandbox-admin pool`: every live kernel (its id,
owner's access key, language, state, age, idle time, memory and CPU) and the
server's state (the cgroup layout, the warm pool, the limits, the jobs),
destroying one kernel, and readying the pool for a class about to begin.

Only clients on this machine are answered (a 403 for anyone else): the commands
run beside the server, and no key is needed, as none is for the data directory
they also read.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sandbox import languages

from ...engine.engine import Engine
from ...engine.errors import KernelNotFound
from ..http import BodyTooLarge, json_response, read_body

ADMIN_REASON = "destroyed by an admin"
POOL_BODY_BYTES = 1024  # {"lang": ..., "size": ...}
MAX_POOL_SIZE = 100_000  # a size past any pool_max: asking for more is a typo


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


async def pool(request: Request) -> Response:
    """Ready the pool for a burst: `{"lang": L, "size": N}` keeps N of L's kernels
    waiting for the next pool_shrink_seconds (at most pool_max), as if a class of N
    had just pressed Run; answers how many it will keep."""
    if not _local(request):
        return _refused()
    engine: Engine = request.app.state.engine
    try:
        body = json.loads(await read_body(request, POOL_BODY_BYTES))
    except BodyTooLarge as e:
        return _bad(f"body: {e}")
    except ValueError:
        return _bad("body: not JSON")
    if not isinstance(body, dict):
        return _bad("body: not a JSON object")
    lang, size = body.get("lang"), body.get("size")
    if not isinstance(lang, str):
        return _bad("lang: a language's name is required")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_POOL_SIZE:
        return _bad(f"size: a whole number from 0 to {MAX_POOL_SIZE} is required")
    row = languages.resolve(lang)
    pooled = engine.registry.pool
    if row is None or row.name not in pooled.kinds:
        return _bad(f"lang: {lang!r} is not pooled here (pool_languages: {sorted(pooled.kinds)})")
    if pooled.settings.pool_size == 0:
        return json_response({"error": "the pool is off (pool_size = 0)"}, 409)
    kept = pooled.expect(row.name, size)
    seconds = pooled.settings.pool_shrink_seconds
    return json_response({"lang": row.name, "size": kept, "forSeconds": seconds})


def _bad(why: str) -> Response:
    return json_response({"error": why}, 400)


def routes() -> list[BaseRoute]:
    return [
        Route("/admin/kernels", kernels, methods=["GET"]),
        Route("/admin/kernels/{kernel_id}", destroy, methods=["DELETE"]),
        Route("/admin/status", status, methods=["GET"]),
        Route("/admin/pool", pool, methods=["POST"]),
    ]
