"""One stream's WebSocket: messages in through a bounded inbox, out with a deadline,
and the close codes every stream uses.

A reader task takes the client's messages as they come, so that a handler busy
with a run still learns at once that its client went away, and so that what a
client sends ahead (type-ahead input, the next run) waits in order. What the
reader holds is bounded: a message over `max_frame_bytes`, a binary message, or
more than INBOX messages waiting close the stream. Sends wait for the client to
take them (uvicorn stops at its write buffer's high-water mark); a client that
takes nothing for `send_seconds` is closed, so a reader that stalls holds no
more than a buffer, never a kernel's whole output.

Close codes (RFC 6455 §7.4.1): 1000 done (the kernel ended, exec timeout), 1003
a binary message, 1007 a message that is not JSON or base64 where it must be,
1008 a message of the wrong shape or against a limit, 1009 too large, 1011 a
server fault, 1012 the server is restarting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Callable

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

NORMAL, UNSUPPORTED, INVALID, POLICY, TOO_BIG, SERVER_ERROR, RESTARTING = (
    1000,
    1003,
    1007,
    1008,
    1009,
    1011,
    1012,
)
INBOX = 64  # client messages waiting to be read
REASON_BYTES = 123  # a close frame's reason, at most (RFC 6455 §5.5)


class StreamEnd(Exception):
    """The stream ends with this close code and reason. `frame` (optional) is sent
    first: the error message in the stream's own dialect."""

    def __init__(self, code: int, reason: str, frame: dict | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.frame = frame


class Gone(Exception):
    """The client closed the socket or the connection dropped."""


def close_reason(text: str) -> str:
    """`text` cut to fit a close frame, on a character boundary."""
    data = text.encode()[:REASON_BYTES]
    return data.decode(errors="ignore")


class StreamSocket:
    """A WebSocket after its handshake, with the reader task running."""

    def __init__(
        self,
        websocket: WebSocket,
        max_frame_bytes: int,
        send_seconds: float,
        on_message: Callable[[], None] = lambda: None,
    ) -> None:
        self.websocket = websocket
        self.max_frame_bytes = max_frame_bytes
        self.send_seconds = send_seconds
        self.on_message = on_message  # each message from the client is activity
        self.gone = False
        self._inbox: deque[str] = deque()
        self._problem: StreamEnd | None = None  # what the reader found wrong
        self._arrived = asyncio.Event()
        self._reader: asyncio.Task | None = None

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                self.on_message()
                text = message.get("text")
                if text is None:
                    self._stop(StreamEnd(UNSUPPORTED, "binary messages are not accepted"))
                    return
                if len(text) > self.max_frame_bytes or len(text.encode()) > self.max_frame_bytes:
                    self._stop(StreamEnd(TOO_BIG, f"a message over {self.max_frame_bytes} bytes"))
                    return
                if len(self._inbox) >= INBOX:
                    self._stop(StreamEnd(POLICY, f"more than {INBOX} messages waiting"))
                    return
                self._inbox.append(text)
                self._arrived.set()
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        self.gone = True
        self._arrived.set()

    def _stop(self, problem: StreamEnd) -> None:
        self._problem = problem
        self._arrived.set()

    def _check(self) -> None:
        if self._problem is not None:
            raise self._problem
        if self.gone and not self._inbox:
            raise Gone()

    @property
    def ended(self) -> bool:
        """The client left, or the reader found a message that ends the stream."""
        return self.gone or self._problem is not None

    def check(self) -> None:
        """Gone or the StreamEnd the reader found, if the stream has ended."""
        if self._problem is not None:
            raise self._problem
        if self.gone:
            raise Gone()

    @property
    def waiting(self) -> bool:
        """Whether a message (or the client's leaving, or a fault) is there to take."""
        return bool(self._inbox) or self.gone or self._problem is not None

    async def arrival(self) -> None:
        """Return once `waiting` is true."""
        while not self.waiting:
            self._arrived.clear()
            await self._arrived.wait()

    async def receive(self, timeout: float | None = None) -> str | None:
        """The next message, in order; None if none came within `timeout`. Gone once
        the client left and nothing is left to read; StreamEnd for a bad message."""
        while True:
            self._check()
            if self._inbox:
                return self._inbox.popleft()
            self._arrived.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._arrived.wait()
            except TimeoutError:
                return None

    async def send(self, message: dict) -> None:
        """Send one JSON message; Gone if the client left, StreamEnd if it took
        nothing for send_seconds."""
        if self.gone:
            raise Gone()
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
            # cancellation that comes as the send completes, and a pump cancelled
            # then would go on running
            async with asyncio.timeout(self.send_seconds):
                await self.websocket.send_text(json.dumps(message, ensure_ascii=False))
        except TimeoutError:
            raise StreamEnd(
                POLICY, f"the client took nothing for {self.send_seconds:g} s"
            ) from None
        except (WebSocketDisconnect, RuntimeError, OSError) as e:
            self.gone = True
            raise Gone() from e

    async def close(self, code: int, reason: str, frame: dict | None = None) -> None:
        """Send `frame` (if any) and close; nothing if the client has left."""
        if self.websocket.application_state != WebSocketState.CONNECTED:
            return
        with contextlib.suppress(Gone, StreamEnd, RuntimeError, OSError, TimeoutError):
            if frame is not None:
                await self.send(frame)
            async with asyncio.timeout(self.send_seconds):
                await self.websocket.close(code, close_reason(reason))

    async def stop_reading(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
