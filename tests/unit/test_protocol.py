"""Frame encoding and the defences of the decoder against hostile peers."""

from __future__ import annotations

import socket

import pytest

from sandbox.runner import protocol


def test_round_trip_with_blob():
    reader = protocol.FrameReader()
    data = protocol.encode({"ev": "stdout"}, b"\x00\xffbytes") + protocol.encode({"ev": "x"})
    reader.feed(data[:5])
    assert reader.frames() == []
    reader.feed(data[5:])
    frames = reader.frames()
    assert [(m, b) for m, b, _raw in frames] == [
        ({"ev": "stdout"}, b"\x00\xffbytes"),
        ({"ev": "x"}, b""),
    ]
    assert b"".join(raw for _m, _b, raw in frames) == data


def test_oversized_frame_is_refused_before_buffering():
    reader = protocol.FrameReader(max_json=100)
    reader.feed(protocol.HEADER.pack(101, 0))
    with pytest.raises(protocol.ProtocolError, match="too large"):
        reader.frames()


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"\xff\xfe"])
def test_malformed_body(body):
    reader = protocol.FrameReader()
    reader.feed(protocol.HEADER.pack(len(body), 0) + body)
    with pytest.raises(protocol.ProtocolError):
        reader.frames()


def test_blocking_send_and_receive():
    a, b = socket.socketpair()
    with a, b:
        a.sendall(protocol.encode({"op": "query", "code": "print(1)"}, b"blob"))
        assert protocol.read_frame(b.fileno()) == ({"op": "query", "code": "print(1)"}, b"blob")
        a.close()
        with pytest.raises(EOFError):
            protocol.read_frame(b.fileno())
