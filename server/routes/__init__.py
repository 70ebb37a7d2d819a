"""The API's routes, grouped by what they act on."""

from __future__ import annotations

from starlette.routing import Route

from . import files, kernels


def api_routes(prefix: str) -> list[Route]:
    return kernels.routes(prefix) + files.routes(prefix)
