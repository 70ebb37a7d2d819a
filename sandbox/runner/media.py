"""Rich output of a python3 kernel: figures, tables and images as console items.

Spec §6.6: `["media", [mime, data]]` (text types as they are, binary types as
`data:` URIs) and `["html", html]`, in execution order among stdout and stderr.
The runner sends them as "media" events (`{"type": mime}`) and "html" events,
the data in the blob, on the channel console output takes; pid 1 drains the
pipes before it forwards each frame, so an item comes after everything the
program wrote before it.

Two things call `emit`: `display(obj)`, a builtin in the REPL (as in IPython),
which shows an object by its richest `_repr_*_` method, and the matplotlib
backend every kernel has (sandbox/rootfs/opt/sandbox/python/sandbox_matplotlib.py,
MPLBACKEND), whose show() sends each open figure. A program the runner starts
(a batch step) gets a `MediaPipe` instead, named by SANDBOX_MEDIA_FD, which the
backend writes to. Elsewhere (a terminal) there is no channel: the backend says
so on stderr.

Standard library only: this runs inside the kernel.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import sys

from .channel import Channel

# What one item may carry; the host refuses a larger one (kernel_events).
MAX_MEDIA_BYTES = 4 * 1024 * 1024
TEXT_TYPES = frozenset({"image/svg+xml"})
BINARY_TYPES = frozenset({"image/png", "image/jpeg", "image/gif"})

_channel: Channel | None = None


def attach(channel: Channel) -> None:
    """Called by the REPL: items go out on its channel."""
    global _channel
    _channel = channel


def data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def emit(mime: str, data: str | bytes) -> bool:
    """Send one item: mime "text/html" for an html item, else a media item (binary
    data becomes a data: URI). False where there is no channel (not a query in the
    REPL). ValueError for an unknown type; one over MAX_MEDIA_BYTES is replaced by
    a note on stderr."""
    if mime not in TEXT_TYPES | BINARY_TYPES | {"text/html"}:
        raise ValueError(f"not a type a kernel can show: {mime!r}")
    if mime in BINARY_TYPES and isinstance(data, bytes):
        data = data_uri(mime, data)
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    if _channel is None or _channel.forked:
        return False
    if len(data) > MAX_MEDIA_BYTES:
        size = f"{len(data) / 1024 / 1024:.1f} MiB"
        note = f"[{mime} of {size} not shown: an item may be {MAX_MEDIA_BYTES // 2**20} MiB]\n"
        sys.stderr.write(note)
        return True
    _flush_console()
    if mime == "text/html":
        _channel.send({"ev": "html"}, data)
    else:
        _channel.send({"ev": "media", "type": mime}, data)
    return True


def _flush_console() -> None:
    """User code may have replaced sys.stdout with a buffered file: flush it, so
    what it printed comes before the item."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a broken user stream must not stop the item
            stream.flush()


def _call(obj: object, method: str) -> object:
    """obj.method() if it has one and it answers; None otherwise (IPython's rule:
    a _repr_*_ that raises or returns None does not count)."""
    fn = getattr(type(obj), method, None)
    if fn is None:
        return None
    try:
        return getattr(obj, method)()
    except Exception:  # noqa: BLE001 - a broken repr falls back to the next one
        return None


def display(*objects: object) -> None:
    """Show each object as the richest item it offers: html (_repr_html_, as a
    pandas DataFrame has), SVG, PNG or JPEG; a matplotlib figure as the backend
    shows it; anything else as print(repr(obj)) would."""
    for obj in objects:
        if _show_figure(obj):
            continue
        html = _call(obj, "_repr_html_")
        if isinstance(html, str) and emit("text/html", html):
            continue
        svg = _call(obj, "_repr_svg_")
        if isinstance(svg, str) and emit("image/svg+xml", svg):
            continue
        shown = False
        for method, mime in (("_repr_png_", "image/png"), ("_repr_jpeg_", "image/jpeg")):
            raw = _call(obj, method)
            if isinstance(raw, str):  # some return base64 text already
                try:
                    raw = base64.b64decode(raw, validate=True)
                except ValueError:
                    raw = None
            if isinstance(raw, bytes) and emit(mime, raw):
                shown = True
                break
        if not shown:
            print(repr(obj))


def _show_figure(obj: object) -> bool:
    backend = sys.modules.get("sandbox_matplotlib")
    figure = sys.modules.get("matplotlib.figure")
    if backend is None or figure is None or not isinstance(obj, figure.Figure):
        return False
    backend.send_figure(obj)
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(obj)  # shown: not again at the end of the query
    return True


def flush_figures() -> None:
    """At the end of a query: show the figures left open, as IPython's inline
    backend does (only where matplotlib runs with our backend)."""
    backend = sys.modules.get("sandbox_matplotlib")
    if backend is not None and "matplotlib.pyplot" in sys.modules:
        backend.show()


class MediaPipe:
    """The media channel of a program the runner starts (a batch step): a socket
    whose other end the program inherits, named by SANDBOX_MEDIA_FD. The backend
    writes a record, `b"<length> <type>\\n" + data`, and waits for one byte back,
    which the runner sends once pid 1 has taken the item: by then what the program
    printed before it has gone ahead of it, and what it prints after comes after.

    The program is user code: a record that is malformed or over MAX_MEDIA_BYTES
    closes the channel (the program's next write fails), with a note on stderr; at
    most one record is held at a time.
    """

    ENV = "SANDBOX_MEDIA_FD"
    HEADER_MAX = 64
    ACK = b"\x06"

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        self._sock: socket.socket | None = ours
        self._theirs: socket.socket | None = theirs
        self.write_fd = theirs.fileno()
        self._buf = bytearray()

    @property
    def read_fd(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1

    def close_write_end(self) -> None:
        """After the program has its copy."""
        if self._theirs is not None:
            self._theirs.close()
            self._theirs = None

    def read(self) -> None:
        """Take what the program wrote (the socket is readable); forward whole records."""
        if self._sock is None:
            return
        try:
            data = self._sock.recv(1024 * 1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        self._buf += data
        while self._buf and self._sock is not None:
            newline = self._buf.find(b"\n", 0, self.HEADER_MAX)
            if newline < 0:
                if len(self._buf) >= self.HEADER_MAX:
                    self._refuse("a record without a header")
                return
            length, _, mime = bytes(self._buf[:newline]).partition(b" ")
            size = int(length) if length.isdigit() else -1
            kind = mime.decode("ascii", "replace")
            if not 0 <= size <= MAX_MEDIA_BYTES or kind not in TEXT_TYPES | BINARY_TYPES:
                self._refuse(f"a bad record header {bytes(self._buf[:newline])[:40]!r}")
                return
            if len(self._buf) < newline + 1 + size:
                return
            item = bytes(self._buf[newline + 1 : newline + 1 + size])
            del self._buf[: newline + 1 + size]
            if kind in BINARY_TYPES and not item.startswith(b"data:"):
                item = data_uri(kind, item).encode()
            self._channel.send({"ev": "media", "type": kind}, item)
            with contextlib.suppress(OSError):  # a program that does not wait: its loss
                self._sock.send(self.ACK)

    def _refuse(self, why: str) -> None:
        self._channel.console("stderr", f"[media channel closed: {why}]\n".encode())
        self.close()

    def close(self) -> None:
        self.close_write_end()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf.clear()
