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
import contextlib
from collections.abc import AsyncIterator


class BodyGate:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._reading: dict[asyncio.Timeout, None] = {}  # insertion-ordered: oldest first

    def __len__(self) -> int:
        return len(self._reading)

    @contextlib.asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """Hold one of the places while the block reads a body; TimeoutError out of
        the block if a newer read evicts this one."""
        async with asyncio.timeout(None) as place:
            while len(self._reading) >= self.limit:
                oldest = next(iter(self._reading))
                del self._reading[oldest]
                oldest.reschedule(asyncio.get_running_loop().time())  # raise at its await
            self._reading[place] = None
            try:
                yield
            finally:
                self._reading.pop(place, None)
