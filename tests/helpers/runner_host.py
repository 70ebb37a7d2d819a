"""A stand-in host for the in-kernel runner without namespaces: a forked process plays
pid 1 (PR_SET_CHILD_SUBREAPER makes orphans come back to it, as they would to the
real pid 1) and calls `forking.fork_runner` with `main.serve` as the runner; the test
is the host, speaking protocol frames over the other end of a socketpair."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import signal
import socket
import time
from dataclasses import dataclass, field

import pytest

from helpers.harness import alive
from sandbox import kernel_init_build
from sandbox.runner import forking, main, protocol

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        parent = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    children = [int(c) for c in f.read().split()]
            except OSError:
                continue
            found += children
            stack += children
    return found


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("kernel-init closed the socket")
        data += chunk
    return data


def recv_flagged(sock: socket.socket) -> tuple[dict, bytes, bool]:
    """One frame from kernel-init: (message, blob, whether pid 1 flagged it)."""
    jword, blen = protocol.HEADER.unpack(recv_exact(sock, protocol.HEADER.size))
    assert not jword & protocol.INTERRUPT, "kernel-init never sends INTERRUPT"
    jlen = jword & ~protocol.FLAGS
    body = recv_exact(sock, jlen + blen)
    return protocol.decode_body(body[:jlen]), body[jlen:], bool(jword & protocol.FOR_PID1)


def wait_pid(pid: int, timeout: float) -> int | None:
    """Reap pid within timeout; its wait status, or None if it is still running."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)


@dataclass
class Run:
    events: list[tuple[dict, bytes, float]] = field(default_factory=list)
    from_pid1: list[bool] = field(default_factory=list)  # each event's FOR_PID1 flag

    @property
    def last(self) -> dict:
        return self.events[-1][0]

    @property
    def exit_code(self) -> int | None:
        return self.last.get("exitCode")

    def text(self, stream: str) -> str:
        return b"".join(blob for m, blob, _ in self.events if m.get("ev") == stream).decode()

    @property
    def stdout(self) -> str:
        return self.text("stdout")

    @property
    def stderr(self) -> str:
        return self.text("stderr")

    @property
    def console(self) -> list[tuple[str, str]]:
        """stdout/stderr items merged as the API merges them (spec 6.6)."""
        items: list[tuple[str, str]] = []
        for message, blob, _ in self.events:
            ev = message.get("ev")
            if ev not in ("stdout", "stderr"):
                continue
            if items and items[-1][0] == ev:
                items[-1] = (ev, items[-1][1] + blob.decode())
            else:
                items.append((ev, blob.decode()))
        return items


_programs: list[kernel_init_build.KernelInit] = []


def kernel_init_program() -> kernel_init_build.KernelInit:
    """kernel-init and a helper zip, made once for this module."""
    if not _programs:
        _programs.append(kernel_init_build.prepare())
    return _programs[0]


class Kernel:
    """A forked pid-1 stand-in running the python3 runner, seen from the host side:
    the test's process forks, becomes a subreaper, forks the runner and execs
    kernel-init, as pid 1 does in a real kernel.

    work_dir: the root of pid 1's file operations and the runner's batch steps.
    """

    def __init__(self, work_dir: str | None = None) -> None:
        built = kernel_init_program()
        host, kernel = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                host.close()
                become_subreaper()
                program = forking.KernelInitProgram(built.binary_fd, built.helper_fd, built.python)
                if work_dir is None:
                    forking.fork_runner(main.serve).serve(kernel.detach(), program)
                else:
                    serve = functools.partial(main.serve, work_dir=work_dir)
                    forking.fork_runner(serve).serve(kernel.detach(), program, work_dir=work_dir)
            finally:
                os._exit(99)
        kernel.close()
        self.pid = pid
        self.sock = host
        self.status: int | None = None
        ready = self.collect(until=("ready",))
        assert ready.last == {"ev": "ready"}

    def send(self, blob: bytes = b"", **message: object) -> None:
        self.sock.sendall(protocol.encode_op(message, blob))

    def collect(self, until: tuple[str, ...] = ("finished", "exited"), timeout: float = 5.0) -> Run:
        """Frames until one whose "ev" is in `until` (a "reply" or "exited" only
        counts with pid 1's flag, as for the host)."""
        run = Run()
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            message, blob, from_pid1 = recv_flagged(self.sock)
            run.events.append((message, blob, time.monotonic()))
            run.from_pid1.append(from_pid1)
            ev = message.get("ev")
            if ev in until and (from_pid1 or ev not in ("reply", "exited")):
                return run

    def query(self, code: str, until: tuple[str, ...] = ("finished", "exited"), **kw) -> Run:
        self.send(op="query", code=code)
        return self.collect(until, **kw)

    def wait(self, timeout: float = 3.0) -> int | None:
        if self.status is None:
            self.status = wait_pid(self.pid, timeout)
        return self.status

    def close(self) -> None:
        leftovers = descendants(self.pid)
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.wait(3.0) is None:
            leftovers.append(self.pid)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.status is None:
            self.wait(3.0)


def file_helpers(kernel: Kernel) -> list[int]:
    """The file helpers running under a kernel's pid 1 (not zombies)."""
    found = []
    for pid in descendants(kernel.pid):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"/proc/self/fd/4" in f.read() and alive(pid):
                found.append(pid)
    return found


def frame_code(message: dict, flags: int = 0) -> str:
    """User code that writes `message` as a frame straight to fd 3."""
    body = json.dumps(message)
    return (
        "import os, struct\n"
        f"body = {body!r}.encode()\n"
        f"os.write(3, struct.pack('>II', len(body) | {flags}, 0) + body)\n"
    )


def run_exec(argv: list[str], send: int | None = None) -> tuple[int, bytes]:
    """Run run_as_pid1 in a forked pid-1 stand-in; its exit code and stderr."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.dup2(w, 2)
            become_subreaper()
            forking.run_as_pid1(argv, {"PATH": "/usr/bin:/bin"}, "/")
        finally:
            os._exit(99)
    os.close(w)
    try:
        if send is not None:
            time.sleep(0.3)
            os.kill(pid, send)
        status = wait_pid(pid, 5.0)
        if status is None:
            for p in [*descendants(pid), pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("run_as_pid1 did not exit")
        os.set_blocking(r, False)
        try:
            err = os.read(r, 4096)
        except BlockingIOError:
            err = b""
        return os.waitstatus_to_exitcode(status), err
    finally:
        os.close(r)


def event_kinds(run: Run) -> list[str]:
    return [m["ev"] for m, _, _ in run.events]
