"""uvicorn's HTTP protocol with the limits a client must meet before it is anyone.

uvicorn alone has no header read timeout, no cap on a request's header bytes
(httptools collects them all) and no cap on open connections: its
`limit_concurrency` answers 503 once a request's headers are in, after the
connection took its file descriptor. A client that dribbles its headers, or a
body, one byte at a time could hold connections and fds without end. Here:

- a connection must complete each request's headers within `header_timeout`
  of its first byte (of the connection's start, for the first request), and
  its body within `body_timeout` of the headers; otherwise it gets 408 and is
  closed. Idle keep-alive connections keep uvicorn's timer (75 s, see
  `server.__main__`): between requests nothing is held but the socket;
- request line and headers may hold `max_header_bytes`, or 431 and closed;
- at most `max_connections` are open. A connection beyond that closes the
  oldest one that is still waiting for a request's headers, else the oldest
  idle one; connections with a request in flight are never closed for it. If
  none can go, the new one gets 503 and is closed at once. So the fds of
  connections stay within the cap, and a client whose requests arrive whole
  (every real client writes its headers in one go) is served while slow ones
  are dropped.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .faces.v2.layers import SERVER_HEADER
from .faces.v2.problems import BACKENDAI_BASE


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    header_timeout: float  # seconds
    body_timeout: float  # seconds
    max_header_bytes: int


class Phase(enum.Enum):
    HEADERS = "waiting for a request's headers"
    BODY = "reading a request's body"
    HANDLER = "answering a request"
    IDLE = "idle between requests"


class ConnectionGuard:
    """The connections of one server, in the order they may be closed for a new one."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.open: set[GuardedProtocol] = set()
        # insertion-ordered: the oldest first
        self.waiting: dict[GuardedProtocol, None] = {}
        self.idle: dict[GuardedProtocol, None] = {}

    def admit(self, protocol: GuardedProtocol) -> bool:
        """Count a new connection in; False if the cap is reached and none can go."""
        if len(self.open) >= self.limits.max_connections:
            victim = next(iter(self.waiting), None) or next(iter(self.idle), None)
            if victim is None:
                return False
            victim.evict()
        self.open.add(protocol)
        return True

    def moved(self, protocol: GuardedProtocol, phase: Phase) -> None:
        self.waiting.pop(protocol, None)
        self.idle.pop(protocol, None)
        if phase is Phase.HEADERS:
            self.waiting[protocol] = None
        elif phase is Phase.IDLE:
            self.idle[protocol] = None

    def closed(self, protocol: GuardedProtocol) -> None:
        self.open.discard(protocol)
        self.waiting.pop(protocol, None)
        self.idle.pop(protocol, None)


def protocol_class(guard: ConnectionGuard) -> type[GuardedProtocol]:
    """A protocol class for `uvicorn.run(http=...)` whose connections share `guard`."""
    return type("GuardedProtocol", (GuardedProtocol,), {"guard": guard})


class GuardedProtocol(HttpToolsProtocol):
    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phase = Phase.HEADERS
        self.header_bytes = 0
        self.too_large = False
        self.deadline: Any = None  # asyncio.TimerHandle

    # -- the phases ------------------------------------------------------------------

    def _enter(self, phase: Phase, seconds: float | None = None) -> None:
        self.phase = phase
        self.guard.moved(self, phase)
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if seconds is not None:
            self.deadline = self.loop.call_later(seconds, self._expired, phase, seconds)

    def _expired(self, phase: Phase, seconds: float) -> None:
        self.deadline = None
        what = "request headers" if phase is Phase.HEADERS else "request body"
        self._refuse(
            408, "request-timeout", f"Request timeout. ({what} not in within {seconds:g} s)"
        )

    def _refuse(self, status: int, kind: str, title: str) -> None:
        """Answer with a problem if no answer has started, and close the connection."""
        if self.transport.is_closing():
            return
        cycle = self.cycle if self.phase is not Phase.HEADERS else None
        if cycle is None or not cycle.response_started:
            body = json.dumps({"type": BACKENDAI_BASE + kind, "title": title}).encode()
            head = (
                b"server: %s\r\ncontent-type: application/problem+json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n"
                % (SERVER_HEADER.encode(), len(body))
            )
            self.transport.write(STATUS_LINE[status] + head + body)
        if cycle is not None and not cycle.response_complete:
            # As a lost connection does: the handler's next receive() says disconnect
            # and its sends are dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    def evict(self) -> None:
        """Closed to make room for a new connection."""
        if self.phase is Phase.HEADERS:
            self._refuse(503, "service-unavailable", "Service unavailable. (too many connections)")
        else:
            self.transport.close()
        self.guard.closed(self)

    # -- uvicorn's hooks ---------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.guard.admit(self):
            self.phase = Phase.HANDLER  # no deadline, not evictable: it is closing
            self._refuse(503, "service-unavailable", "Service unavailable. (too many connections)")
            return
        self._enter(Phase.HEADERS, self.guard.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        self.guard.closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.phase is Phase.IDLE:  # any byte starts the next request's clock
            self.header_bytes = 0
            self._enter(Phase.HEADERS, self.guard.limits.header_timeout)
        super().data_received(data)

    def handle_websocket_upgrade(self) -> None:
        """The connection becomes a WebSocket (uvicorn hands the transport to its
        WebSocket protocol): no HTTP phase or deadline of ours applies any more, and
        the streams' own limits (faces/v2/streams) count it from here."""
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        self.phase = Phase.HANDLER
        self.guard.closed(self)
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        if self.too_large:
            limit = self.guard.limits.max_header_bytes
            title = f"Request header fields too large. (more than {limit} bytes)"
            self._refuse(431, "request-header-fields-too-large", title)
        else:
            super().send_400_response(msg)

    def _count(self, size: int) -> None:
        self.header_bytes += size
        if self.header_bytes > self.guard.limits.max_header_bytes:
            self.too_large = True
            raise ValueError("request headers too large")  # stops the parser

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.header_bytes = 0  # a pipelined request counts its own
        self._enter(Phase.BODY, self.guard.limits.body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        if self.phase is Phase.BODY:
            self._enter(Phase.HANDLER)
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self.cycle.response_complete:
            # What came of a body the handler never read (a refusal before the
            # body) would stay in the finished cycle until the next request.
            self.cycle.body = bytearray()
        super().on_response_complete()
        if not self.transport.is_closing() and self.timeout_keep_alive_task is not None:
            self._enter(Phase.IDLE)  # uvicorn's keep-alive timer runs
