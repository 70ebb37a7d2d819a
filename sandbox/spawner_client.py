"""The server's side of the spawner (`sandbox.spawner`): start it, and ask it over
its socket.

Kept apart from the spawner's own module so that the spawner process, whose
memory every kernel is forked from, never imports asyncio and what comes with it
(its modules, their at-fork handlers, a larger heap to copy page tables of).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Callable

from .kernel_uids import UidRange
from .runner import protocol
from .spec import KernelSpec

# What the spawner is started with of the server's environment: what it needs to
# find its tools (PATH: the C compiler for kernel-init), its cache (HOME,
# XDG_CACHE_HOME) and its scratch space (TMPDIR); a forced cgroup layout is a flag.
# Nothing else: every kernel starts as a copy of a process forked from the spawner,
# and the server's environment may hold secrets (threat model row 15).
SPAWNER_ENVIRONMENT = (
    "PATH", "HOME", "XDG_CACHE_HOME", "TMPDIR", "PYTHONPATH", "SANDBOX_PREIMPORT",
)  # fmt: skip


def spawner_environment() -> dict[str, str]:
    """The spawner's environment: the allowlisted part of ours."""
    return {name: os.environ[name] for name in SPAWNER_ENVIRONMENT if name in os.environ}


class SpawnerError(RuntimeError):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class SpawnerClient:
    """The server's asyncio handle on its spawner process. Requests are serialised."""

    def __init__(self, proc: subprocess.Popen, sock: socket.socket) -> None:
        self.proc = proc
        self.pid = proc.pid
        self._sock = sock
        self._reader = protocol.FrameReader()
        self._pending: list[tuple[dict, list[int]]] = []
        self._lock = asyncio.Lock()
        self._exit_fd: int | None = None  # a pidfd of the spawner, while watched

    def when_exited(self, callback: Callable[[], object]) -> None:
        """Call `callback` from the event loop as soon as the spawner process exits
        (not at `close`). A pidfd: no polling, no thread."""
        self._exit_fd = os.pidfd_open(self.proc.pid)
        loop = asyncio.get_running_loop()

        def exited() -> None:
            self._unwatch()
            self.proc.poll()  # reap it: a zombie's pid would still look alive
            callback()

        loop.add_reader(self._exit_fd, exited)

    def _unwatch(self) -> None:
        if self._exit_fd is not None:
            asyncio.get_running_loop().remove_reader(self._exit_fd)
            os.close(self._exit_fd)
            self._exit_fd = None

    @classmethod
    async def start(
        cls,
        env: dict[str, str] | None = None,
        spares: int | None = None,
        start_timeout: float | None = None,
        uids: UidRange | None = None,
        cgroup_layout: str | None = None,
        preimport: str | None = None,
    ) -> SpawnerClient:
        """Launch `python -m sandbox.spawner` (same interpreter) and wait until it is
        ready. `spares`: how many spare processes it keeps; `start_timeout`: seconds
        before it gives up on a kernel start; `uids`: the kernels' (None: its
        defaults); `cgroup_layout`: the layout to force (v2, hybrid, v1, none), or
        None or "auto" to detect it; `preimport`: the modules python3 kernels start
        with (None: its default)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        extra = [] if spares is None else ["--spares", str(spares)]
        extra += [] if start_timeout is None else ["--start-timeout", str(start_timeout)]
        extra += [] if uids is None else ["--uids", str(uids)]
        extra += [] if cgroup_layout is None else ["--cgroup-layout", cgroup_layout]
        extra += [] if preimport is None else ["--preimport", preimport]
        proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox.spawner", str(theirs.fileno()), *extra],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            env=env if env is not None else spawner_environment(),
        )
        theirs.close()
        ours.setblocking(False)
        client = cls(proc, ours)
        hello, _ = await client._recv()
        if not hello.get("ready"):
            reason = hello.get("error", hello)
            raise SpawnerError("start-failed", f"the spawner did not start: {reason}")
        return client

    async def request(self, message: dict) -> tuple[dict, list[int]]:
        async with self._lock:
            loop = asyncio.get_running_loop()
            try:
                await loop.sock_sendall(self._sock, protocol.encode(message))
            except OSError as e:  # EPIPE, ECONNRESET: it died since the last request
                raise SpawnerError("gone", f"the spawner exited ({e.strerror})") from e
            reply, fds = await self._recv()
        if not reply.get("ok"):
            for fd in fds:
                os.close(fd)
            raise SpawnerError(reply.get("kind", "error"), reply.get("error", "spawner error"))
        return reply, fds

    async def spawn(
        self, kernel_id: str, spec: KernelSpec, keep_work: bool = False
    ) -> tuple[int, socket.socket]:
        request = {"op": "spawn", "id": kernel_id, "spec": spec.to_json(), "keep_work": keep_work}
        reply, fds = await self.request(request)
        if len(fds) != 1:
            raise SpawnerError("start-failed", "spawner sent no kernel socket")
        return reply["pid"], socket.socket(fileno=fds[0])

    async def destroy(self, kernel_id: str, keep_work: bool = False) -> int:
        """Free the kernel; how many forks its pids limit refused over its life."""
        reply, _ = await self.request({"op": "destroy", "id": kernel_id, "keep_work": keep_work})
        hits = reply.get("pids_limit_hits", 0)
        return hits if isinstance(hits, int) else 0

    async def stats(self, kernel_id: str) -> dict:
        reply, _ = await self.request({"op": "stats", "id": kernel_id})
        return reply

    async def cpu_usage(self) -> dict[str, int]:
        """{kernel id: CPU time in microseconds} of every live kernel, in one request."""
        reply, _ = await self.request({"op": "cpu"})
        return reply["usec"]

    async def set_limits(
        self, kernel_id: str, memory_bytes: int | None, pids: int | None, cpu_quota: float | None
    ) -> None:
        """New cgroup limits for a live kernel (SpawnerError if the layout cannot)."""
        limits = {"memory_bytes": memory_bytes, "pids": pids, "cpu_quota": cpu_quota}
        await self.request({"op": "limit", "id": kernel_id, "limits": limits})

    async def info(self) -> dict:
        reply, _ = await self.request({"op": "info"})
        return reply

    async def close(self) -> None:
        """Close the connection: the spawner destroys every kernel and exits."""
        self._unwatch()
        self._sock.close()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.proc.wait)

    async def _recv(self) -> tuple[dict, list[int]]:
        loop = asyncio.get_running_loop()
        while not self._pending:
            fut = loop.create_future()
            loop.add_reader(self._sock.fileno(), fut.set_result, None)
            try:
                await fut
            finally:
                loop.remove_reader(self._sock.fileno())
            try:
                data, fds, _flags, _addr = socket.recv_fds(self._sock, 65536, 16)
            except BlockingIOError:
                continue
            except OSError as e:  # ECONNRESET: it died with our request unread
                raise SpawnerError("gone", f"the spawner exited ({e.strerror})") from e
            if not data:
                raise SpawnerError("gone", "the spawner exited")
            self._reader.feed(data)
            frames = self._reader.frames()
            for i, (message, _blob, _raw) in enumerate(frames):
                self._pending.append((message, fds if i == 0 else []))
            if not frames:
                for fd in fds:
                    os.close(fd)
        return self._pending.pop(0)
