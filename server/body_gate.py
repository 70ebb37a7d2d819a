"""A bound on the request bodies read before their signature can be checked.

A signature covers its body's hash, so the body of a request that names a known
access key must be read before the request can be verified; whoever knows an
access key (it travels in every request) can make the server buffer bodies.
The gate lets at most `limit` such reads run at once. A new one evicts the
oldest: a client that sends its body promptly (every real client writes it right
after its headers) finishes within a moment and is never the oldest, while reads
that dribble are dropped.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class BodyGate:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._reading: dict[asyncio.Timeout, None] = {}  # insertion-ordered: oldest first

    def __len__(self) -> int:
        return len(self._reading)

    def admitted(self) -> Place:
        """A place to hold while a block reads a body: `async with gate.admitted():`.
        TimeoutError out of the block if a newer read evicts this one."""
        return Place(self._reading, self.limit)


class Place:
    """One read's place in a BodyGate (a class, not a generator: it is on the path of
    every signed request)."""

    __slots__ = ("_reading", "_limit", "_timeout")

    def __init__(self, reading: dict[asyncio.Timeout, None], limit: int) -> None:
        self._reading = reading
        self._limit = limit
        self._timeout = asyncio.timeout(None)

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()
        while len(self._reading) >= self._limit:
            oldest = next(iter(self._reading))
            del self._reading[oldest]
            oldest.reschedule(asyncio.get_running_loop().time())  # raises at its await
        self._reading[self._timeout] = None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._reading.pop(self._timeout, None)
        return await self._timeout.__aexit__(exc_type, exc, tb)
