"""A kernel's lifecycle events: the registry's reasons as the docs' slugs, the
history a late watcher gets, and a watcher that falls behind being dropped."""

from __future__ import annotations

import pytest

from server.engine.lifecycle import (
    HISTORY,
    QUEUE,
    RESTARTED,
    STARTED,
    TERMINATED,
    Lifecycle,
    reason_slug,
)


@pytest.mark.parametrize(
    "reason, slug",
    [
        ("destroyed by the client", "user-requested"),
        ("exec timeout: a run took longer than 1 s", "execution-timeout"),
        ("idle timeout: no execute call for 600 s", "idle-timeout"),
        ("CPU credit used up: 600 s of CPU time", "cpu-credit-exhausted"),
        ("out of memory", "out-of-memory"),
        ("server shutdown", "server-shutdown"),
        ("the kernel exited (wait status 256)", "kernel-exited"),
        ("it broke the kernel protocol: frame too large", "bad-action"),
        ("it sent more than 33554432 bytes that no client took", "bad-action"),
    ],
)
def test_reasons_become_the_docs_slugs(reason, slug):
    assert reason_slug(reason) == slug


def test_a_late_watcher_gets_the_last_events_then_the_new_ones():
    life = Lifecycle()
    for _ in range(HISTORY + 3):
        life.publish(RESTARTED, "restarted by the client")
    life.publish(STARTED, "created")
    with life.watching() as queue:
        assert queue.qsize() == HISTORY
        life.publish(TERMINATED, "destroyed by the client")
        events = [queue.get_nowait() for _ in range(queue.qsize())]
    assert events[-2].name == STARTED and events[-1].name == TERMINATED
    assert events[-1].as_json()["reason"] == "user-requested"
    assert not life.watchers


def test_a_watcher_that_falls_behind_is_dropped_not_held():
    life = Lifecycle()
    with life.watching() as queue:
        for _ in range(QUEUE * 3):
            life.publish(RESTARTED, "out of memory")
        assert queue not in life.watchers
        items = [queue.get_nowait() for _ in range(queue.qsize())]
    assert items[-1] is None and len(items) <= QUEUE
