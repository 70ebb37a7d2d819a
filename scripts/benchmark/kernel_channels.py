"""A minimal client of a Jupyter kernel's channels WebSocket, /api/kernels/<id>/channels,
as Jupyter Kernel Gateway serves it: the upgrade, RFC 6455 frames (masked out, unmasked
in, pings answered), and print(1) as an execute_request until both its execute_reply
(status ok) and its stream output ("1\\n") have come.

The socket is held one of two ways:

  plain  the operating system's defaults, as a client opens a socket: Nagle's
         algorithm on and delayed ACKs (asyncio turns Nagle off on every TCP
         socket it opens, so the plain client turns it back on).
  tuned  TCP_NODELAY, and TCP_QUICKACK re-armed after every recv (Linux drops out
         of quick-ack mode by itself). Plain, each execute waits about 40 ms, a
         delayed ACK's timer (most likely the gateway's small writes of one reply
         held by its Nagle until our ACK); the quick ACK alone removes it,
         TCP_NODELAY alone does not (measured).

The client is an asyncio Protocol with no stream layer in between: data_received parses
frames as they come and resolves the run waiting for them."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import uuid

from .checks import expect

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
FINAL = 0x80
TIMEOUT = 120.0  # s, for an upgrade or a run


def frame(opcode: int, payload: bytes = b"") -> bytes:
    """One final frame from a client: masked (RFC 6455 §5.3), the mask applied to the
    whole payload at once as one integer XOR."""
    n = len(payload)
    if n < 126:
        size = bytes([0x80 | n])
    elif n < 1 << 16:
        size = bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        size = bytes([0x80 | 127]) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        n, "little"
    )
    return bytes([FINAL | opcode]) + size + mask + masked


def execute_request(session: str, msg_id: str, code: str) -> bytes:
    """A Jupyter messaging protocol (5.3) execute_request on the shell channel, as JSON."""
    return json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "bench",
                   "session": session, "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }).encode()  # fmt: skip


class Run:
    """One execute_request in flight: what it printed, whether its reply came."""

    def __init__(self, msg_id: str, printed: str, done: asyncio.Future[None]) -> None:
        self.msg_id, self.printed, self.done = msg_id, printed, done
        self.stdout, self.replied = "", False

    def message(self, msg: dict) -> None:
        kind, content = msg["header"]["msg_type"], msg["content"]
        if kind == "stream" and content.get("name") == "stdout":
            self.stdout += content["text"]
        elif kind == "execute_reply":
            if content["status"] != "ok":
                self.done.set_exception(RuntimeError(f"execute_reply: {content}"))
                return
            self.replied = True
        elif kind == "error":
            self.done.set_exception(RuntimeError(f"the kernel raised: {content}"))
            return
        if not self.printed.startswith(self.stdout):
            self.done.set_exception(RuntimeError(f"the kernel printed {self.stdout!r}"))
        elif self.replied and self.stdout == self.printed:
            self.done.set_result(None)


class Channels(asyncio.Protocol):
    """One kernel's channels WebSocket, with at most one run in flight."""

    def __init__(self, tuned: bool) -> None:
        self.tuned = tuned
        self.transport: asyncio.Transport | None = None
        self.sock: socket.socket | None = None
        loop = asyncio.get_running_loop()
        self.upgraded: asyncio.Future[None] = loop.create_future()
        self.closed = False
        self.buffer = bytearray()
        self.fragments = b""
        self.session = uuid.uuid4().hex
        self.count = 0
        self.run: Run | None = None

    @classmethod
    async def open(cls, port: int, kernel_id: str, tuned: bool) -> Channels:
        loop = asyncio.get_running_loop()
        _, channels = await loop.create_connection(lambda: cls(tuned), "127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        channels.write(
            f"GET /api/kernels/{kernel_id}/channels HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        try:
            async with asyncio.timeout(TIMEOUT):
                await channels.upgraded
        except BaseException:
            channels.close()
            raise
        return channels

    def write(self, data: bytes) -> None:
        if self.transport is None or self.closed:
            raise ConnectionError("the kernel's channels WebSocket is closed")
        self.transport.write(data)

    async def execute(self, code: str = "print(1)", printed: str = "1\n") -> None:
        """Run `code` until its execute_reply (ok) and its stdout, which must be `printed`."""
        self.count += 1
        msg_id = f"{self.session}-{self.count}"
        run = self.run = Run(msg_id, printed, asyncio.get_running_loop().create_future())
        self.write(frame(TEXT, execute_request(self.session, msg_id, code)))
        try:
            async with asyncio.timeout(TIMEOUT):
                await run.done
        finally:
            self.run = None

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(frame(CLOSE, (1000).to_bytes(2, "big")))
            self.transport.close()
        self.closed = True

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.sock = transport.get_extra_info("socket")
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if self.tuned else 0)

    def data_received(self, data: bytes) -> None:
        if self.tuned:  # quick-ack mode lapses by itself: re-armed after every recv
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        self.buffer += data
        if not self.upgraded.done():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buffer[: self.buffer.find(b"\r\n")])
            del self.buffer[: end + 4]
            if status.split()[1:2] != [b"101"]:
                self.upgraded.set_exception(ConnectionError(f"WebSocket refused: {status!r}"))
                return
            self.upgraded.set_result(None)
        try:
            self.frames()
        except Exception as e:  # a broken frame or message: the run waiting fails with it
            self.fail(e)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.fail(exc or ConnectionError("the kernel gateway closed the WebSocket"))

    def fail(self, error: BaseException) -> None:
        for waiter in (self.upgraded, self.run and self.run.done):
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)

    def frames(self) -> None:
        """Every whole frame in the buffer, in order; a partial one waits for more data."""
        buffer, at = self.buffer, 0
        while len(buffer) - at >= 2:
            first, second = buffer[at], buffer[at + 1]
            expect(not second & 0x80, "a masked frame from the server")
            n, head = second & 0x7F, 2
            if n >= 126:
                head += 2 if n == 126 else 8
                if len(buffer) - at < head:
                    break
                n = int.from_bytes(buffer[at + 2 : at + head], "big")
            if len(buffer) - at < head + n:
                break
            payload = bytes(buffer[at + head : at + head + n])
            at += head + n
            self.frame(first & FINAL, first & 0x0F, payload)
        del buffer[:at]

    def frame(self, final: int, opcode: int, payload: bytes) -> None:
        if opcode == PING:
            self.write(frame(PONG, payload))
        elif opcode == CLOSE:
            self.fail(ConnectionError(f"the kernel gateway closed the WebSocket: {payload!r}"))
            self.close()
        elif opcode in (CONTINUATION, TEXT, BINARY):
            self.fragments += payload
            if final:
                message, self.fragments = self.fragments, b""
                self.message(message)

    def message(self, data: bytes) -> None:
        msg = json.loads(data)
        run = self.run
        if run is None or run.done.done():
            return  # nothing waits: a reply to no run of ours, or after the run failed
        if msg.get("parent_header", {}).get("msg_id") == run.msg_id:
            run.message(msg)
