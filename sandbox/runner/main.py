"""The runner's main loop: ops from the host in, events out (see `protocol`).

`serve(fd)` is what pid 1 calls in the runner process (`init.serve_as_init`
with `child_main=serve`). It is single-threaded: the host's interrupt reaches it
as a SIGINT from pid 1, which `channel.InterruptGate` turns into a
KeyboardInterrupt while user code runs and ignores otherwise.

Standard library only: this runs inside the kernel.
"""

from __future__ import annotations

import os
import signal
import socket

from .batch import run_batch
from .channel import Channel, InterruptGate
from .files import WORK_DIR
from .python_repl import PythonRepl


def serve(fd: int, work_dir: str = WORK_DIR) -> None:
    """Serve the python3 REPL on the control socket `fd` until it closes.

    work_dir is where batch steps run.
    """
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    os.set_inheritable(fd, False)  # subprocesses must not hold the control socket
    gate = InterruptGate()
    signal.signal(signal.SIGINT, gate.handler)
    channel = Channel(sock, gate)
    repl = PythonRepl(channel, gate)
    try:
        channel.send({"ev": "ready"})
        while True:
            try:
                message, _blob = channel.next_op()
            except KeyboardInterrupt:  # only if user code replaced the SIGINT handler
                continue
            op = message.get("op")
            if op == "query":
                code = message.get("code", "")
                if not isinstance(code, str):
                    channel.send({"ev": "error", "message": "query: code must be a string"})
                    continue
                rc = repl.run(code)
                channel.send({"ev": "finished", "exitCode": rc})
            elif op == "batch":
                run_batch(channel, gate, message, work_dir)
            elif op == "complete":
                items = repl.complete(message.get("code", ""))
                channel.send({"ev": "completions", "rid": message.get("rid"), "items": items})
            elif op == "input":
                channel.send({"ev": "error", "message": "input: no input is pending"})
            else:
                channel.send({"ev": "error", "message": f"unknown op {repr(op)[:100]}"})
    except (EOFError, ConnectionError):
        return  # pid 1 (and so the host) went away
