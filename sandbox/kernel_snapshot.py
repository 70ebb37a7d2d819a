"""What the host held for a kernel when its server stopped, in a form the next server
can take over (kernels outlive a server restart: sandbox.spawner, --keep-for).

A server that stops reads each kernel's stream to a frame boundary, then keeps
what it had read but not yet delivered: the bytes read ahead of the next frame,
the console events no client has collected yet, the UTF-8 decoders' partial
characters and the current run's output count. The next server feeds the bytes
back ahead of the socket's and queues the events again, so a run in progress
loses none of its output. JSON with base64 for bytes: the snapshot is stored
(server/engine/kernel_records.py) and read by a server that may be newer.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

from .kernel_events import Event

_EVENT_FIELDS = {f.name for f in dataclasses.fields(Event)}


@dataclasses.dataclass
class Snapshot:
    unread: bytes = b""  # read from the socket ahead of the next frame
    events: list[Event] = dataclasses.field(default_factory=list)  # queued, undelivered
    decoders: dict[str, tuple[bytes, int]] = dataclasses.field(default_factory=dict)
    run_output: int = 0
    output_limited: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "unread": _b64(self.unread),
            "events": [_event_json(e) for e in self.events],
            "decoders": {s: [_b64(b), flag] for s, (b, flag) in self.decoders.items()},
            "runOutput": self.run_output,
            "outputLimited": self.output_limited,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        """ValueError (or KeyError, TypeError) when it is not a snapshot."""
        return cls(
            unread=_bytes(data["unread"]),
            events=[_event(e) for e in data["events"]],
            decoders={s: (_bytes(b), int(flag)) for s, (b, flag) in data["decoders"].items()},
            run_output=int(data["runOutput"]),
            output_limited=bool(data["outputLimited"]),
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _bytes(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _event_json(event: Event) -> dict[str, Any]:
    data = dataclasses.asdict(event)
    data["blob"] = _b64(event.blob)
    return data


def _event(data: dict[str, Any]) -> Event:
    if not isinstance(data, dict) or set(data) - _EVENT_FIELDS:
        raise ValueError(f"not an event: {data!r:.80}")
    return Event(**{**data, "blob": _bytes(data.get("blob", ""))})
