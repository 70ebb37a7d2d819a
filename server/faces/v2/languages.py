"""GET /v2/kernel/languages: which langs this host runs, their aliases and versions.

Public like `GET /v2`: it tells a newcomer (or a curl user) what to pass as
`lang` before they have set up signing. Versions come from running each
runtime's version command once, in a thread, the first time someone asks.
"""

from __future__ import annotations

import asyncio
import functools

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox import languages

from ..http import json_response


@functools.cache
def _describe() -> list[dict]:
    rows = []
    for row in languages.LANGUAGES:
        missing = row.missing()
        rows.append(
            {
                "lang": row.name,
                "aliases": list(row.aliases),
                "available": not missing,
                "version": None if missing else row.installed_version(),
                "missing": missing,
                "install": f"apt-get install {row.packages}" if missing else None,
                "queryMode": {"python": "repl", "node": "repl"}.get(row.query.kind, "program"),
                "batchDefaults": {"build": bool(row.build), "exec": bool(row.exec)},
            }
        )
    return rows


async def list_languages(request: Request) -> Response:
    state = request.app.state
    ready = state.engine.registry.pool.ready
    rows = [
        {**row, "warm": len(ready.get(row["lang"], ()))}  # kernels waiting in the pool
        for row in await asyncio.to_thread(_describe)
    ]
    response = json_response({"languages": rows})
    limit = state.engine.settings.limits.default_rate_limit
    response.headers.update(state.limiter.public_headers(limit))
    return response


def routes(prefix: str) -> list[Route]:
    return [Route(f"{prefix}/kernel/languages", list_languages, methods=["GET"])]
