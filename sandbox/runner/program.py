"""Programs the runner starts: batch steps, compiled snippets, the Node.js context.

Such a program writes its console straight to fds 1 and 2 (the pipes pid 1
relays) and reads its stdin from a pipe the runner holds. While it runs, the
runner serves the host:

* "input" ops are written to the stdin pipe as a line. Data that is exactly
  "\\x04" (what Ctrl-D sends on a terminal) or an op with "eof": true closes
  the pipe instead, so a program reading to the end of its input can finish;
* "waiting-input" is reported when the program sleeps reading the empty pipe
  (see `stdin_watch`), once per wait;
* an interrupt (SIGINT, see `channel.InterruptGate`) is passed on by the
  caller's `on_interrupt`; for a plain program the SIGINT already reached it
  through the process group, and a second one kills it (exit code 130).

Standard library only: this runs inside the kernel.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import tempfile
from collections.abc import Callable

from .channel import Channel, InterruptGate
from .media import MediaPipe
from .stdin_watch import StdinWatch

SHELL = "/bin/sh"
EXIT_CANNOT_RUN = 127
EXIT_INTERRUPTED = 130  # as a shell reports SIGINT; also for a step killed by a 2nd interrupt
EOF_MARK = "\x04"
# /proc is looked at this soon after a program starts or gets input, then less
# and less often: a program that waits is seen within milliseconds, one that
# computes for long costs almost nothing.
POLL_FIRST = 0.002
POLL_MAX = 0.05


class StdinFeed:
    """The runner's end of one program's stdin pipe."""

    def __init__(self, eof_allowed: bool = True) -> None:
        self.read_fd, self._write_fd = os.pipe2(os.O_CLOEXEC)
        self._eof_allowed = eof_allowed
        os.set_blocking(self._write_fd, False)
        self._watch = StdinWatch(self._write_fd)
        self._pending = bytearray()
        self._eof = False
        self.reported = False
        self.interval = POLL_FIRST

    def feed(self, data: str, eof: bool) -> None:
        """Queue a line of input (a newline is added unless present), or end the input."""
        if eof or data == EOF_MARK:
            self._eof = self._eof_allowed
        else:
            self._pending += data.encode("utf-8", "replace")
            if not data.endswith("\n"):
                self._pending += b"\n"
        self.reported = False
        self.interval = POLL_FIRST
        self.flush()

    def flush(self) -> None:
        """Write what fits into the pipe; close it once everything is out after EOF."""
        if self._write_fd < 0:
            return
        while self._pending:
            try:
                n = os.write(self._write_fd, self._pending)
            except BlockingIOError:
                return
            except OSError:  # no reader left: the input has nowhere to go
                self._pending.clear()
                break
            del self._pending[:n]
        if self._eof:
            self.close()

    def check(self, channel: Channel) -> None:
        """Report "waiting-input" if the program sleeps on the empty pipe."""
        self.flush()
        if not self.reported and self._write_fd >= 0 and self._watch.waiting():
            self.reported = True
            channel.send({"ev": "waiting-input", "is_password": False})
        self.interval = min(self.interval * 2, POLL_MAX)

    def close(self) -> None:
        if self._write_fd >= 0:
            os.close(self._write_fd)
            self._write_fd = -1
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1

    def close_read_end(self) -> None:
        """After the program has its copy of the read end."""
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1


def supervise(
    channel: Channel,
    gate: InterruptGate,
    feed: StdinFeed,
    done_fd: int,
    on_interrupt: Callable[[int], None],
    media: MediaPipe | None = None,
) -> None:
    """Serve the host while a program runs, until `done_fd` becomes readable;
    forward what it writes to `media` as it comes.

    on_interrupt(n) is called for the n-th interrupt during this run.
    """
    interrupts = 0
    gate.armed = True  # armed throughout: an interrupt is never dropped, at worst deferred
    try:
        while True:
            try:
                fds = (done_fd,) if media is None or media.read_fd < 0 else (done_fd, media.read_fd)
                message = channel.wait_op(feed.interval, fds)
                if message is not None:
                    with gate:
                        _handle_op(channel, feed, message[0])
                elif len(fds) > 1 and _readable(fds[1]):
                    with gate:
                        media.read()
                elif _readable(done_fd):
                    if media is not None:  # what it wrote last, before "finished"
                        with gate:
                            media.read()
                    return
                else:
                    with gate:
                        feed.check(channel)
            except KeyboardInterrupt:
                interrupts += 1
                on_interrupt(interrupts)
    finally:
        gate.armed = False


def _handle_op(channel: Channel, feed: StdinFeed, message: dict) -> None:
    op = message.get("op")
    if op == "input":
        data = message.get("data")
        feed.feed(data if isinstance(data, str) else "", bool(message.get("eof")))
    elif op == "complete":  # nothing to complete against while a program runs
        channel.send({"ev": "completions", "rid": message.get("rid"), "items": []})
    else:
        channel.send({"ev": "error", "message": f"{op!r}: a program is still running"})


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def run_program(
    channel: Channel,
    gate: InterruptGate,
    command: str,
    cwd: str,
) -> int:
    """Run `sh -c command` to its end, serving input; its exit code (128 + n for signal n)."""
    feed = StdinFeed()
    media = MediaPipe(channel)
    try:
        try:
            proc = subprocess.Popen(
                [SHELL, "-c", command],
                cwd=cwd,
                stdin=feed.read_fd,
                start_new_session=False,  # in the runner's group: an interrupt reaches it
                pass_fds=(media.write_fd,),
                env={**os.environ, MediaPipe.ENV: str(media.write_fd)},
            )
        except (OSError, ValueError) as e:  # ValueError: a NUL, or text that is no UTF-8
            channel.console("stderr", f"cannot run {SHELL} in {cwd}: {e}\n".encode())
            return EXIT_CANNOT_RUN
        feed.close_read_end()
        media.close_write_end()
        pidfd = os.pidfd_open(proc.pid)
        killed = False

        def interrupted(count: int) -> None:
            nonlocal killed
            if count > 1:  # the SIGINT was not enough
                killed = True
                proc.kill()

        try:
            supervise(channel, gate, feed, pidfd, interrupted, media)
        finally:
            os.close(pidfd)
        rc = proc.wait()
    finally:
        feed.close()
        media.close()
    if killed:
        return EXIT_INTERRUPTED
    return 128 - rc if rc < 0 else rc


def run_snippet(
    channel: Channel,
    gate: InterruptGate,
    command: str,
    files: dict[str, str],
    cwd: str,
) -> int:
    """Write `files` into a fresh directory under /tmp, then run `command` there.

    `{dir}` in the command is that directory; the command runs in `cwd`, so a
    compiled snippet reads and writes the user's files. The directory is removed
    afterwards.
    """
    scratch = tempfile.mkdtemp(prefix="query-")
    try:
        for name, text in files.items():
            if os.sep in name or name in ("", ".", ".."):
                channel.console("stderr", f"bad snippet file name {name!r}\n".encode())
                return EXIT_CANNOT_RUN
            # surrogatepass: a lone surrogate (JSON allows "\ud800") is written as its
            # bytes for the compiler to judge, not a crash of the runner
            with open(
                os.path.join(scratch, name), "w", encoding="utf-8", errors="surrogatepass"
            ) as f:
                f.write(text)
        return run_program(channel, gate, command.replace("{dir}", scratch), cwd)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(scratch)
