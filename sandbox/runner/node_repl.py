"""The nodejs kernel's query mode: one persistent Node.js process, `node_repl.js`.

The runner starts it on the first query (in its own session, so the SIGINT
that pid 1 sends the runner's group on an interrupt does not reach it; the
runner forwards one only while a query runs) and sends it each query's code
over a pipe. The Node.js process runs the code in its global scope, waits
until nothing the code started keeps its event loop alive, and answers with
the exit code. Its stdin is one pipe for its whole life, fed by "input" ops
like a program's (`program.StdinFeed`), except that an end-of-input request
is ignored: closing it would end stdin for every later query.

If the Node.js process exits (process.exit(), a crash, a second interrupt),
the query reports its exit status and the next query starts a fresh one: the
context is lost, which a line on stderr says.

Standard library only: this runs inside the kernel.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess

from .channel import Channel, InterruptGate
from .program import StdinFeed, supervise

# Read in the spawner, before any kernel exists: inside a kernel this file's
# directory is not there.
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "node_repl.js")) as _f:
    SCRIPT = _f.read()

NODE = "node"
EXIT_INTERRUPTED = 130
EXIT_CANNOT_RUN = 127


class NodeRepl:
    """The Node.js process behind a nodejs kernel's queries, started on first use."""

    def __init__(self, channel: Channel, gate: InterruptGate, cwd: str) -> None:
        self._channel = channel
        self._gate = gate
        self._cwd = cwd
        self._proc: subprocess.Popen | None = None
        self._feed: StdinFeed | None = None
        self._commands = -1
        self._results = -1
        self._unread = b""  # of the result pipe, after the last full line

    def run(self, code: str) -> int:
        """Run one query to its end; its exit code."""
        if self._proc is None and not self._start():
            return EXIT_CANNOT_RUN
        assert self._proc is not None and self._feed is not None
        self._feed.reported = False
        try:
            os.write(self._commands, json.dumps({"code": code}).encode() + b"\n")
        except OSError:
            return self._lost()
        proc = self._proc

        def interrupted(count: int) -> None:
            sig = signal.SIGINT if count == 1 else signal.SIGKILL
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)

        supervise(self._channel, self._gate, self._feed, self._results, interrupted)
        line = self._read_line()
        try:
            rc = json.loads(line)["exitCode"]
        except (ValueError, KeyError, TypeError):
            return self._lost()
        return rc if isinstance(rc, int) else 1

    def _start(self) -> bool:
        commands_r, self._commands = os.pipe2(os.O_CLOEXEC)
        self._results, results_w = os.pipe2(os.O_CLOEXEC)
        self._feed = StdinFeed(eof_allowed=False)
        try:
            self._proc = subprocess.Popen(
                [NODE, "-e", SCRIPT, str(commands_r), str(results_w)],
                cwd=self._cwd,
                stdin=self._feed.read_fd,
                pass_fds=(commands_r, results_w),
                start_new_session=True,
            )
        except OSError as e:
            self._channel.console("stderr", f"cannot start {NODE}: {e}\n".encode())
            self._stop()
            return False
        finally:
            os.close(commands_r)
            os.close(results_w)
        self._feed.close_read_end()
        if not self._read_line().startswith(b'{"ready"'):
            self._lost()
            return False
        return True

    def _read_line(self) -> bytes:
        """The next line from the result pipe; b"" if the process closed it."""
        while b"\n" not in self._unread:
            data = os.read(self._results, 4096)
            if not data:
                return b""
            self._unread += data
        line, _, self._unread = self._unread.partition(b"\n")
        return line

    def _lost(self) -> int:
        """The Node.js process is gone: its exit status, and a fresh one next time."""
        rc = EXIT_CANNOT_RUN
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            status = self._proc.wait()
            rc = 128 - status if status < 0 else status
        self._stop()
        note = "[the Node.js process exited; the next query starts with a fresh context]\n"
        self._channel.console("stderr", note.encode())
        return rc

    def _stop(self) -> None:
        if self._commands >= 0:
            os.close(self._commands)
            self._commands = -1
        if self._results >= 0:
            os.close(self._results)
            self._results = -1
            self._unread = b""
        if self._feed is not None:
            self._feed.close()
            self._feed = None
        self._proc = None
