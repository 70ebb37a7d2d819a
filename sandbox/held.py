"""What the host holds for kernels, and the bounds on it.

Every byte a kernel sends is read into the server's memory before a client takes
it; without bounds one kernel printing in a loop (or many at once) would grow the
server until it is killed. Each kernel has its own `KernelBounds`; all of them
share one `HeldBytes`. Past either, the host stops reading the kernel's socket,
so its program blocks in write() until clients drain what is held.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

# Console blobs (up to 16 MiB a frame) are read, queued and counted in pieces of
# at most this much, so reading stops within a piece of a bound.
PIECE = 256 * 1024
# Past the server-wide bound, a kernel holding less than this still reads: a
# quiet kernel's few events (ready, finished, a reply) must not wait for a flood.
QUIET_BYTES = 64 * 1024


@dataclass(frozen=True)
class KernelBounds:
    """What the host holds for one kernel, and how long it waits on it (the server's
    [limits] settings give each: LimitSettings.kernel_bounds)."""

    pause_bytes: int  # held this much: stop reading until a client takes some
    held_bytes: int  # more than this (read on for a request): the kernel is ended
    send_seconds: float  # an op the kernel does not take in this long ends it
    reply_seconds: float  # request() waits this long for a reply
    max_output_bytes: int | None  # console output per run; the rest is dropped


class HeldBytes:
    """The bytes held for all the kernels of a server, against one bound: past it,
    each kernel holding more than QUIET_BYTES stops reading until clients drain."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.total = 0
        self.paused: set[asyncio.Event] = set()  # the rooms of kernels waiting for it

    @property
    def over(self) -> bool:
        return self.limit is not None and self.total > self.limit

    def add(self, n: int) -> None:
        self.total += n

    def release(self, n: int) -> None:
        was_over = self.over
        self.total -= n
        if was_over and not self.over:  # the rest were paused by their own bounds
            for room in self.paused:
                room.set()
