"""The runner's main loop: ops from the host in, events out (see `protocol`).

`serve(fd)` is what pid 1 calls in the runner process (`forking.fork_runner`
with `child_main=serve`). It is single-threaded: the host's interrupt reaches it
as a SIGINT from pid 1, which `channel.InterruptGate` turns into a
KeyboardInterrupt while user code runs and ignores otherwise.

Standard library only: this runs inside the kernel.
"""

from __future__ import annotations

import _signal
import os
import socket

from .batch import run_batch
from .channel import Channel, InterruptGate
from .files import WORK_DIR
from .job import run_job
from .node_repl import NodeRepl
from .program import EXIT_CANNOT_RUN, run_snippet
from .python_repl import PythonRepl


def serve(fd: int, work_dir: str = WORK_DIR) -> None:
    """Serve the host's ops on the control socket `fd` until it closes.

    Ops: "query" (the python3 REPL, or the Node.js one with "repl": "node"),
    "exec" (a snippet written to files and run by a shell command: how the
    compiled languages and bash answer queries), "batch", "job" (the one-shot
    faces' step, runner/job.py), "complete", and
    "input" while something waits for it. work_dir is where programs run.
    """
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    os.set_inheritable(fd, False)  # subprocesses must not hold the control socket
    gate = InterruptGate()
    # _signal, not signal: its enums are pages a fresh fork copies at first touch
    _signal.signal(_signal.SIGINT, gate.handler)
    channel = Channel(sock, gate)
    # Made at the first op that is not a one-shot job's: a job's kernel never
    # queries (its steps run as fresh interpreters: python_program undoes what the
    # REPL installs), and making it was 0.28 ms of a Jobe python3 run's CPU.
    repl: PythonRepl | None = None
    node = NodeRepl(channel, gate, work_dir)
    try:
        channel.send_idle({"ev": "ready"})
        while True:
            try:
                message, blob = channel.next_op()
            except KeyboardInterrupt:  # only if user code replaced the SIGINT handler
                continue
            op = message.get("op")
            if repl is None and op != "job":
                repl = PythonRepl(channel, gate)
            if op == "query":
                code = message.get("code", "")
                if not isinstance(code, str):
                    channel.send_idle({"ev": "error", "message": "query: code must be a string"})
                    continue
                rc = node.run(code) if message.get("repl") == "node" else repl.run(code)
                channel.send_idle({"ev": "finished", "exitCode": rc})
            elif op == "exec":
                rc = _run_exec(channel, gate, message, work_dir)
                channel.send_idle({"ev": "finished", "exitCode": rc})
            elif op == "batch":
                run_batch(channel, gate, message, work_dir)
            elif op == "job":  # one program under limits of its own (runner/job.py)
                run_job(channel, gate, message, blob, work_dir)
            elif op == "complete":
                items = repl.complete(message.get("code", ""))
                channel.send_idle({"ev": "completions", "rid": message.get("rid"), "items": items})
            elif op == "input":
                channel.send_idle({"ev": "error", "message": "input: no input is pending"})
            else:
                channel.send_idle({"ev": "error", "message": f"unknown op {repr(op)[:100]}"})
    except (EOFError, ConnectionError):
        return  # pid 1 (and so the host) went away


def _run_exec(channel: Channel, gate: InterruptGate, message: dict, work_dir: str) -> int:
    """{"op": "exec", "command": str, "files": {name: text}}."""
    command, files = message.get("command"), message.get("files") or {}
    valid_files = isinstance(files, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    )
    if not isinstance(command, str) or not valid_files:
        channel.console("stderr", b"exec: command must be a string, files an object of strings\n")
        return EXIT_CANNOT_RUN
    return run_snippet(channel, gate, command, files, work_dir)
