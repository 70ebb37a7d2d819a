"""The API's routes, grouped by what they act on."""

from __future__ import annotations

from starlette.routing import Route

from . import files, folders, kernels, languages, streams


def api_routes(prefix: str) -> list[Route]:
    # languages first: /kernel/languages would otherwise match /kernel/{kernel_id}
    return (
        languages.routes(prefix)
        + kernels.routes(prefix)
        + files.routes(prefix)
        + folders.routes(prefix)
        + streams.routes(prefix)
    )
