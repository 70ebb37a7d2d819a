"""RateLimiter: a fixed window per key, consistent headers, bounded memory (spec §3)."""

from __future__ import annotations

from server.faces.v2.rate_limit import RateLimiter
from server.faces.v2.settings import V2Settings

WINDOW = V2Settings().rate_window_seconds


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_exactly_limit_requests_pass_per_window():
    clock = Clock()
    limiter = RateLimiter(WINDOW, clock=clock)
    results = [limiter.hit("AK", 3) for _ in range(5)]
    assert [allowed for allowed, _ in results] == [True, True, True, False, False]
    assert [h["X-RateLimit-Remaining"] for _, h in results] == ["2", "1", "0", "0", "0"]
    assert all(h["X-RateLimit-Limit"] == "3" for _, h in results)
    assert all(h["X-RateLimit-Window"] == "900" for _, h in results)


def test_reset_counts_down_in_milliseconds_and_the_window_is_fixed():
    clock = Clock()
    limiter = RateLimiter(WINDOW, clock=clock)
    assert limiter.hit("AK", 2)[1]["X-RateLimit-Reset"] == "900000"
    clock.now += 100.25
    allowed, headers = limiter.hit("AK", 2)
    assert allowed
    assert headers["X-RateLimit-Reset"] == "799750"
    clock.now += 799.7  # 50 ms before the window ends
    allowed, headers = limiter.hit("AK", 2)
    assert not allowed
    assert headers["X-RateLimit-Reset"] == "50"
    clock.now += 0.05  # the window has ended: a new one starts with this request
    allowed, headers = limiter.hit("AK", 2)
    assert allowed
    assert headers["X-RateLimit-Remaining"] == "1"
    assert headers["X-RateLimit-Reset"] == "900000"


def test_keys_are_counted_separately():
    limiter = RateLimiter(WINDOW, clock=Clock())
    assert limiter.hit("A", 1)[0]
    assert not limiter.hit("A", 1)[0]
    assert limiter.hit("B", 1)[0]


def test_custom_window():
    clock = Clock()
    limiter = RateLimiter(10, clock=clock)
    _, headers = limiter.hit("AK", 5)
    assert headers["X-RateLimit-Window"] == "10"
    assert headers["X-RateLimit-Reset"] == "10000"
    clock.now += 10
    assert limiter.hit("AK", 5)[1]["X-RateLimit-Remaining"] == "4"


def test_memory_forgets_ended_windows():
    clock = Clock()
    limiter = RateLimiter(WINDOW, clock=clock)
    for i in range(1000):
        limiter.hit(f"K{i}", 10)
    clock.now += 600
    limiter.hit("late", 10)
    assert len(limiter._windows) == 1001
    clock.now += 400  # every window but "late"'s has ended
    limiter.hit("fresh", 10)
    assert set(limiter._windows) == {"late", "fresh"}


def test_public_headers_by_default_are_the_originals_constants():
    assert RateLimiter(WINDOW).public_headers(1000) == {
        "X-RateLimit-Limit": "1000",
        "X-RateLimit-Remaining": "1000",
        "X-RateLimit-Reset": "900000",
        "X-RateLimit-Window": "900",
    }
