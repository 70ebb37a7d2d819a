"""The host's handle on one running kernel: its socket, its event stream, its runs.

The kernel sends a stream of events (console output, waiting-input, finished).
A reader task turns them into an asyncio queue; `collect` is one consumer of
that stream that implements the v2 execution model's hold: wait up to `hold`
seconds for a terminal or pause event, then answer with what arrived, adjacent
stdout/stderr chunks merged (spec §6.2, §6.6); the execute stream calls it
eagerly, answering as soon as anything arrived. Terminals (`open_terminal`) are
shells on ptys that pid 1 runs beside the runner; their output comes on the same
socket and goes to each `Terminal`, held against the same bounds.

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
import socket

from . import kernel_events, terminal
from .held import PIECE, QUIET_BYTES, HeldBytes, KernelBounds
from .kernel_events import Event
from .run_result import Console, RunResult, wait_status_to_exit_code
from .runner import protocol
from .terminal import Terminal

log = logging.getLogger("sandbox.kernel")

MiB = 1024 * 1024
# A response carries about this much console text; more waits for the next
# call ("continued"). Nothing is dropped: past `pause_bytes` held, the host
# stops reading the kernel's socket until a client takes some.
RESPONSE_CHARS = 1024 * 1024
# The stream reader's buffer beyond the frame being read (it reads a frame whole).
READ_LIMIT = 64 * 1024


class KernelGone(RuntimeError):
    """The kernel's socket closed or it broke the protocol."""


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
        self.terminals: dict[int, Terminal] = {}
        self._next_tid = 1

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

    async def open_terminal(
        self, argv: list[str], env: dict[str, str], rows: int, cols: int, cpu_seconds: int
    ) -> Terminal:
        """A shell on a new pty in the kernel (pid 1 forks it: see runner/pty_relay.h),
        running `argv` with `env` in /home/work, RLIMIT_CPU at `cpu_seconds` (0: none).
        KernelGone if the kernel is dead; ValueError past MAX_TERMINALS."""
        if self.dead:
            raise KernelGone(self.end_reason or "the kernel is gone")
        if len(self.terminals) >= terminal.MAX_TERMINALS:
            raise ValueError(f"at most {terminal.MAX_TERMINALS} terminals per kernel")
        tid = self._next_tid
        self._next_tid += 1
        blob = terminal.open_op(tid, argv, env, rows, cols, cpu_seconds)
        term = Terminal(tid, self._send_terminal_op, self._release, self._close_terminal)
        self.terminals[tid] = term
        try:
            await self._send_terminal_op(blob)
        except KernelGone:
            del self.terminals[tid]
            raise
        return term

    async def _send_terminal_op(self, blob: bytes) -> None:
        await self.send({"op": "pty"}, blob)

    async def _close_terminal(self, term: Terminal) -> None:
        self.terminals.pop(term.tid, None)
        if not self.dead:
            with contextlib.suppress(KernelGone):
                await self._send_terminal_op(terminal.close_op(term.tid))

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
        console = Console(RESPONSE_CHARS)
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

    def _apply(self, event: Event, console: Console) -> RunResult | None:
        if event.kind in kernel_events.CONSOLE:
            if self._within_output_limit(len(event.blob), console):
                console.add_text(event.kind, self._decoders[event.kind].decode(event.blob))
            return None
        self._flush_decoders(console)
        if event.kind in kernel_events.RICH:
            size = event.size - kernel_events.EVENT_OVERHEAD
            if self._within_output_limit(size, console):
                console.add_item(event.item, size)
            return None
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

    def _within_output_limit(self, n: int, console: Console) -> bool:
        """Count n bytes of the run's output: False past max_output_bytes (the first
        time, the run is interrupted and the console says why)."""
        self._run_output += n
        limit = self.bounds.max_output_bytes
        if limit is None or self._run_output <= limit:
            return True
        if self._run_output - n <= limit:
            note = f"\n[output limit of {limit} bytes reached: the rest was dropped, "
            console.add_text("stderr", note + "and the run interrupted]\n")
            self._send_nowait({"op": "interrupt"})
        return False

    def _flush_decoders(self, console: Console) -> None:
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
