"""The host's connection to one kernel: its socket, the events it sends, and what
is held for it.

A reader task reads the kernel's frames, checks each event (`kernel_events`: every
byte from a kernel is untrusted, since user code can write frames to the runner's
fd 3), and files it: replies go to their requesters, a terminal's output to its
`Terminal`, the rest to a queue that the run model (sandbox/kernel.py) consumes.
Frames are size-capped, and a kernel that breaks the protocol is ended with the
reason. What the host holds for a kernel (queued events with their text and
blobs, replies) is counted against the kernel's `KernelBounds` and, with every
other kernel's, against one `HeldBytes`; past them the host stops reading the
kernel, so the program blocks in write(), and a kernel that must still be read
(a request waits for its reply) and floods past its hard bound is ended.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import socket
from typing import Self

from . import kernel_events
from .held import PIECE, QUIET_BYTES, HeldBytes, KernelBounds
from .kernel_events import Event
from .kernel_snapshot import Snapshot
from .runner import protocol
from .terminal import Terminal

log = logging.getLogger("sandbox.kernel")

# The stream reader's buffer beyond the frame being read (it reads a frame whole).
READ_LIMIT = 64 * 1024


class KernelGone(RuntimeError):
    """The kernel's socket closed or it broke the protocol."""


class _Overflow(Exception):
    """The kernel made the host hold more than its hard bound."""


class KernelConnection:
    """A connected kernel's transport and holdings; `Kernel` adds the runs.
    Create with `Kernel.connect` inside a running event loop."""

    def __init__(
        self,
        kernel_id: str,
        pid: int,
        bounds: KernelBounds,
        shared: HeldBytes | None = None,
    ) -> None:
        self.id = kernel_id
        self.pid = pid
        self.bounds = bounds
        self.exit_status: int | None = None  # wait status of the runner, once it died
        self.gone = False
        self.end_reason = ""  # why the host ended it: a protocol violation, a bound
        self.held = 0  # bytes held for it: queued events, replies not yet taken
        self._shared = shared or HeldBytes()
        self._released = False
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._decoders = {
            s: codecs.getincrementaldecoder("utf-8")(errors="replace") for s in ("stdout", "stderr")
        }
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self._room = asyncio.Event()  # set when a paused reader should look again
        self._sending = 0  # sends waiting for the kernel to take them
        self._run_output = 0
        self.output_limited = False  # the current (or last) run's output was cut
        self._replies: dict[int, tuple[str, asyncio.Future[Event]]] = {}
        self._next_rid = 1
        self.terminals: dict[int, Terminal] = {}
        self._next_tid = 1
        self._stream: asyncio.StreamReader | None = None
        self._in_frame = False  # the reader has taken a header, not yet all its frame
        self._suspending = False
        self._at_boundary = asyncio.Event()

    @property
    def dead(self) -> bool:
        """The runner has exited (its "exited" event arrived) or the socket closed."""
        return self.gone or self.exit_status is not None

    @classmethod
    async def connect(
        cls,
        kernel_id: str,
        pid: int,
        sock: socket.socket,
        bounds: KernelBounds,
        shared: HeldBytes | None = None,
    ) -> Self:
        kernel = cls(kernel_id, pid, bounds, shared)
        reader, kernel._writer = await asyncio.open_unix_connection(sock=sock, limit=READ_LIMIT)
        kernel._stream = reader
        kernel._reader_task = asyncio.create_task(kernel._read_loop(reader))
        return kernel

    @classmethod
    async def resume(
        cls,
        kernel_id: str,
        pid: int,
        sock: socket.socket,
        bounds: KernelBounds,
        shared: HeldBytes | None,
        snapshot: Snapshot,
    ) -> Self:
        """Take over a ready kernel that an earlier server suspended (`suspend`):
        its unread bytes come ahead of the socket's, its undelivered events are
        queued again."""
        kernel = cls(kernel_id, pid, bounds, shared)
        kernel._ready.set()
        reader, kernel._writer = await asyncio.open_unix_connection(sock=sock, limit=READ_LIMIT)
        reader.feed_data(snapshot.unread)  # before the loop reads the socket again
        kernel._stream = reader
        for stream, state in snapshot.decoders.items():
            if stream in kernel._decoders:
                kernel._decoders[stream].setstate(state)
        kernel._run_output, kernel.output_limited = snapshot.run_output, snapshot.output_limited
        try:
            for event in snapshot.events:
                kernel._queue(event)
        except _Overflow as e:  # the bounds are smaller than the earlier server's
            kernel._end(str(e))
        kernel._reader_task = asyncio.create_task(kernel._read_loop(reader))
        return kernel

    async def suspend(self, timeout: float = 2.0) -> Snapshot | None:
        """Stop reading at a frame boundary and give up the connection, for the next
        server to `resume` (the kernel keeps running: the spawner holds its socket).
        What was read but not delivered is in the snapshot; None when the kernel is
        gone or did not finish its frame within `timeout` (the next server could
        not find where its frames start)."""
        if self.dead or self._reader_task is None or self._stream is None:
            return None
        self._suspending = True
        self._room.set()  # a reader paused mid-frame for a client reads on
        if self._in_frame:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._at_boundary.wait(), timeout)
        if self._in_frame or self.dead:
            return None
        if self._writer is not None:
            self._writer.transport.pause_reading()
        self._reader_task.cancel()
        with contextlib.suppress(BaseException):
            await self._reader_task
        events = []
        while not self._events.empty():
            event = self._events.get_nowait()
            if event is not None:
                events.append(event)
        snapshot = Snapshot(
            unread=bytes(self._stream._buffer),  # asyncio.StreamReader's read-ahead
            events=events,
            decoders={s: d.getstate() for s, d in self._decoders.items()},
            run_output=self._run_output,
            output_limited=self.output_limited,
        )
        await self.close()
        return snapshot

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait for the runner's "ready" event."""
        ready = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait(
            [ready, self._reader_task], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if ready not in done:
            ready.cancel()
            raise KernelGone(self.end_reason or "the kernel did not become ready")

    async def wait_gone(self) -> None:
        """Return once the kernel's socket has closed (it exited or was destroyed)."""
        if self._reader_task is not None:
            await asyncio.shield(self._reader_task)

    # -- reading ---------------------------------------------------------------

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        """Read frames until the socket closes. Never raises: whatever the kernel
        sends, the task ends with `gone` set (and `end_reason` if the host ended it)."""
        try:
            while True:
                if self._suspending:  # at a boundary: `suspend` takes it from here
                    self._at_boundary.set()
                    await asyncio.Event().wait()
                await self._wait_for_room()
                header = await reader.readexactly(protocol.HEADER.size)
                self._in_frame = True
                jword, blen = protocol.HEADER.unpack(header)
                jlen, from_pid1 = jword & ~protocol.FLAGS, bool(jword & protocol.FOR_PID1)
                if jword & protocol.INTERRUPT:
                    raise protocol.ProtocolError("a frame flagged as an interrupt")
                if jlen > kernel_events.json_cap(from_pid1) or blen > protocol.MAX_BLOB:
                    raise protocol.ProtocolError(f"frame too large ({jlen} + {blen} bytes)")
                event = kernel_events.parse(await reader.readexactly(jlen), from_pid1)
                await self._take(event, reader, blen)
                self._in_frame = False
        except protocol.ProtocolError as e:
            self._end(f"it broke the kernel protocol: {e}")
        except _Overflow as e:
            self._end(str(e))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except Exception:  # noqa: BLE001 - a kernel's bytes must not kill this task silently
            log.exception("kernel %s: reading its events", self.id)
            self._end("the server could not read its events")
        finally:
            self.gone = True
            for _kind, future in self._replies.values():
                if not future.done():
                    future.set_exception(KernelGone(self.end_reason or "the kernel is gone"))
            for term in self.terminals.values():
                term.end(None)
            self._events.put_nowait(None)

    async def _take(self, event: Event | None, reader: asyncio.StreamReader, blen: int) -> None:
        """Act on one event and read its blob: console output is queued in pieces,
        a reply's blob goes to its requester, any other blob is read and dropped."""
        if event is None or event.kind not in kernel_events.WITH_BLOB:
            while blen:  # a blob the host has no use for: skipped, never held
                n = min(blen, PIECE)
                await reader.readexactly(n)
                blen -= n
            if event is not None:
                self._on_event(event)
            return
        if event.kind == "pty-out":
            await self._take_terminal_output(event.rid, reader, blen)
            return
        if event.kind in kernel_events.RICH:  # one item, read whole
            if blen > kernel_events.MEDIA_BLOB_MAX:
                limit = kernel_events.MEDIA_BLOB_MAX
                raise protocol.ProtocolError(f"a {event.kind} item of {blen} bytes is over {limit}")
            await self._wait_for_room()
            event.blob = await reader.readexactly(blen)
            event.item, event.blob = kernel_events.rich_item(event), b""
            event.size += blen
            self._queue(event)
            return
        if event.kind == kernel_events.JOB:
            if event.reply["stdoutBytes"] > blen:
                raise protocol.ProtocolError("a job's stdoutBytes is over its blob")
            event.blob = await reader.readexactly(blen)
            event.size += blen
            self._queue(event)
            return
        if event.kind in kernel_events.REPLIES:
            if blen > kernel_events.REPLY_BLOB_MAX:
                limit = kernel_events.REPLY_BLOB_MAX
                raise protocol.ProtocolError(f"a reply's blob of {blen} bytes is over {limit}")
            event.blob = await reader.readexactly(blen)
            event.size += blen
            self._resolve(event)
            return
        first = True
        while blen:
            if not first:
                await self._wait_for_room()
            first = False
            n = min(blen, PIECE)
            piece = await reader.readexactly(n)
            self._queue(Event(event.kind, blob=piece, size=kernel_events.EVENT_OVERHEAD + n))
            blen -= n

    async def _take_terminal_output(
        self, tid: int | None, reader: asyncio.StreamReader, blen: int
    ) -> None:
        """A terminal's output, read and held in pieces as console output is; that of
        a terminal that was closed meanwhile is read and dropped."""
        first = True
        while blen:
            if not first:
                await self._wait_for_room()
            first = False
            n = min(blen, PIECE)
            piece = await reader.readexactly(n)
            blen -= n
            term = self.terminals.get(tid) if tid is not None else None
            if term is not None and not term.closed:
                size = kernel_events.EVENT_OVERHEAD + n
                term.feed(piece, size)
                self._charge(size)

    def _on_event(self, event: Event) -> None:
        if event.kind == "ready":
            self._ready.set()
            return
        if event.kind == "pty-exit":
            term = self.terminals.get(event.rid) if event.rid is not None else None
            if term is not None:
                term.end(event.code)
            return
        if event.kind == "exited":
            self.exit_status = event.code
        self._queue(event)

    def _queue(self, event: Event) -> None:
        self._events.put_nowait(event)
        self._charge(event.size)

    def _resolve(self, event: Event) -> None:
        """Match a reply to its request. Pid 1 answers file ops ("reply", which only
        counts when pid 1 flagged it); the runner answers completion ("completions"),
        which user code could forge, so a reply only counts when its kind matches the
        op. Replies nobody waits for are dropped."""
        expected = self._replies.get(event.rid)
        if expected is None:
            return
        kind, future = expected
        if event.kind == kind and not future.done():
            future.set_result(event)
            self._charge(event.size)

    def _charge(self, n: int) -> None:
        """Count n more bytes held; past the hard bound the kernel is ended."""
        self.held += n
        self._shared.add(n)
        if self.held > self.bounds.held_bytes:
            raise _Overflow(
                f"it sent more than {self.bounds.held_bytes} bytes that no client took "
                "while the server had to read on"
            )

    def _release(self, n: int) -> None:
        if self._released:
            return
        self.held -= n
        self._shared.release(n)
        self._room.set()

    def _must_pause(self, threshold: int) -> bool:
        """Whether reading should wait for a client. A request's reply and an op the
        kernel must take (pid 1 may be blocked writing to us) come behind what it
        sends, and the ready event before any: then the hard bound holds alone."""
        if self._replies or self._sending or not self._ready.is_set() or self._suspending:
            return False  # (suspending: no client will come; read on to the frame's end)
        return self.held > threshold or (self._shared.over and self.held > QUIET_BYTES)

    async def _wait_for_room(self) -> None:
        """Back-pressure: past pause_bytes, wait until a quarter of it is left."""
        if not self._must_pause(self.bounds.pause_bytes):
            return
        self._shared.paused.add(self._room)
        try:
            while self._must_pause(self.bounds.pause_bytes // 4):
                self._room.clear()
                await self._room.wait()
        finally:
            self._shared.paused.discard(self._room)

    def _end(self, reason: str) -> None:
        """End the kernel from the host's side: its pid 1 exits when the socket closes."""
        if not self.end_reason:
            self.end_reason = reason
            log.warning("kernel %s ended: %s", self.id, reason)
        if self._writer is not None:
            self._writer.transport.abort()

    # -- requests and runs -------------------------------------------------------

    async def send(self, message: dict, blob: bytes = b"") -> None:
        """Write one op; a kernel that does not take it within send_seconds is ended.
        None to a dead kernel: its runner is gone and its pid 1 about to go."""
        await self.send_frames(protocol.encode_op(message, blob))

    async def send_frames(self, *frames: bytes) -> None:
        """Write encoded ops in one write (see `send`)."""
        if self.dead or not self._open():
            raise KernelGone(self.end_reason or "the kernel is gone")
        self._writer.write(b"".join(frames) if len(frames) > 1 else frames[0])
        if not self._writer.transport.get_write_buffer_size():
            return  # all written at once (the usual case): nothing to wait for
        self._sending += 1
        self._room.set()  # pid 1 reads us only between its writes: keep reading it
        try:
            await asyncio.wait_for(self._writer.drain(), self.bounds.send_seconds)
        except TimeoutError:
            self._end(f"it did not read what the server sent for {self.bounds.send_seconds:g} s")
            raise KernelGone(self.end_reason) from None
        except (ConnectionError, OSError) as e:
            raise KernelGone(self.end_reason or "the kernel is gone") from e
        finally:
            self._sending -= 1

    def _send_nowait(self, message: dict) -> None:
        if not self.gone and self._open():
            self._writer.write(protocol.encode_op(message))

    def _open(self) -> bool:
        """Whether the connection is there and was not dropped. A drop (`close`,
        `_end`) comes before the reader sees the end and sets `gone`; a write to the
        dropped transport meanwhile raised uvloop's RuntimeError (a 500 to an
        interrupt sent at that moment, after an OOM kill's restart)."""
        return self._writer is not None and not self._writer.transport.is_closing()

    async def close(self) -> None:
        """Drop the connection at once (a kernel that does not read must not hold up
        its destroy) and give back what was held for it."""
        if self._writer is not None:
            self._writer.transport.abort()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(BaseException):
                await self._reader_task
        if not self._released:
            self._shared.release(self.held)
            self.held, self._released = 0, True
