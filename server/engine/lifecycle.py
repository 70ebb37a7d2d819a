"""A kernel's lifecycle events (started, restarted, terminated), for whoever watches.

The registry publishes them; a face's events stream (spec §7.2) subscribes. Each
session keeps its last few events, so a watcher that connects after the kernel
started still learns how it got where it is. A watcher that falls behind by a
whole queue is dropped (its queue gets None) rather than held without bound.

Reasons are canonical slugs, as the v2 docs name them ("out-of-memory",
"execution-timeout", ...), with the registry's sentence beside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass

STARTED, RESTARTED, TERMINATED = "kernel_started", "kernel_restarted", "kernel_terminated"
HISTORY = 16  # events kept per kernel for a watcher that comes later
QUEUE = 64  # events a watcher may be behind before it is dropped

# The registry's reason sentences, by how they start -> the canonical slug.
REASON_SLUGS = (
    ("destroyed by the client", "user-requested"),
    ("restarted by the client", "user-requested"),
    ("created", "user-requested"),
    ("exec timeout", "execution-timeout"),
    ("idle timeout", "idle-timeout"),
    ("CPU credit", "cpu-credit-exhausted"),
    ("out of memory", "out-of-memory"),
    ("server shutdown", "server-shutdown"),
    ("the server's spawner died", "server-failure"),
    ("its restart failed", "restart-failed"),
    ("the kernel exited", "kernel-exited"),
    ("it broke the kernel protocol", "bad-action"),
    ("the job ended", "job-ended"),
    (
        "destroyed by an admin",
        "admin-requested",
    ),  # a one-shot job's kernel (the Jobe and Piston faces)
)


def reason_slug(reason: str) -> str:
    """The canonical slug of a registry reason. One that fits none is the host
    ending a kernel for what it did (a flood past its bounds, an op it would not
    read): "bad-action", as the v2 docs call it."""
    for start, slug in REASON_SLUGS:
        if reason.startswith(start):
            return slug
    return "bad-action"


@dataclass(frozen=True)
class LifecycleEvent:
    name: str  # STARTED, RESTARTED or TERMINATED
    reason: str  # a slug (reason_slug)
    detail: str  # the registry's sentence
    time: float  # wall clock, seconds since the epoch

    def as_json(self) -> dict:
        return {
            "name": self.name,
            "reason": self.reason,
            "detail": self.detail,
            "time": round(self.time, 3),
        }


class Lifecycle:
    """One kernel's events: the last HISTORY of them, and the queues watching."""

    def __init__(self) -> None:
        self.history: deque[LifecycleEvent] = deque(maxlen=HISTORY)
        self.watchers: set[asyncio.Queue[LifecycleEvent | None]] = set()

    def publish(self, name: str, reason: str) -> None:
        event = LifecycleEvent(name, reason_slug(reason), reason, time.time())
        self.history.append(event)
        for queue in list(self.watchers):
            if queue.qsize() >= QUEUE - 1:  # one slot stays for the None that drops it
                self.watchers.discard(queue)
                queue.put_nowait(None)
            else:
                queue.put_nowait(event)

    @contextlib.contextmanager
    def watching(self):
        """A queue of the events so far and those to come; None ends it (dropped)."""
        queue: asyncio.Queue[LifecycleEvent | None] = asyncio.Queue(QUEUE)
        for event in self.history:
            queue.put_nowait(event)
        self.watchers.add(queue)
        try:
            yield queue
        finally:
            self.watchers.discard(queue)
