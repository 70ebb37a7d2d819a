"""The runner's end of the control socket (fd 3 inside a kernel).

Every frame the runner sends is acknowledged by pid 1 with {"op": "ack"} once
pid 1 has drained the stdout/stderr pipes and queued the frame for the host
(see `protocol`). `Channel.send` returns only after that ack. This is what keeps
`print('a'); os.write(1, b'b')` in order: without the wait, the fd-level write
can land in the pipe before pid 1 has even read the frame for 'a', and pid 1's
"drain the pipes before forwarding a frame" would then put 'b' first. The main
loop's own events between ops (`Channel.send_idle`: "ready", "finished", replies)
need no such wait, since nothing of the runner runs after them until the next
op, and go flagged NO_ACK: pid 1 then sends no ack, which saved a wake-up of the
runner and a write of pid 1's ahead of the host's in every query.

Two hazards shape the code:

* Interrupts. The host's interrupt arrives as SIGINT and becomes a
  KeyboardInterrupt at an arbitrary bytecode boundary of the main thread. If it
  landed between a recv() and the bookkeeping of the bytes received, those
  bytes would be lost and the stream would be out of frame for good. So the
  byte-moving parts run inside `InterruptGate` sections, during which a SIGINT
  is only remembered; it is raised when the section ends. Waiting (poll) is
  outside the sections, so a program blocked in input() or in a print() under
  back-pressure is still interruptible.
* User threads. Several threads may print, and one may sit in input() while
  another prints. Sends are serialised by a lock; reading is done by whichever
  waiting thread holds the "reader" token, which files each frame (acks are
  counted, everything else is queued in the inbox) and wakes the others.

In a process forked by user code (os.fork, multiprocessing) the socket is
closed at once: console writes there go to fd 1/2 (pid 1 relays the pipes) and
input() raises EOFError. Two processes sharing one framed stream would corrupt it.

Standard library only: this runs inside the kernel.
"""

from __future__ import annotations

import collections
import contextlib
import mmap
import os
import select
import socket
import threading
from typing import Any

from . import protocol

# Console writes larger than this are split into several frames.
CONSOLE_CHUNK = 1024 * 1024
_RECV_SIZE = 256 * 1024
# What protocol.encode makes of {"ev": "stdout"} / {"ev": "stderr"}, ready-made.
_CONSOLE_BODIES = {
    stream: protocol.encode({"ev": stream})[protocol.HEADER.size :]
    for stream in ("stdout", "stderr")
}
_ACK = protocol.encode({"op": "ack"})


class InterruptGate:
    """What SIGINT does in the runner; `handler` is installed by `main.serve`.

    Outside user code (`armed` false) an interrupt is ignored: it arrived too
    late or too early to mean anything. Inside user code it raises
    KeyboardInterrupt, unless the main thread is in a `with gate:` section, in
    which case it is raised when the outermost section ends.
    """

    def __init__(self) -> None:
        self.armed = False
        self._depth = 0
        self._pending = False
        self._main = threading.get_ident()

    def handler(self, signum: int, frame: object) -> None:
        if not self.armed:
            return
        if self._depth:
            self._pending = True
            return
        raise KeyboardInterrupt

    def __enter__(self) -> InterruptGate:
        if threading.get_ident() == self._main:
            self._depth += 1
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if threading.get_ident() != self._main:
            return
        self._depth -= 1
        if self._depth == 0 and self._pending:
            self._pending = False
            if exc_type is None and self.armed:
                raise KeyboardInterrupt


class Channel:
    """Frames to and from pid 1 over one blocking stream socket."""

    def __init__(self, sock: socket.socket, gate: InterruptGate) -> None:
        self._sock = sock
        self._gate = gate
        self._send_lock = threading.Lock()
        self._cond = threading.Condition(threading.Lock())
        self._frames = protocol.FrameReader()
        self._inbox: collections.deque[tuple[dict, bytes]] = collections.deque()
        self._unsent = bytearray()  # the rest of a send cut short by an exception
        self._sent = 0
        self._acked = 0
        self._reading = False
        self._eof = False
        self._forked = False
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)
        # Received into, not allocated per recv: user code that filled the kernel's
        # address-space limit (the none layout's RLIMIT_AS) must not make the next
        # recv's buffer fail, and the runner with it. Anonymous memory, so that only
        # the pages a recv touches are the kernel's (a bytearray is zeroed: all 64).
        self._recv_buffer = mmap.mmap(-1, _RECV_SIZE)
        os.register_at_fork(after_in_child=self._after_fork)

    # -- sending ---------------------------------------------------------------

    @property
    def forked(self) -> bool:
        """Whether this is a process forked by user code (the channel is closed here)."""
        return self._forked

    def send(self, message: dict[str, Any], blob: bytes = b"") -> None:
        """Send one frame and wait until pid 1 has acknowledged it."""
        self._send_frame(protocol.encode(message, blob))

    def send_idle(self, message: dict[str, Any], blob: bytes = b"") -> None:
        """Send one frame without waiting for pid 1: only for the main thread's
        events after which it waits for the next op (an event ending an op, or a
        reply), so that nothing it does can overtake the frame."""
        self._send_frame(protocol.encode(message, blob, protocol.NO_ACK), ack=False)

    def _send_frame(self, data: bytes, ack: bool = True) -> None:
        if self._forked:
            raise BrokenPipeError("the kernel's control channel is not open in a forked process")
        with self._gate, self._send_lock:
            self._unsent += data
            self._sent += ack
            ticket = self._sent
            self._flush_unsent()
        if not ack:
            return
        try:
            self._wait(lambda: self._acked >= ticket)
        except EOFError:
            raise BrokenPipeError("the kernel's control channel is closed") from None

    def _flush_unsent(self) -> None:
        while self._unsent:
            n = self._sock.send(self._unsent)
            del self._unsent[:n]

    def console(self, stream: str, data: bytes) -> None:
        """Console output: a "stdout"/"stderr" event per chunk, or fd 1/2 in a fork."""
        if not data:
            return
        if self._forked:
            protocol.write_all(1 if stream == "stdout" else 2, data)
            return
        body = _CONSOLE_BODIES[stream]
        for start in range(0, len(data), CONSOLE_CHUNK):
            chunk = data[start : start + CONSOLE_CHUNK]
            self._send_frame(protocol.HEADER.pack(len(body), len(chunk)) + body + chunk)

    # -- receiving -------------------------------------------------------------

    def next_op(self) -> tuple[dict, bytes]:
        """The next frame from the host, in order. EOFError when the socket closed."""
        self._check_open()
        self._wait(lambda: bool(self._inbox))
        return self._inbox.popleft()

    def read_input(self, is_password: bool) -> tuple[str, bool]:
        """Ask the host for a line: send "waiting-input", return (data, eof)."""
        self._check_open()
        with self._cond:
            stale = [item for item in self._inbox if item[0].get("op") == "input"]
            for item in stale:
                self._inbox.remove(item)
        for _ in stale:
            self.send({"ev": "error", "message": "input arrived while no input was pending"})
        self.send({"ev": "waiting-input", "is_password": bool(is_password)})
        while True:
            self._wait(self._has_input)
            with self._cond:
                found = next((i for i in self._inbox if i[0].get("op") == "input"), None)
                if found is not None:  # else another thread took it first
                    self._inbox.remove(found)
                    break
        message = found[0]
        data = message.get("data")
        return (data if isinstance(data, str) else ""), bool(message.get("eof"))

    def wait_op(self, timeout: float, fds: tuple[int, ...] = ()) -> tuple[dict, bytes] | None:
        """The next frame from the host if one comes within `timeout` seconds.

        Returns None when the time is up or one of `fds` became readable first
        (the caller looks at them itself). For the main thread's wait on a
        program it runs, where three things can happen: an op from the host,
        the program ending, or a poll of /proc falling due.
        """
        self._check_open()
        with self._cond:
            if self._inbox:
                return self._inbox.popleft()
            if self._eof:
                raise EOFError("the kernel's control channel is closed")
            if self._reading:  # a user thread reads for us; it notifies on each frame
                self._cond.wait(timeout)
                return self._inbox.popleft() if self._inbox else None
            self._reading = True
        try:
            poll = select.poll()
            poll.register(self._sock.fileno(), select.POLLIN)
            for fd in fds:
                poll.register(fd, select.POLLIN)
            ready = {fd for fd, _ in poll.poll(max(0, int(timeout * 1000)))}
            if self._sock.fileno() in ready:
                with self._gate:
                    self._receive()
        finally:
            with self._gate, self._cond:
                self._reading = False
                self._cond.notify_all()
        with self._cond:
            if self._inbox:
                return self._inbox.popleft()
            if self._eof:
                raise EOFError("the kernel's control channel is closed")
        return None

    def _has_input(self) -> bool:
        return any(item[0].get("op") == "input" for item in self._inbox)

    def _check_open(self) -> None:
        if self._forked:
            raise EOFError("no console input in a forked process")

    def _wait(self, ready: Any) -> None:
        """Block until ready() is true, reading frames if no other thread does."""
        while True:
            with self._cond:
                if ready():
                    return
                if self._eof:
                    raise EOFError("the kernel's control channel is closed")
                if self._reading:
                    self._cond.wait()
                    continue
                self._reading = True
            try:
                self._poll.poll()  # interruptible: nothing has been consumed yet
                with self._gate:
                    self._receive()
            finally:
                with self._gate, self._cond:
                    self._reading = False
                    self._cond.notify_all()

    def _receive(self) -> None:
        try:
            n = self._sock.recv_into(self._recv_buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            n = 0
        data = bytes(self._recv_buffer[:n])
        if not data:
            self._eof = True
            return
        if data == _ACK and not self._frames.buffered:  # the common case, without JSON
            self._acked += 1
            return
        self._frames.feed(data)
        try:
            frames = self._frames.frames()
        except protocol.ProtocolError:
            self._eof = True
            return
        for message, blob, _raw in frames:
            if message.get("op") == "ack":
                self._acked += 1
            else:
                self._inbox.append((message, blob))

    # -- fork ------------------------------------------------------------------

    def hand_over(self) -> None:
        """Close the channel for good, as a fork finds it: the runner is becoming a
        job's program (runner/job.py), and pid 1 takes the socket's end as that."""
        self._after_fork()

    def _after_fork(self) -> None:
        self._forked = True
        with contextlib.suppress(OSError):
            self._sock.close()
