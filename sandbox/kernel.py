"""The host's handle on one running kernel: its runs, requests and terminals.

`KernelConnection` (sandbox/kernel_connection.py) reads the kernel's events into a
queue; `collect` is one consumer of that queue that implements the v2 execution
model's hold: wait up to `hold` seconds for a terminal or pause event, then
answer with what arrived, adjacent stdout/stderr chunks merged (spec §6.2,
§6.6); the execute stream calls it eagerly, answering as soon as anything
arrived. `run_job` is the one-shot faces' step (runner/job.py). Terminals
(`open_terminal`) are shells on ptys that pid 1 runs beside the runner; their
output comes on the same socket and goes to each `Terminal`, held against the
same bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Sequence

from . import kernel_events, terminal
from .kernel_connection import KernelConnection, KernelGone
from .kernel_events import Event
from .run_result import Console, JobStep, RunResult, wait_status_to_exit_code
from .runner import protocol
from .terminal import Terminal

# A response carries about this much console text; more waits for the next
# call ("continued"). Nothing is dropped: past `pause_bytes` held, the host
# stops reading the kernel's socket until a client takes some.
RESPONSE_CHARS = 1024 * 1024
# A job step's answer may come this long after its wall time (the runner drains
# and reports); past it the kernel is taken for stuck.
JOB_GRACE = 5.0
# How long a stream's answer that has output waits for the kernel's next event
# (Kernel.collect): a run's end follows its last output by a fraction of this.
EAGER_QUIET = 0.001
WATCH_OP = 5  # pid 1's op that sets a job watch up (runner/job_watch.h)
U32_MAX = 2**32 - 1


class Kernel(KernelConnection):
    """A connected kernel. Create with `Kernel.connect` inside a running event loop."""

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
        self.output_limited = False
        await self.send(op)
        return await self.collect(hold, eager)

    async def batch(self, clean: str, build: str, run: str, hold: float = 2.0) -> RunResult:
        """Start a batch run (shell commands, "" skips a step) and collect its first response."""
        return await self.start({"op": "batch", "clean": clean, "build": build, "exec": run}, hold)

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

    async def run_job(
        self,
        command: str,
        stdin: bytes,
        *,
        cpu: float,
        wall: float,
        output: int,
        memory: int = 0,
        processes: int = 0,
        file_size: int = 0,
        files: Sequence[tuple[str, bytes]] = (),
        env: dict[str, str] | None = None,
        python: dict | None = None,
        stop_at_output: bool = False,
        last: bool = False,
        check: str | None = None,
    ) -> JobStep:
        """Run `command` once to its end under limits of its own (runner/job.py), for
        the one-shot faces; the kernel must be idle. `files` are written into the work
        directory first; `env` is all the program's environment; `python`, the same
        step as a fork of the runner (runner/python_program.py); `stop_at_output`:
        the program is killed once a stream passes `output`. `last`: the kernel
        serves nothing after this step, which then runs in the runner's own place,
        watched by pid 1 (runner/job_watch.h), and the kernel ends with it. `check`:
        a python3 source compile-checked in the runner first; if it fails, the answer
        is the check's (`failed_check`) and the step does not run.
        KernelGone if the kernel ends first or does not answer within the wall time
        and a grace; ValueError for a bad op."""
        op: dict = {"op": "job", "command": command, "cpu": cpu, "wall": wall, "output": output,
                    "memory": memory, "processes": processes, "fileSize": file_size}  # fmt: skip
        if files:
            op["files"] = [[path, len(data)] for path, data in files]
        if env is not None:
            op["env"] = env
        if python is not None:
            op["python"] = python
        if stop_at_output:
            op["stopAtOutput"] = True
        if check is not None:
            op["check"] = {"path": check}
        frames = []
        if last:
            watch = struct.pack(
                ">BIIBI", WATCH_OP, 0, min(output, U32_MAX), stop_at_output,
                min(int(wall * 1000), U32_MAX),
            )  # fmt: skip
            frames.append(protocol.encode_op({"op": "watch"}, watch))
            op["inPlace"] = True
        frames.append(protocol.encode_op(op, b"".join(data for _, data in files) + stdin))
        await self.send_frames(*frames)
        loop = asyncio.get_running_loop()
        cpu_ms_before: int | None = None  # the runner became the program, having used this
        out, err = bytearray(), bytearray()
        deadline = loop.time() + wall + JOB_GRACE
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    event = await self._events.get()
            except TimeoutError:
                self._end(f"its job did not end within {wall + JOB_GRACE:g} s")
                raise KernelGone(self.end_reason) from None
            if event is None:
                self._events.put_nowait(None)
                raise KernelGone(self.end_reason or "the kernel is gone")
            self._release(event.size)
            if event.kind == "error":
                raise ValueError(event.text)
            if event.kind == kernel_events.HANDOVER:
                cpu_ms_before = event.reply["cpuMs"]
            elif cpu_ms_before is not None and event.kind in kernel_events.CONSOLE:
                kept = out if event.kind == "stdout" else err
                kept += event.blob[: max(0, output - len(kept))]
            elif cpu_ms_before is not None and event.kind == "exited" and event.reply:
                return JobStep(
                    status=event.code,
                    stdout=bytes(out),
                    stderr=bytes(err),
                    cpu_ms=max(0, event.reply["cpuMs"] - cpu_ms_before),
                    wall_ms=event.reply["wallMs"],
                    timed_out=event.reply["timedOut"],
                    truncated=tuple(event.reply["truncated"]),
                )
            elif event.kind == kernel_events.JOB:
                split = event.reply["stdoutBytes"]
                return JobStep(
                    status=event.code,
                    stdout=event.blob[:split],
                    stderr=event.blob[split:],
                    cpu_ms=event.reply["cpuMs"],
                    wall_ms=event.reply["wallMs"],
                    timed_out=event.reply["timedOut"],
                    truncated=tuple(event.reply["truncated"]),
                    failed_check=bool(event.reply.get("check")),
                )
            # anything else (a forked leftover's console output) is not the job's

    async def query(self, code: str, hold: float = 2.0) -> RunResult:
        """Start a python3 query-mode run and collect its first response."""
        return await self.start({"op": "query", "code": code}, hold)

    async def feed_input(self, text: str, hold: float = 2.0, eager: bool = False) -> RunResult:
        await self.send({"op": "input", "data": text})
        return await self.collect(hold, eager)

    async def interrupt(self) -> None:
        await self.send({"op": "interrupt"})

    async def collect(self, hold: float = 2.0, eager: bool = False) -> RunResult:
        """Gather events for up to `hold` seconds or until the run pauses or ends
        (or a response's worth of console output has arrived). `eager` (a stream)
        answers once there is console output and the kernel has sent nothing more
        for EAGER_QUIET: output goes out as it comes, not at the end of a hold, and a
        run's last output and its end, which pid 1 forwards one after the other,
        go out as one answer."""
        console = Console(RESPONSE_CHARS)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + hold
        result: RunResult | None = None
        while result is None and not console.full:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if eager and console.items:
                remaining = min(remaining, EAGER_QUIET)
            try:
                item = await self._next_event(remaining)
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

    async def _next_event(self, timeout: float) -> Event | None:
        """The next queued event, waiting up to `timeout` s. Not `wait_for`: in 3.11
        it wraps the wait in a task of its own, two more turns of the event loop for
        every event (and a query's answer is two or three events)."""
        if not self._events.empty():
            return self._events.get_nowait()
        async with asyncio.timeout(timeout):
            return await self._events.get()

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
            self.output_limited = True
            note = f"\n[output limit of {limit} bytes reached: the rest was dropped, "
            console.add_text("stderr", note + "and the run interrupted]\n")
            self._send_nowait({"op": "interrupt"})
        return False

    def _flush_decoders(self, console: Console) -> None:
        for stream, decoder in self._decoders.items():
            console.add_text(stream, decoder.decode(b"", final=True))
            decoder.reset()
