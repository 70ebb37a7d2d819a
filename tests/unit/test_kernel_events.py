"""The host's check of what a kernel sends (sandbox.kernel_events): user code can
write any frame to the runner's fd 3, so each field is checked, never trusted."""

from __future__ import annotations

import pytest

from sandbox import kernel_events
from sandbox.runner.protocol import ProtocolError


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"ev": []}', '"ev" is not a string'),
        (b'{"ev": null}', '"ev" is not a string'),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"ev": "stdout"\xff}', "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b"1" * 5000, "not JSON"),  # past Python's digit limit for int()
        (b'{"ev": "finished", "exitCode": "0"}', "'exitCode' is not int"),
        (b'{"ev": "finished", "exitCode": true}', "'exitCode' is not int"),
        (b'{"ev": "finished", "exitCode": 1.5}', "'exitCode' is not int"),
        (b'{"ev": "waiting-input", "is_password": []}', "'is_password' is not bool"),
        (b'{"ev": "error", "message": {}}', "'message' is not str"),
        (b'{"ev": "completions", "rid": [1], "items": []}', "'rid' is not int"),
        (b'{"ev": "completions", "rid": 1, "items": [1]}', "not a list of strings"),
        (b'{"ev": "completions", "rid": 1}', "'items' is missing"),
        (b'{"ev": "job-handover"}', "'cpuMs' is missing"),
        (b'{"ev": "job-handover", "cpuMs": -1}', "'cpuMs' is negative"),
        (b'{"ev": "job-handover", "cpuMs": false}', "'cpuMs' is not int"),
    ],
)
def test_a_malformed_event_is_a_protocol_error(body, message):
    with pytest.raises(ProtocolError, match=message):
        kernel_events.parse(body, from_pid1=False)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"ev": "exited"}', "'status' is missing"),
        (b'{"ev": "exited", "status": "9"}', "'status' is not int"),
        (b'{"ev": "reply", "rid": 1}', "'ok' is missing"),
        (b'{"ev": "reply", "rid": 1, "ok": true, "files": [1]}', "not a list of objects"),
        (b'{"ev": "reply", "rid": 1, "ok": false, "error": 3}', "'error' is not str"),
        (b'{"ev": "stdout"}', "pid 1 flagged a 'stdout' event"),
        (b'{"ev": "exited", "status": 0, "cpuMs": 1}', "'wallMs' is missing"),
        (
            b'{"ev": "exited", "status": 0, "cpuMs": 1, "wallMs": 2, "timedOut": false, '
            b'"truncated": [true]}',
            "'truncated' is not two booleans",
        ),
        (
            b'{"ev": "exited", "status": 0, "cpuMs": -1, "wallMs": 2, "timedOut": false, '
            b'"truncated": [true, false]}',
            "'cpuMs' is negative",
        ),
    ],
)
def test_a_malformed_pid1_event_is_a_protocol_error(body, message):
    with pytest.raises(ProtocolError, match=message):
        kernel_events.parse(body, from_pid1=True)


@pytest.mark.parametrize(
    "body",
    [
        b'{"ev": "no-such-event", "x": [[[{}]]]}',
        b'{"ev": "exited", "status": 0}',  # only pid 1 says this
        b'{"ev": "reply", "rid": 1, "ok": true}',  # nor this
    ],
)
def test_unknown_and_unflagged_pid1_events_are_dropped(body):
    assert kernel_events.parse(body, from_pid1=False) is None


def test_a_valid_event_keeps_only_what_the_host_uses():
    event = kernel_events.parse(
        b'{"ev": "finished", "exitCode": 3, "exitCode": 4, "junk": "' + b"j" * 1000 + b'"}',
        from_pid1=False,
    )
    assert (event.kind, event.code, event.size) == ("finished", 4, kernel_events.EVENT_OVERHEAD)
    error = kernel_events.parse(b'{"ev": "error", "message": "boom"}', from_pid1=False)
    assert error.text == "boom" and error.size == kernel_events.EVENT_OVERHEAD + 4


def test_a_watched_exit_keeps_its_figures():
    body = (
        b'{"ev": "exited", "status": 256, "cpuMs": 12, "wallMs": 30, "timedOut": true, '
        b'"truncated": [true, false]}'
    )
    event = kernel_events.parse(body, from_pid1=True)
    assert (event.code, event.reply["cpuMs"], event.reply["truncated"]) == (256, 12, [True, False])
    plain = kernel_events.parse(b'{"ev": "exited", "status": 0}', from_pid1=True)
    assert plain.code == 0 and not plain.reply
