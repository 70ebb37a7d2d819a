"""A kept kernel's record and snapshot: what one server writes, the next reads back;
a record it cannot read is refused, not half-used."""

from __future__ import annotations

import time

import pytest

from sandbox.kernel_events import Event
from sandbox.kernel_snapshot import Snapshot
from sandbox.spec import KernelSpec
from server.engine.kept_kernels import KeptSession, record
from server.engine.limits import KernelLimits
from server.engine.session import RUNNING, WAITING, Session

SPEC = KernelSpec(
    memory_bytes=256 << 20, pids=64, cpu_quota=1.0, tmp_bytes=1 << 20, work_bytes=1 << 20,
    nofile=64, fsize_bytes=1 << 20,
)  # fmt: skip
LIMITS = KernelLimits(
    memory_bytes=256 << 20, exec_timeout_ms=30_000, idle_timeout_ms=600_000, cpu_credit_ms=60_000
)


def _session(state: str = RUNNING) -> Session:
    session = Session(
        "kid", "AKIAKEY", "token-1", "python3", SPEC, LIMITS, None, None,  # type: ignore[arg-type]
        queries=7, state=state, run_id="run-1",
    )  # fmt: skip
    session.created -= 100
    session.last_used -= 5
    session.run_budget, session.run_clock = 30.0, time.monotonic() - 10  # 20 s left
    return session


def test_a_snapshot_comes_back_byte_for_byte() -> None:
    snapshot = Snapshot(
        unread=b"\x00\x01half a frame",
        events=[Event("stdout", blob=b"\xff\xfeline\n", size=77), Event("finished", code=3)],
        decoders={"stdout": (b"\xe2\x82", 0), "stderr": (b"", 0)},
        run_output=12,
        output_limited=True,
    )
    assert Snapshot.from_json(snapshot.to_json()) == snapshot


def test_a_record_rebuilds_the_session_with_its_clocks() -> None:
    data = record(_session(), Snapshot())
    kept = KeptSession.parse(data)
    session = kept.session("kid", None, None)  # type: ignore[arg-type]
    assert (session.access_key, session.token, session.lang, session.spec, session.limits) == (
        "AKIAKEY", "token-1", "python3", SPEC, LIMITS,
    )  # fmt: skip
    assert (session.state, session.run_id, session.queries) == (RUNNING, "run-1", 7)
    assert session.recorded_state == RUNNING
    assert 19 < session.remaining() <= 20  # the clock ran on
    assert 99 < time.monotonic() - session.created < 102
    assert 4 < time.monotonic() - session.last_used < 7


def test_a_run_waiting_for_input_keeps_its_budget_and_a_kill_restarts_the_idle_clock() -> None:
    waiting = _session(WAITING)
    waiting.run_budget, waiting.run_clock = 12.5, None
    session = KeptSession.parse(record(waiting)).session("kid", None, None)  # type: ignore[arg-type]
    assert (session.state, session.run_clock, session.run_budget) == (WAITING, None, 12.5)
    assert time.monotonic() - session.last_used < 1  # no snapshot: the server was killed


@pytest.mark.parametrize(
    "change",
    [{"v": 2}, {"lang": "cobol"}, {"state": "dancing"}, {"limits": {"memory_bytes": 1}},
     {"spec": "not a spec"}, {"held": {"unread": "***"}}],
    ids=["version", "language", "state", "limits", "spec", "snapshot"],
)  # fmt: skip
def test_a_record_it_cannot_read_is_refused(change) -> None:
    data = {**record(_session(), Snapshot()), **change}
    with pytest.raises((ValueError, KeyError, TypeError)):
        KeptSession.parse(data)
