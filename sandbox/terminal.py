"""The host's handle on one terminal in a kernel: a shell on a pty that pid 1 runs.

Pid 1 (kernel-init, runner/pty_relay.h) forks the shell and relays its pty; the
kernel's reader (sandbox/kernel.py) hands each terminal what its pty printed.
That output is held against the kernel's bounds like console output: a reader
that does not take it pauses the kernel's socket (the shell then blocks in
write()), it is never buffered without bound.

Ops go to pid 1 as frames flagged FOR_PID1 | INTERRUPT with a fixed binary blob
(`open_op` and the others below); see pty_relay.h for the layout.
"""

from __future__ import annotations

import asyncio
import collections
import struct
from collections.abc import Awaitable, Callable, Sequence

PTY_OPEN, PTY_INPUT, PTY_RESIZE, PTY_CLOSE = 1, 2, 3, 4
INPUT_CHUNK = 64 * 1024  # typed input is sent in ops of at most this much
MAX_STRINGS = 512  # argv and environment entries (pty_relay.h PTY_MAX_STRINGS)
MAX_OPEN_BYTES = 256 * 1024  # an open op's argv and environment together
MAX_TERMINALS = 8  # per kernel: pid 1's table (pty_relay.h MAX_PTYS)


def _head(op: int, tid: int) -> bytes:
    return struct.pack(">BI", op, tid)


def open_op(
    tid: int, argv: Sequence[str], env: dict[str, str], rows: int, cols: int, cpu_seconds: int
) -> bytes:
    strings = [*argv, *(f"{k}={v}" for k, v in env.items())]
    if not argv or len(strings) > MAX_STRINGS or any("\0" in s for s in strings):
        raise ValueError("a terminal's argv and environment: at most 512 strings, no NUL")
    packed = b"".join(s.encode() + b"\0" for s in strings)
    if len(packed) > MAX_OPEN_BYTES:
        raise ValueError(f"a terminal's argv and environment: at most {MAX_OPEN_BYTES} bytes")
    fields = struct.pack(">HHIHH", rows, cols, cpu_seconds, len(argv), len(env))
    return _head(PTY_OPEN, tid) + fields + packed


def input_op(tid: int, data: bytes) -> bytes:
    return _head(PTY_INPUT, tid) + data


def resize_op(tid: int, rows: int, cols: int) -> bytes:
    return _head(PTY_RESIZE, tid) + struct.pack(">HH", rows, cols)


def close_op(tid: int) -> bytes:
    return _head(PTY_CLOSE, tid)


Send = Callable[[bytes], Awaitable[None]]  # sends one op's blob to pid 1


class Terminal:
    """One shell on a pty in a kernel. `read` returns its output as it comes, then
    None once the shell has exited (its wait status in `exit_status`, -1 if it
    could not start) or the kernel is gone."""

    def __init__(
        self,
        tid: int,
        send: Send,
        release: Callable[[int], None],
        on_close: Callable[[Terminal], Awaitable[None]],
    ) -> None:
        self.tid = tid
        self._send = send
        self._release = release  # gives back what was held for output taken
        self._on_close = on_close  # the kernel forgets it and tells pid 1
        self._output: collections.deque[tuple[bytes, int]] = collections.deque()
        self._arrived = asyncio.Event()
        self.ended = False  # the shell exited or the kernel is gone
        self.closed = False
        self.exit_status: int | None = None

    # -- from the kernel's reader ------------------------------------------------

    def feed(self, data: bytes, size: int) -> None:
        self._output.append((data, size))
        self._arrived.set()

    def end(self, status: int | None) -> None:
        self.ended, self.exit_status = True, status
        self._arrived.set()

    # -- for the terminal's user -------------------------------------------------

    async def read(self) -> bytes | None:
        """What the pty printed since the last read; None at the end."""
        while not self._output:
            if self.ended or self.closed:
                return None
            self._arrived.clear()
            await self._arrived.wait()
        pieces, held = [], 0
        while self._output and held < INPUT_CHUNK * 4:
            data, size = self._output.popleft()
            pieces.append(data)
            held += size
        self._release(held)
        return b"".join(pieces)

    async def write(self, data: bytes) -> None:
        """Type `data` (control characters included) into the terminal."""
        if self.ended or self.closed:
            return
        for start in range(0, len(data), INPUT_CHUNK):
            await self._send(input_op(self.tid, data[start : start + INPUT_CHUNK]))

    async def resize(self, rows: int, cols: int) -> None:
        if not (self.ended or self.closed):
            await self._send(resize_op(self.tid, rows, cols))

    async def close(self) -> None:
        """End the shell and every process of its session (idempotent); the kernel
        lives on."""
        if self.closed:
            return
        self.closed = True
        self.drop_output()
        self._arrived.set()
        await self._on_close(self)

    def drop_output(self) -> None:
        held = sum(size for _data, size in self._output)
        self._output.clear()
        self._release(held)
