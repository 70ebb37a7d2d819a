"""What a kernel may send the host, checked field by field.

User code can write any bytes to the runner's fd 3, and pid 1 relays the
runner's frames without parsing them, so every event is untrusted input. Each
one is turned into an `Event` that holds only the fields the host uses (the
parsed JSON is dropped at once, so what waits for a client is what is
counted); an event of a known kind with a field of the wrong type is a
protocol error, which ends the kernel; an unknown kind is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from .runner import media, protocol
from .runner.files import MAX_DOWNLOAD

# The runner's own JSON is small (its largest: 100 completions); frames pid 1
# made (file replies, with a directory listing) may use the protocol's maximum.
# A frame's JSON is read whole before it is counted, and parsing inflates it
# (`[{},{},...]` takes 30 times its text), so the cap on what user code can
# send bounds what each kernel's frame costs before the bounds apply.
RUNNER_JSON_MAX = 256 * 1024
REPLY_BLOB_MAX = MAX_DOWNLOAD  # a reply's blob is a downloaded file
MEDIA_BLOB_MAX = media.MAX_MEDIA_BYTES  # a media or html item's data
JOB_BLOB_MAX = protocol.MAX_BLOB  # a job's stdout and stderr, each cut by the op's "output"
MEDIA_TYPES = media.TEXT_TYPES | media.BINARY_TYPES
# What an event's objects cost beyond its text and blob, counted with them.
EVENT_OVERHEAD = 256
# Events the host takes only from pid 1 (flagged FOR_PID1; see runner/kernel_init.c).
PID1_EVENTS = frozenset({"reply", "exited", "pty-out", "pty-exit"})
TERMINAL = frozenset({"pty-out", "pty-exit"})  # a terminal's (runner/pty_relay.h)
CONSOLE = frozenset({"stdout", "stderr"})
RICH = frozenset({"media", "html"})  # console items of their own (runner/media.py)
FINISHED = frozenset({"finished", "build-finished", "clean-finished"})
REPLIES = frozenset({"reply", "completions"})
JOB = "job-finished"  # a job step's end (runner/job.py)
HANDOVER = "job-handover"  # the runner becomes a job's last step (runner/job.py, job_watch.h)
KNOWN = PID1_EVENTS | CONSOLE | RICH | FINISHED | REPLIES | {
    "ready", "waiting-input", "error", JOB, HANDOVER
}  # fmt: skip
WITH_BLOB = CONSOLE | RICH | REPLIES | {"pty-out", JOB}  # the events whose blob the host keeps

T = TypeVar("T")


@dataclass(slots=True)
class Event:
    """One checked event. `reply` is the JSON of a reply, kept for its requester."""

    kind: str
    blob: bytes = b""
    mime: str = ""  # a media item's type
    item: list = field(default_factory=list)  # a media or html event's console item
    code: int | None = None  # exitCode of *-finished, status of exited
    text: str = ""  # the message of an error
    is_password: bool = False
    rid: int | None = None  # a request's id; a terminal's id for pty-out and pty-exit
    reply: dict = field(default_factory=dict)
    size: int = EVENT_OVERHEAD  # bytes counted against the kernel's bounds


def json_cap(from_pid1: bool) -> int:
    """The largest JSON a frame may carry, by who made it."""
    return protocol.MAX_JSON if from_pid1 else RUNNER_JSON_MAX


def parse(body: bytes, from_pid1: bool) -> Event | None:
    """The event of a frame's JSON, or None for one the host drops (an unknown
    kind; a pid-1 event without pid 1's flag). ProtocolError if malformed."""
    message = protocol.decode_body(body)
    kind = message.get("ev")
    if not isinstance(kind, str):
        raise protocol.ProtocolError('"ev" is not a string')
    if kind not in KNOWN:
        return None
    if (kind in PID1_EVENTS) != from_pid1:
        if from_pid1:
            raise protocol.ProtocolError(f"pid 1 flagged a {kind!r} event")
        return None  # user code writing frames to fd 3: only pid 1 says these
    event = Event(kind)
    if kind in FINISHED:
        event.code = _optional(message, "exitCode", int)
    elif kind == "exited":
        event.code = _required(message, "status", int)
        if "cpuMs" in message:  # a watched job's end (runner/job_watch.h)
            _job_figures(kind, message)
            event.reply = message
    elif kind in TERMINAL:
        event.rid = _required(message, "tid", int)
        if kind == "pty-exit":
            event.code = _required(message, "status", int)
    elif kind == "media":
        event.mime = _required(message, "type", str)
        if event.mime not in MEDIA_TYPES:
            raise protocol.ProtocolError(f"'media': type {event.mime[:60]!r} is not one shown")
    elif kind == JOB:
        event.code = _required(message, "status", int)
        if _required(message, "stdoutBytes", int) < 0:
            raise protocol.ProtocolError(f"{kind!r}: 'stdoutBytes' is negative")
        _job_figures(kind, message)
        _optional(message, "check", bool)
        event.reply = message
        event.size += len(body)
    elif kind == HANDOVER:
        if _required(message, "cpuMs", int) < 0:
            raise protocol.ProtocolError(f"{kind!r}: 'cpuMs' is negative")
        event.reply = message
    elif kind == "waiting-input":
        event.is_password = bool(_optional(message, "is_password", bool))
    elif kind == "error":
        event.text = _optional(message, "message", str) or "kernel error"
        event.size += len(event.text)
    elif kind in REPLIES:
        event.rid = _required(message, "rid", int)
        _check_reply(message)
        event.reply = message
        event.size += len(body)
    return event


def _check_reply(message: dict) -> None:
    if message["ev"] == "completions":
        items = _required(message, "items", list)
        if not all(isinstance(i, str) for i in items):
            raise protocol.ProtocolError('"items" is not a list of strings')
        return
    _required(message, "ok", bool)
    _optional(message, "error", str)
    _optional(message, "abspath", str)
    files = _optional(message, "files", list)
    if files is not None and not all(isinstance(f, dict) for f in files):
        raise protocol.ProtocolError('"files" is not a list of objects')


def _optional(message: dict, name: str, kind: type[T]) -> T | None:
    """The field if present (None if absent or null), checked to be of `kind`."""
    value = message.get(name)
    if value is None:
        return None
    # JSON's true and false are Python ints too: never take them for numbers.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise protocol.ProtocolError(f"{message['ev']!r}: {name!r} is not {kind.__name__}")
    return value


def _job_figures(kind: str, message: dict) -> None:
    """Check a job step's figures: CPU and wall ms, whether it timed out, which
    streams were cut."""
    for name in ("cpuMs", "wallMs"):
        if _required(message, name, int) < 0:
            raise protocol.ProtocolError(f"{kind!r}: {name!r} is negative")
    _required(message, "timedOut", bool)
    truncated = _required(message, "truncated", list)
    if len(truncated) != 2 or not all(isinstance(t, bool) for t in truncated):
        raise protocol.ProtocolError(f"{kind!r}: 'truncated' is not two booleans")


def _required(message: dict, name: str, kind: type[T]) -> T:
    value = _optional(message, name, kind)
    if value is None:
        raise protocol.ProtocolError(f"{message['ev']!r}: {name!r} is missing")
    return value


def rich_item(event: Event) -> list:
    """The console item of a checked "media" or "html" event whose blob was read:
    `["html", html]` or `["media", [type, data]]`, binary data as a data: URI of
    its own type. ProtocolError if the blob is not that."""
    text = event.blob.decode("utf-8", "replace")
    if event.kind == "html":
        return ["html", text]
    if event.mime in media.BINARY_TYPES and not _is_data_uri(event.blob, event.mime):
        raise protocol.ProtocolError(f"'media': {event.mime} data is not a base64 data: URI")
    return ["media", [event.mime, text]]


_BASE64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


def _is_data_uri(blob: bytes, mime: str) -> bool:
    head = f"data:{mime};base64,".encode()
    return blob.startswith(head) and not blob[len(head) :].translate(None, _BASE64)
