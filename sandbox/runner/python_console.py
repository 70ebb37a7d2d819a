"""The python3 kernel's console streams: sys.stdout and sys.stderr as text writers
that send each write() as one "stdout"/"stderr" event at once, their binary
buffers, and sys.stdin reading from the host's "input" op (after a
"waiting-input"). Their fileno() is 1, 2 or 0, the pipes pid 1 relays, so a
subprocess handed them writes there; none of them can be closed (exit() closes
sys.stdin, and here it ends a query, not the kernel). python_repl installs them.

Standard library only: this runs inside the kernel.
"""

from __future__ import annotations

import io

from .channel import Channel


class _Unclosable:
    """The console lives as long as the kernel: close() does nothing.

    exit() closes sys.stdin before it raises SystemExit, and here SystemExit
    ends a query, not the REPL.
    """

    def close(self) -> None:
        pass


class _ConsoleFd:
    """What sys.stdout/stderr and their .buffer answer about the file behind them:
    the fd a subprocess inherits (the fd-level pipe), never a terminal."""

    _fd: int

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return False


class ConsoleWriter(_ConsoleFd, _Unclosable, io.TextIOBase):
    """sys.stdout / sys.stderr: every write() is one event, sent before it returns."""

    def __init__(self, channel: Channel, stream: str, fd: int) -> None:
        super().__init__()
        self._channel = channel
        self._stream = stream
        self._fd = fd
        self._buffer = ConsoleBuffer(channel, stream, fd)

    @property
    def encoding(self) -> str:
        return "utf-8"

    @property
    def errors(self) -> str:
        return "backslashreplace"

    @property
    def buffer(self) -> ConsoleBuffer:
        return self._buffer

    @property
    def line_buffering(self) -> bool:
        return False

    def write(self, s: str) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if s:
            self._channel.console(self._stream, s.encode("utf-8", "backslashreplace"))
        return len(s)


class ConsoleBuffer(_ConsoleFd, _Unclosable, io.BufferedIOBase):
    """sys.stdout.buffer: bytes written go out as they are."""

    def __init__(self, channel: Channel, stream: str, fd: int) -> None:
        super().__init__()
        self._channel = channel
        self._stream = stream
        self._fd = fd

    def write(self, b: bytes) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        data = bytes(b)
        self._channel.console(self._stream, data)
        return len(data)


class ConsoleReader(_Unclosable, io.TextIOBase):
    """sys.stdin: each time its buffer runs dry it asks the host for a line.

    An answer is one line (a "\\n" is added unless it ends with one), or
    several if the text holds newlines. read() returns whatever one answer
    gives, since a console has no end of input; an "input" op with "eof": true
    marks one (read() and iteration then end, and the next read asks again).
    """

    def __init__(self, channel: Channel) -> None:
        super().__init__()
        self._channel = channel
        self._buf = ""
        self._eof = False

    @property
    def encoding(self) -> str:
        return "utf-8"

    @property
    def errors(self) -> str:
        return "strict"

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return 0

    def isatty(self) -> bool:
        return False

    def _fill(self, is_password: bool) -> None:
        data, eof = self._channel.read_input(is_password)
        if data and not eof and not data.endswith("\n"):
            data += "\n"
        elif not data and not eof:
            data = "\n"
        self._buf += data
        self._eof = eof

    def _check(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file.")

    def readline(self, size: int | None = -1, /, *, is_password: bool = False) -> str:
        self._check()
        if size is None:
            size = -1
        while "\n" not in self._buf and not self._eof:
            if 0 <= size <= len(self._buf):
                break
            self._fill(is_password)
        end = self._buf.find("\n") + 1 or len(self._buf)
        if size >= 0:
            end = min(end, size)
        line, self._buf = self._buf[:end], self._buf[end:]
        if not line and self._eof:
            self._eof = False  # the end of input is reported once
        return line

    def read(self, size: int | None = -1, /) -> str:
        self._check()
        if size is None:
            size = -1
        if not self._buf and not self._eof:
            self._fill(False)
        end = len(self._buf) if size < 0 else size
        out, self._buf = self._buf[:end], self._buf[end:]
        if not out and self._eof:
            self._eof = False
        return out
