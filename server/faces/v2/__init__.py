"""The Backend.AI / Sorna v2 API face: signed requests, problem+json errors, rate
limits, and the kernel, file and folder endpoints over the engine.

The same routes answer under /v2 (what the clients use), /v3 and /v1; the
streams also without a prefix, as 18.12 served them. /v2/openapi.json describes
them, and /v2/docs shows that (openapi.py).
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from . import files, folders, kernels, languages, openapi, root, streams

PREFIXES = ("/v2", "/v3", "/v1")  # matched in order: the clients' /v2 first


def routes() -> list[BaseRoute]:
    found: list[BaseRoute] = [Route(f"/v{n}", root.version, methods=["GET"]) for n in (1, 2, 3)]
    for prefix in PREFIXES:
        # languages first: /kernel/languages would otherwise match /kernel/{kernel_id}
        found += (
            root.routes(prefix)
            + languages.routes(prefix)
            + kernels.routes(prefix)
            + files.routes(prefix)
            + folders.routes(prefix)
            + streams.routes(prefix)
        )
    return found + streams.routes("") + openapi.routes()
