"""The host's handle on one running kernel: its socket, its event stream, its runs.

The kernel sends a stream of events (console output, waiting-input, finished).
A reader task turns them into an asyncio queue; `collect` is one consumer of
that stream that implements the v2 execution model's hold: wait up to `hold`
seconds for a terminal or pause event, then answer with what arrived, adjacent
stdout/stderr chunks merged (spec §6.2, §6.6). A WebSocket consumer can later
read the same queue.

Every byte from the kernel is untrusted (user code can write frames to the
runner's fd 3): frames are size-capped, events are schema-checked
(`kernel_events`), and a kernel that breaks the protocol is ended with the
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
import os
import socket
from dataclasses import dataclass, field

from . import kernel_events
from .kernel_events import Event
from .runner import protocol

log = logging.getLogger("sandbox.kernel")

MiB = 1024 * 1024
# A response carries about this much console text; more waits for the next
# call ("continued"). Nothing is dropped: past `pause_bytes` held, the host
# stops reading the kernel's socket until a client takes some.
RESPONSE_CHARS = 1024 * 1024
# Console blobs (up to 16 MiB a frame) are read, queued and counted in pieces of
# at most this much, so reading stops within a piece of a bound.
PIECE = 256 * 1024
# Past the server-wide bound, a kernel holding less than this still reads: a
# quiet kernel's few events (ready, finished, a reply) must not wait for a flood.
QUIET_BYTES = 64 * 1024
# The stream reader's buffer beyond the frame being read (it reads a frame whole).
READ_LIMIT = 64 * 1024


@dataclass(frozen=True)
class KernelBounds:
    """What the host holds for one kernel, and how long it waits on it (the server's
    [limits] settings give each: LimitSettings.kernel_bounds)."""

    pause_bytes: int  # held this much: stop reading until a client takes some
    held_bytes: int  # more than this (read on for a request): the kernel is ended
    send_seconds: float  # an op the kernel does not take in this long ends it
    reply_seconds: float  # request() waits this long for a reply
    max_output_bytes: int | None  # console output per run; the rest is dropped


class HeldBytes:
    """The bytes held for all the kernels of a server, against one bound: past it,
    each kernel holding more than QUIET_BYTES stops reading until clients drain."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.total = 0
        self.paused: set[asyncio.Event] = set()  # the rooms of kernels waiting for it

    @property
    def over(self) -> bool:
        return self.limit is not None and self.total > self.limit

    def add(self, n: int) -> None:
        self.total += n

    def release(self, n: int) -> None:
        was_over = self.over
        self.total -= n
        if was_over and not self.over:  # the rest were paused by their own bounds
            for room in self.paused:
                room.set()


@dataclass
class RunResult:
    """One response of the execution model."""

    status: str  # continued | waiting-input | clean-finished | build-finished | finished
    console: list[list] = field(default_factory=list)
    options: dict | None = None
    exit_code: int | None = None


class KernelGone(RuntimeError):
    """The kernel's socket closed or it broke the protocol."""


def wait_status_to_exit_code(status: int) -> int:
    """Shell convention: the exit code, or 128 + signal number when killed."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


class _Console:
    """Accumulates console items for one response, merging adjacent text chunks."""

    def __init__(self, limit: int) -> None:
        self.items: list[list] = []
        self.size = 0
        self.limit = limit

    @property
    def full(self) -> bool:
        return self.size >= self.limit

    def add_text(self, stream: str, text: str) -> None:
        if not text:
            return
        self.size += len(text)
        if self.items and self.items[-1][0] == stream:
            self.items[-1][1] += text
        else:
            self.items.append([stream, text])


class _Overflow(Exception):
    """The kernel made the host hold more than its hard bound."""


class Kernel:
    """A connected kernel. Create with `Kernel.connect` inside a running event loop."""

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
        self._replies: dict[int, tuple[str, asyncio.Future[Event]]] = {}
        self._next_rid = 1

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
    ) -> Kernel:
        kernel = cls(kernel_id, pid, bounds, shared)
        reader, kernel._writer = await asyncio.open_unix_connection(sock=sock, limit=READ_LIMIT)
        kernel._reader_task = asyncio.create_task(kernel._read_loop(reader))
        return kernel

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
                await self._wait_for_room()
                header = await reader.readexactly(protocol.HEADER.size)
                jword, blen = protocol.HEADER.unpack(header)
                jlen, from_pid1 = jword & ~protocol.FLAGS, bool(jword & protocol.FOR_PID1)
                if jword & protocol.INTERRUPT:
                    raise protocol.ProtocolError("a frame flagged as an interrupt")
                if jlen > kernel_events.json_cap(from_pid1) or blen > protocol.MAX_BLOB:
                    raise protocol.ProtocolError(f"frame too large ({jlen} + {blen} bytes)")
                event = kernel_events.parse(await reader.readexactly(jlen), from_pid1)
                await self._take(event, reader, blen)
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

    def _on_event(self, event: Event) -> None:
        if event.kind == "ready":
            self._ready.set()
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
        if self._replies or self._sending or not self._ready.is_set():
            return False
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

    async def request(
        self, op: str, blob: bytes = b"", timeout: float | None = None, **fields: object
    ) -> tuple[dict, bytes]:
        """An operation with a reply (files, completion), matched by request id.

        File operations are answered by the kernel's pid 1 even while code runs."""
        rid = self._next_rid
        self._next_rid += 1
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._replies[rid] = ("completions" if op == "complete" else "reply", future)
        self._room.set()  # a paused reader goes on until the reply is in
        try:
            await self.send({"op": op, "rid": rid, **fields}, blob)
            reply = await asyncio.wait_for(future, timeout or self.bounds.reply_seconds)
            return reply.reply, reply.blob
        except TimeoutError:
            raise KernelGone(f"the kernel did not answer {op!r}") from None
        finally:
            self._replies.pop(rid, None)
            if future.done() and not future.cancelled() and future.exception() is None:
                self._release(future.result().size)

    async def start(self, op: dict, hold: float = 2.0, eager: bool = False) -> RunResult:
        """Start a run (a query, exec or batch op) and collect its first response."""
        self._run_output = 0
        await self.send(op)
        return await self.collect(hold, eager)

    async def batch(self, clean: str, build: str, run: str, hold: float = 2.0) -> RunResult:
        """Start a batch run (shell commands, "" skips a step) and collect its first response."""
        return await self.start({"op": "batch", "clean": clean, "build": build, "exec": run}, hold)

    async def send(self, message: dict, blob: bytes = b"") -> None:
        """Write one op; a kernel that does not take it within send_seconds is ended.
        None to a dead kernel: its runner is gone and its pid 1 about to go."""
        if self.dead or self._writer is None:
            raise KernelGone(self.end_reason or "the kernel is gone")
        self._writer.write(protocol.encode_op(message, blob))
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

    async def query(self, code: str, hold: float = 2.0) -> RunResult:
        """Start a python3 query-mode run and collect its first response."""
        return await self.start({"op": "query", "code": code}, hold)

    async def feed_input(self, text: str, hold: float = 2.0, eager: bool = False) -> RunResult:
        await self.send({"op": "input", "data": text})
        return await self.collect(hold, eager)

    def _send_nowait(self, message: dict) -> None:
        if not self.gone and self._writer is not None:
            self._writer.write(protocol.encode_op(message))

    async def interrupt(self) -> None:
        await self.send({"op": "interrupt"})

    async def collect(self, hold: float = 2.0, eager: bool = False) -> RunResult:
        """Gather events for up to `hold` seconds or until the run pauses or ends
        (or a response's worth of console output has arrived). `eager` (a stream)
        answers as soon as there is console output and no more events are queued:
        output goes out as it comes, not at the end of a hold."""
        console = _Console(RESPONSE_CHARS)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + hold
        result: RunResult | None = None
        while result is None and not console.full:
            if eager and console.items and self._events.empty():
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                item = await asyncio.wait_for(self._events.get(), remaining)
            except TimeoutError:
                break
            if item is None:
                self._events.put_nowait(None)  # stays gone for later callers
                self._flush_decoders(console)
                if self.end_reason:
                    console.add_text("stderr", f"\n[the kernel was ended: {self.end_reason}]\n")
                code = None
                if self.exit_status is not None:
                    code = wait_status_to_exit_code(self.exit_status)
                result = RunResult("finished", options={}, exit_code=code)
                break
            self._release(item.size)
            result = self._apply(item, console)
        if result is None:
            result = RunResult("continued")
        result.console = console.items
        return result

    def _apply(self, event: Event, console: _Console) -> RunResult | None:
        if event.kind in kernel_events.CONSOLE:
            blob = event.blob
            self._run_output += len(blob)
            limit = self.bounds.max_output_bytes
            if limit is None or self._run_output <= limit:
                console.add_text(event.kind, self._decoders[event.kind].decode(blob))
            elif self._run_output - len(blob) <= limit:  # the first chunk over: say so, once
                note = f"\n[output limit of {limit} bytes reached: the rest was dropped, "
                console.add_text("stderr", note + "and the run interrupted]\n")
                self._send_nowait({"op": "interrupt"})
            return None
        self._flush_decoders(console)
        if event.kind == "waiting-input":
            return RunResult("waiting-input", options={"is_password": event.is_password})
        if event.kind in kernel_events.FINISHED:
            options = {} if event.kind == "finished" else None
            return RunResult(event.kind, options=options, exit_code=event.code)
        if event.kind == "exited":
            status = self.exit_status
            code = wait_status_to_exit_code(status) if status is not None else None
            return RunResult("finished", options={}, exit_code=code)
        if event.kind == "error":
            console.add_text("stderr", f"{event.text}\n")
        return None

    def _flush_decoders(self, console: _Console) -> None:
        for stream, decoder in self._decoders.items():
            console.add_text(stream, decoder.decode(b"", final=True))
            decoder.reset()

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
