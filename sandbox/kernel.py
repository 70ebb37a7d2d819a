"""The host's handle on one running kernel: its socket, its event stream, its runs.

The kernel sends a stream of events (console output, waiting-input, finished).
A reader task turns them into an asyncio queue; `collect` is one consumer of
that stream that implements the v2 execution model's hold: wait up to `hold`
seconds for a terminal or pause event, then answer with what arrived, adjacent
stdout/stderr chunks merged (spec §6.2, §6.6). A WebSocket consumer can later
read the same queue.

Every byte from the kernel is untrusted: frames are size-capped by the
protocol reader, events are schema-checked, and a kernel that breaks the
protocol is treated as dead.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import socket
from dataclasses import dataclass, field

from .runner import protocol

# A response carries about this much console text; more waits for the next
# call ("continued"). Nothing is dropped: while more than MAX_BUFFERED bytes
# of output wait for a client, the host stops reading the kernel's socket, so
# the program blocks in write() and the server's memory stays bounded.
RESPONSE_CHARS = 1024 * 1024
MAX_BUFFERED = 8 * 1024 * 1024
RESUME_BUFFERED = 2 * 1024 * 1024
# Events the host takes only from pid 1 (flagged FOR_PID1; see runner/kernel_init.c).
PID1_EVENTS = frozenset({"reply", "exited"})


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


class Kernel:
    """A connected kernel. Create with `Kernel.connect` inside a running event loop."""

    def __init__(self, kernel_id: str, pid: int) -> None:
        self.id = kernel_id
        self.pid = pid
        self.exit_status: int | None = None  # wait status of the runner, once it died
        self.gone = False
        self._events: asyncio.Queue[tuple[dict, bytes] | None] = asyncio.Queue()
        self._decoders = {
            s: codecs.getincrementaldecoder("utf-8")(errors="replace") for s in ("stdout", "stderr")
        }
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self._buffered = 0  # console bytes in _events
        self._drained = asyncio.Event()
        self.max_output_bytes: int | None = None  # per run; beyond it output is dropped
        self.reply_timeout = 30.0  # seconds request() waits for pid 1's reply
        self._run_output = 0
        self._replies: dict[int, tuple[str, asyncio.Future]] = {}
        self._next_rid = 1

    @property
    def dead(self) -> bool:
        """The runner has exited (its "exited" event arrived) or the socket closed."""
        return self.gone or self.exit_status is not None

    @classmethod
    async def connect(cls, kernel_id: str, pid: int, sock: socket.socket) -> Kernel:
        kernel = cls(kernel_id, pid)
        reader, kernel._writer = await asyncio.open_unix_connection(
            sock=sock, limit=protocol.MAX_JSON + protocol.MAX_BLOB
        )
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
            raise KernelGone("the kernel did not become ready")

    async def wait_gone(self) -> None:
        """Return once the kernel's socket has closed (it exited or was destroyed)."""
        if self._reader_task is not None:
            await asyncio.shield(self._reader_task)

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header = await reader.readexactly(protocol.HEADER.size)
                jword, blen = protocol.HEADER.unpack(header)
                jlen, from_pid1 = jword & ~protocol.FLAGS, bool(jword & protocol.FOR_PID1)
                if jlen > protocol.MAX_JSON or blen > protocol.MAX_BLOB:
                    raise protocol.ProtocolError("frame too large")
                body = await reader.readexactly(jlen + blen)
                message = protocol.decode_body(body[:jlen])
                ev = message.get("ev")
                if ev in PID1_EVENTS and not from_pid1:
                    continue  # user code writing frames to fd 3: only pid 1 says these
                if ev == "ready":
                    self._ready.set()
                    continue
                if ev in ("reply", "completions"):
                    self._resolve(message, body[jlen:])
                    continue
                if ev == "exited":
                    status = message.get("status")
                    self.exit_status = status if isinstance(status, int) else None
                await self._events.put((message, body[jlen:]))
                self._buffered += blen
                # Back-pressure until a client reads, except while a request (a file
                # op) waits for its reply, which comes behind the output in the stream.
                while self._buffered > MAX_BUFFERED and not self._replies:
                    self._drained.clear()
                    await self._drained.wait()
        except (asyncio.IncompleteReadError, ConnectionError, protocol.ProtocolError, OSError):
            pass
        finally:
            self.gone = True
            for _ev, future in self._replies.values():
                if not future.done():
                    future.set_exception(KernelGone("the kernel is gone"))
            await self._events.put(None)

    def _resolve(self, message: dict, blob: bytes) -> None:
        """Match a reply to its request. Pid 1 answers file ops ("reply", which only
        counts when pid 1 flagged it); the runner answers completion ("completions"),
        which user code could forge, so a reply only counts when its kind matches the op."""
        expected = self._replies.get(message.get("rid"))  # unknown rids are dropped
        if expected is None:
            return
        ev, future = expected
        if message.get("ev") == ev and not future.done():
            future.set_result((message, blob))

    async def request(
        self, op: str, blob: bytes = b"", timeout: float | None = None, **fields: object
    ) -> tuple[dict, bytes]:
        """An operation with a reply (files, completion), matched by request id.

        File operations are answered by the kernel's pid 1 even while code runs."""
        rid = self._next_rid
        self._next_rid += 1
        future = asyncio.get_running_loop().create_future()
        self._replies[rid] = ("completions" if op == "complete" else "reply", future)
        self._drained.set()  # a paused reader goes on until the reply is in
        try:
            await self.send({"op": op, "rid": rid, **fields}, blob)
            return await asyncio.wait_for(future, timeout or self.reply_timeout)
        except TimeoutError:
            raise KernelGone(f"the kernel did not answer {op!r}") from None
        finally:
            self._replies.pop(rid, None)

    async def start(self, op: dict, hold: float = 2.0) -> RunResult:
        """Start a run (a query, exec or batch op) and collect its first response."""
        self._run_output = 0
        await self.send(op)
        return await self.collect(hold)

    async def batch(self, clean: str, build: str, run: str, hold: float = 2.0) -> RunResult:
        """Start a batch run (shell commands, "" skips a step) and collect its first response."""
        return await self.start({"op": "batch", "clean": clean, "build": build, "exec": run}, hold)

    async def send(self, message: dict, blob: bytes = b"") -> None:
        if self.gone or self._writer is None:
            raise KernelGone("the kernel is gone")
        self._writer.write(protocol.encode_op(message, blob))
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as e:
            raise KernelGone("the kernel is gone") from e

    async def query(self, code: str, hold: float = 2.0) -> RunResult:
        """Start a python3 query-mode run and collect its first response."""
        return await self.start({"op": "query", "code": code}, hold)

    async def feed_input(self, text: str, hold: float = 2.0) -> RunResult:
        await self.send({"op": "input", "data": text})
        return await self.collect(hold)

    def _send_nowait(self, message: dict) -> None:
        if not self.gone and self._writer is not None:
            self._writer.write(protocol.encode_op(message))

    async def interrupt(self) -> None:
        await self.send({"op": "interrupt"})

    async def collect(self, hold: float = 2.0) -> RunResult:
        """Gather events for up to `hold` seconds or until the run pauses or ends
        (or a response's worth of console output has arrived)."""
        console = _Console(RESPONSE_CHARS)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + hold
        result: RunResult | None = None
        while result is None and not console.full:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                item = await asyncio.wait_for(self._events.get(), remaining)
            except TimeoutError:
                break
            if item is not None:
                self._buffered -= len(item[1])
                if self._buffered <= RESUME_BUFFERED:
                    self._drained.set()
            if item is None:
                self._events.put_nowait(None)  # stays gone for later callers
                code = None
                if self.exit_status is not None:
                    code = wait_status_to_exit_code(self.exit_status)
                result = RunResult("finished", options={}, exit_code=code)
                break
            result = self._apply(item, console)
        if result is None:
            result = RunResult("continued")
        result.console = console.items
        return result

    def _apply(self, item: tuple[dict, bytes], console: _Console) -> RunResult | None:
        message, blob = item
        ev = message.get("ev")
        if ev in ("stdout", "stderr"):
            self._run_output += len(blob)
            limit = self.max_output_bytes
            if limit is None or self._run_output <= limit:
                console.add_text(ev, self._decoders[ev].decode(blob))
            elif self._run_output - len(blob) <= limit:  # the first chunk over: say so, once
                note = f"\n[output limit of {limit} bytes reached: the rest was dropped, "
                console.add_text("stderr", note + "and the run interrupted]\n")
                self._send_nowait({"op": "interrupt"})
            return None
        self._flush_decoders(console)
        if ev == "waiting-input":
            return RunResult(
                "waiting-input", options={"is_password": bool(message.get("is_password"))}
            )
        if ev in ("finished", "build-finished", "clean-finished"):
            code = message.get("exitCode")
            options = {} if ev == "finished" else None
            return RunResult(ev, options=options, exit_code=code if isinstance(code, int) else None)
        if ev == "exited":
            status = self.exit_status
            code = wait_status_to_exit_code(status) if status is not None else None
            return RunResult("finished", options={}, exit_code=code)
        if ev == "error":
            console.add_text("stderr", f"{message.get('message', 'kernel error')}\n")
        return None

    def _flush_decoders(self, console: _Console) -> None:
        for stream, decoder in self._decoders.items():
            console.add_text(stream, decoder.decode(b"", final=True))
            decoder.reset()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(BaseException):
                await self._reader_task
