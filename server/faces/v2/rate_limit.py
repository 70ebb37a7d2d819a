"""Per-access-key request limits in fixed windows, 15 minutes by default (spec §3, §12.7).

The window opens at a key's first request and lasts `window` seconds on the
monotonic clock, as in sorna-manager 0.9.x; every request counts, failed ones
too. State lives in memory: limits reset when the server restarts, as they did
when the original's Redis was flushed.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimiter:
    """Counts requests per access key; `hit` says whether this one may pass.

    Exactly `limit` requests pass per window. Remaining is the number that may
    still pass after this one, so the first request of a window reports
    `limit - 1` and the last one allowed reports 0, and a client that stops at
    Remaining 0 never sees a 429. (0.9.x reported `limit` on the first request
    and still refused the request after the one reporting 1; MGR ≥1.1 counts
    like this module.)

    Not thread-safe: call it from the event loop only.
    """

    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (window end, requests)
        self._next_sweep = clock() + window

    def hit(self, access_key: str, limit: int) -> tuple[bool, dict[str, str]]:
        """Count one request of `access_key`; (allowed, the X-RateLimit-* headers)."""
        now = self.clock()
        if now >= self._next_sweep:
            self._forget_ended(now)
        end, count = self._windows.get(access_key, (now, 0))
        if now >= end:
            end, count = now + self.window, 0
        count += 1
        self._windows[access_key] = (end, count)
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - count)),
            "X-RateLimit-Reset": str(max(0, round((end - now) * 1000))),
            "X-RateLimit-Window": f"{self.window:g}",
        }
        return count <= limit, headers

    def public_headers(self, limit: int) -> dict[str, str]:
        """What unauthenticated requests (GET /v2) get: a fresh window of a new key's
        limit, as the original reported its constants there (§3)."""
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(limit),
            "X-RateLimit-Reset": str(round(self.window * 1000)),
            "X-RateLimit-Window": f"{self.window:g}",
        }

    def _forget_ended(self, now: float) -> None:
        """Drop keys whose window is over; run once a window, so memory holds about
        the keys seen in the last two windows."""
        self._windows = {k: v for k, v in self._windows.items() if v[0] > now}
        self._next_sweep = now + self.window
