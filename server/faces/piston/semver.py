"""The version selectors Piston takes (node-semver ranges, as `semver.satisfies`
reads them), for our runtimes' plain x.y.z versions.

Supported: `*`, `x`, exact versions, partial versions and x-ranges (`3`, `3.x`,
`3.11.*`), comparators (`>=3.10`, `<4`, `=3.11.2`), `^` and `~`, hyphen ranges
(`3.9 - 3.11`), comparators joined by spaces (all must hold) and `||` (any).
A selector that does not parse matches nothing, as in node-semver.
"""

from __future__ import annotations

import re

Version = tuple[int, int, int]
_PART = re.compile(r"^(?:v|=)?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?$")
_COMPARATOR = re.compile(r"^(<=|>=|<|>|=|\^|~>?)?\s*(.+)$")


def parse_version(text: str) -> Version | None:
    found = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)", text.strip())
    return (int(found[1]), int(found[2]), int(found[3])) if found else None


def _partial(text: str) -> list[int] | None:
    """[major, minor, patch] given so far (x and * end it); None if it is not one."""
    found = _PART.match(text)
    if not found:
        return None
    parts = []
    for group in found.groups():
        if group is None or group in "xX*":
            break
        parts.append(int(group))
    return parts


def _bounds(op: str, parts: list[int]) -> list[tuple[str, Version]]:
    """One comparator as lower/upper bounds: [(">=" | ">" | "<" | "<=", version)]."""
    low = (*parts, 0, 0, 0)[:3]
    n = len(parts)
    if n == 0:
        return [] if op in ("", "=", ">=", "<=", "^", "~", "~>") else [("<", (0, 0, 0))]
    # the first version past a partial one: 3 -> 4.0.0, 3.11 -> 3.12.0
    nxt = (parts[0] + 1, 0, 0) if n == 1 else (parts[0], parts[1] + 1, 0) if n == 2 else None
    if op in ("", "="):
        return [(">=", low), ("<", nxt)] if nxt else [(">=", low), ("<=", low)]
    if op == ">=":
        return [(">=", low)]
    if op == ">":
        return [(">=", nxt)] if nxt else [(">", low)]
    if op == "<":
        return [("<", low)]
    if op == "<=":
        return [("<", nxt)] if nxt else [("<=", low)]
    if op in ("~", "~>"):
        top = (parts[0] + 1, 0, 0) if n == 1 else (parts[0], parts[1] + 1, 0)
        return [(">=", low), ("<", top)]
    # ^: the leftmost non-zero part may not change
    if parts[0] or n == 1:
        top = (parts[0] + 1, 0, 0)
    elif parts[1] or n == 2:
        top = (0, parts[1] + 1, 0)
    else:
        top = (0, 0, parts[2] + 1)
    return [(">=", low), ("<", top)]


def _holds(version: Version, bounds: list[tuple[str, Version]]) -> bool:
    checks = {
        ">=": lambda v: version >= v,
        ">": lambda v: version > v,
        "<": lambda v: version < v,
        "<=": lambda v: version <= v,
    }
    return all(checks[op](v) for op, v in bounds)


def _conjunction(text: str) -> list[tuple[str, Version]] | None:
    text = text.strip()
    hyphen = re.fullmatch(r"(\S+)\s+-\s+(\S+)", text)
    if hyphen:
        low, high = _partial(hyphen[1]), _partial(hyphen[2])
        if low is None or high is None:
            return None
        return _bounds(">=", low) + _bounds("<=", high)
    bounds: list[tuple[str, Version]] = []
    tokens = re.sub(r"(<=|>=|<|>|=|\^|~>?)\s+", r"\1", text).split()
    for token in tokens or ["*"]:
        found = _COMPARATOR.match(token)
        parts = _partial(found[2]) if found else None
        if parts is None:
            return None
        bounds += _bounds(found[1] or "", parts)
    return bounds


def satisfies(version: str, selector: str) -> bool:
    """Whether `version` (x.y.z) is in the range `selector`."""
    parsed = parse_version(version)
    if parsed is None or not isinstance(selector, str):
        return False
    for alternative in selector.split("||"):
        bounds = _conjunction(alternative)
        if bounds is not None and _holds(parsed, bounds):
            return True
    return False
