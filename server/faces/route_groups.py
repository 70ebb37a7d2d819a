"""Routes grouped under a literal path prefix, so that the router looks at a face's
routes only for paths under that prefix.

Why: Starlette's router tries its routes one after another, a regular expression
each, until one matches. The v2 face has about 150 routes (three prefixes,
trailing-slash variants, streams), and a face added after it paid for all of them
on every request: routing was a quarter of the server's instructions for a Jobe
run (callgrind: 3.13M per run with the Jobe routes behind v2's, 2.31M with them
first). A group is one prefix test for the paths that are not under it.

A group answers exactly as its routes would in its place in a flat list, as long
as every route in it lies under its prefix (checked when it is made): no route
outside the group can match a path under it, so grouping only skips routes that
could not have matched. Inside, the routes keep their order, and a full match
wins over an earlier partial one (a method another route allows: 405), as
Starlette's router has it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from starlette.datastructures import URLPath
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

_MATCHED = "sandbox.route_group.matched"  # the inner route, from matches to handle


def _route_path(scope: Scope) -> str:
    """The path the routes match: the request's, less the application's root_path
    (as Starlette's routes take it)."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and (path == root or path[len(root)] == "/"):
        return path[len(root) :]
    return path


class RouteGroup(BaseRoute):
    def __init__(self, prefix: str, routes: Sequence[BaseRoute]) -> None:
        if not prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError(f"a group's prefix is a path without a trailing slash: {prefix!r}")
        for route in routes:
            path = getattr(route, "path", None)
            if not isinstance(path, str) or not _is_under(path, prefix):
                raise ValueError(f"route {path!r} is not under the group's prefix {prefix!r}")
        self.prefix = prefix
        self.routes = list(routes)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if not _is_under(_route_path(scope), self.prefix):
            return Match.NONE, {}
        partial: Scope | None = None
        for route in self.routes:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                return Match.FULL, {**child_scope, _MATCHED: route}
            if match is Match.PARTIAL and partial is None:
                partial = {**child_scope, _MATCHED: route}
        if partial is not None:
            return Match.PARTIAL, partial
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = scope.pop(_MATCHED)
        scope["route"] = route  # the route that answers, as the router would set it
        await route.handle(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        for route in self.routes:
            try:
                return route.url_path_for(name, **path_params)
            except NoMatchFound:
                pass
        raise NoMatchFound(name, path_params)


def _is_under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def grouped(prefixes: Iterable[str], routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    """`routes` with those under each of `prefixes` gathered into one group, placed
    where the first of them was; the rest as they were. A route outside the groups
    whose path could still match under a prefix (one that starts with a parameter,
    such as a catch-all, or a mount of everything) would make the order matter: it
    is refused."""
    members: dict[str, list[BaseRoute]] = {prefix: [] for prefix in prefixes}
    for route in routes:
        path = getattr(route, "path", "")
        prefix = next((p for p in members if _is_under(path, p)), None)
        if prefix is not None:
            members[prefix].append(route)
            continue
        literal = path.split("{", 1)[0]
        reaches = "{" in path or path == ""  # a parameter's match, or a mount at the root
        clash = [p for p in members if (p + "/").startswith(literal) and reaches]
        if clash:
            raise ValueError(
                f"route {path!r} could match under {clash[0]!r}: keep it out of groups"
            )
    found: list[BaseRoute] = []
    placed: set[str] = set()
    for route in routes:
        prefix = next((p for p, rs in members.items() if route in rs), None)
        if prefix is None:
            found.append(route)
        elif prefix not in placed:
            placed.add(prefix)
            found.append(RouteGroup(prefix, members[prefix]))
    return found


def flat(routes: Iterable[BaseRoute]) -> Iterable[BaseRoute]:
    """Every route, those in groups in their group's place (for a document of them)."""
    for route in routes:
        if isinstance(route, RouteGroup):
            yield from route.routes
        else:
            yield route
