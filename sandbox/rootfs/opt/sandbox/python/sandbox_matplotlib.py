"""matplotlib's backend in a sandbox kernel (MPLBACKEND=module://sandbox_matplotlib).

A kernel has no display: show() sends each open figure to the client as a console
item instead, an SVG (`["media", ["image/svg+xml", svg]]`) or, when asked with
`plt.show(format="png")` or when the SVG would be over SVG_LIMIT, a PNG as a
`data:image/png;base64,...` URI, and closes it, as Jupyter's inline backend does.
A figure left open at the end of a query is shown then (the REPL calls show()).

The items go out on the REPL's channel (sandbox.runner.media, in the runner's
memory) or, in a program the runner started (a batch step), on the socket that
SANDBOX_MEDIA_FD names. Elsewhere (a terminal) show() says on stderr that the
figure was not shown, and savefig() is the way to keep it.

This file is in every kernel's root (sandbox/rootfs/) and on its PYTHONPATH.
"""

from __future__ import annotations

import io
import os
import sys

from matplotlib.backend_bases import FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg

SVG_LIMIT = 1024 * 1024  # a larger SVG is sent as a PNG instead
PNG_DPI = 100
NOT_SHOWN = (
    "[a figure was not shown: figures are shown in query mode; keep this one with plt.savefig()]\n"
)


def _emit(mime: str, data: str | bytes) -> bool:
    """Send one item: in the REPL on its channel, in a program the runner started
    (a batch step) as a record on the socket SANDBOX_MEDIA_FD names, then wait
    for the runner to have sent it on."""
    media = sys.modules.get("sandbox.runner.media")
    if media is not None:
        return media.emit(mime, data)
    fd = os.environ.get("SANDBOX_MEDIA_FD", "")
    if not fd.isdigit():
        return False
    payload = data.encode() if isinstance(data, str) else data
    record = f"{len(payload)} {mime}\n".encode() + payload
    for stream in (sys.stdout, sys.stderr):  # what was printed comes first
        stream.flush()
    try:
        view = memoryview(record)
        while view:
            view = view[os.write(int(fd), view) :]
        # the runner has sent it on: what is printed next comes after it
        return os.read(int(fd), 1) == b"\x06"
    except OSError:
        return False


def send_figure(figure, format: str | None = None) -> None:
    """Send one figure as SVG (or PNG: format="png", or an SVG over SVG_LIMIT)."""
    if format not in (None, "svg", "png"):
        raise ValueError(f'format: "svg" or "png", not {format!r}')
    if format != "png":
        text = io.StringIO()
        figure.savefig(text, format="svg")
        svg = text.getvalue()
        if len(svg.encode()) <= SVG_LIMIT:
            if not _emit("image/svg+xml", svg):
                sys.stderr.write(NOT_SHOWN)
            return
    data = io.BytesIO()
    figure.savefig(data, format="png", dpi=PNG_DPI)
    if not _emit("image/png", data.getvalue()):
        sys.stderr.write(NOT_SHOWN)


class FigureManager(FigureManagerBase):
    def show(self) -> None:
        send_figure(self.canvas.figure)


class FigureCanvas(FigureCanvasAgg):
    manager_class = FigureManager


def show(*, block: bool | None = None, format: str | None = None) -> None:
    """Send every open figure, then close them."""
    import matplotlib.pyplot as plt

    try:
        for number in plt.get_fignums():
            send_figure(plt.figure(number), format)
    finally:
        plt.close("all")
