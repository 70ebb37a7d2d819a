"""The server's side of the spawner (`sandbox.spawner`): start it, and ask it over
its socket.

Kept apart from the spawner's own module so that the spawner process, whose
memory every kernel is forked from, never imports asyncio and what comes with it
(its modules, their at-fork handlers, a larger heap to copy page tables of).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Coroutine

from . import fd_wait, spawner_protocol
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


def spawner_argv(
    fd: int | None,
    spares: int | None = None,
    start_timeout: float | None = None,
    uids: UidRange | None = None,
    cgroup_layout: str | None = None,
    preimport: str | None = None,
    listen: str | None = None,
    keep_for: float = 0.0,
) -> list[str]:
    """The spawner's command line (SpawnerClient.start says what each is); `fd` None
    for a spawner that is a service of its own (sandbox-spawner.service)."""
    argv = [sys.executable, "-m", "sandbox.spawner"] + ([] if fd is None else [str(fd)])
    argv += [] if spares is None else ["--spares", str(spares)]
    argv += [] if start_timeout is None else ["--start-timeout", str(start_timeout)]
    argv += [] if uids is None else ["--uids", str(uids)]
    argv += [] if cgroup_layout is None else ["--cgroup-layout", cgroup_layout]
    argv += [] if preimport is None else ["--preimport", preimport]
    if listen is not None and keep_for > 0:
        argv += ["--listen", listen, "--keep-for", str(keep_for)]
    return argv


class SpawnerError(RuntimeError):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class SpawnerClient:
    """The server's asyncio handle on its spawner process. Requests go one after the
    other on its socket, each with a tag; replies come as they are ready (a spawn's
    when its kernel has started), matched to their requests by tag."""

    def __init__(self, sock: socket.socket, pid: int, proc: subprocess.Popen | None = None) -> None:
        self.proc = proc  # None for a spawner an earlier server started (attach)
        self.pid = pid
        self.protocol: object = None  # what it said in its hello
        self.kernels_to_adopt = 0  # kernels it kept from an earlier server
        self._pidfd = os.pidfd_open(pid)
        self._sock = sock
        self._reader = protocol.FrameReader()
        self._fds: list[int] = []  # received, not yet paired with their reply
        self._send_lock = asyncio.Lock()
        # by tag: the request's answer to come, and the request
        self._waiting: dict[int, tuple[asyncio.Future[tuple[dict, list[int]]], dict]] = {}
        self._cleanups: set[asyncio.Task] = set()
        self._tags = itertools.count(1)
        self._listening = False
        self._gone: str | None = None  # why the connection ended
        self._exit_fd: int | None = None  # a pidfd of the spawner, while watched

    def when_exited(self, callback: Callable[[], object]) -> None:
        """Call `callback` from the event loop as soon as the spawner process exits
        (not at `close`). A pidfd: no polling, no thread."""
        self._exit_fd = os.dup(self._pidfd)
        loop = asyncio.get_running_loop()

        def exited() -> None:
            self._unwatch()
            if self.proc is not None:
                self.proc.poll()  # reap it: a zombie's pid would still look alive
            callback()

        loop.add_reader(self._exit_fd, exited)

    def _unwatch(self) -> None:
        if self._exit_fd is not None:
            asyncio.get_running_loop().remove_reader(self._exit_fd)
            os.close(self._exit_fd)
            self._exit_fd = None

    def has_exited(self) -> bool:
        """Whether the spawner process has exited (its pidfd is readable)."""
        return bool(fd_wait.readable([self._pidfd], 0))

    @property
    def returncode(self) -> int | None:
        """Its exit status, once it exited, if it is our child; else None."""
        return None if self.proc is None else self.proc.poll()

    @classmethod
    async def attach(cls, path: str, timeout: float = 10.0) -> SpawnerClient | None:
        """Connect to the spawner an earlier server left at the unix socket `path`,
        with the kernels it kept (sandbox.spawner: --listen, --keep-for); None when
        there is none. Check `protocol` before adopting them. SpawnerError "busy"
        when that spawner serves a server still running."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            with spawner_protocol.reachable(path) as address:
                await asyncio.get_running_loop().sock_connect(sock, address)
            creds = sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, spawner_protocol.UCRED.size
            )
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            return None
        pid, _uid, _gid = spawner_protocol.UCRED.unpack(creds)
        try:
            client = cls(sock, pid)
        except ProcessLookupError:  # it exited since
            sock.close()
            return None
        try:
            hello = await asyncio.wait_for(client._hello(), timeout)
        except (SpawnerError, TimeoutError):
            client._forget()
            return None
        if not hello.get("ready"):
            client._forget()
            if hello.get("busy"):
                raise SpawnerError("busy", str(hello.get("error", "busy")))
            return None
        client.protocol = hello.get("protocol")
        kernels = hello.get("kernels")
        client.kernels_to_adopt = kernels if isinstance(kernels, int) else 0
        return client

    def _forget(self) -> None:
        self._sock.close()
        os.close(self._pidfd)

    @classmethod
    async def start(
        cls,
        env: dict[str, str] | None = None,
        spares: int | None = None,
        start_timeout: float | None = None,
        uids: UidRange | None = None,
        cgroup_layout: str | None = None,
        preimport: str | None = None,
        listen: str | None = None,
        keep_for: float = 0.0,
    ) -> SpawnerClient:
        """Launch `python -m sandbox.spawner` (same interpreter) and wait until it is
        ready. `spares`: how many spare processes it keeps; `start_timeout`: seconds
        before it gives up on a kernel start; `uids`: the kernels' (None: its
        defaults); `cgroup_layout`: the layout to force (v2, hybrid, v1, none), or
        None or "auto" to detect it; `preimport`: the modules python3 kernels start
        with (None: its default); `listen` and `keep_for`: the unix socket where it
        waits `keep_for` seconds for the next server when this one goes, keeping
        its kernels (0: they end with this server). It runs in a session of its
        own, so that a signal to our process group (a Ctrl-C) is not one to it."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = spawner_argv(
            theirs.fileno(), spares, start_timeout, uids, cgroup_layout, preimport, listen,
            keep_for,
        )  # fmt: skip
        proc = subprocess.Popen(
            argv,
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            env=env if env is not None else spawner_environment(),
            start_new_session=True,
        )
        theirs.close()
        ours.setblocking(False)
        client = cls(ours, proc.pid, proc)
        hello = await client._hello()
        if not hello.get("ready"):
            reason = hello.get("error", hello)
            raise SpawnerError("start-failed", f"the spawner did not start: {reason}")
        return client

    async def request(self, message: dict) -> tuple[dict, list[int]]:
        loop = asyncio.get_running_loop()
        if self._gone is not None:
            raise SpawnerError("gone", self._gone)
        tag = next(self._tags)
        answer = loop.create_future()
        self._waiting[tag] = (answer, message)
        self._listen()
        # Shielded: a frame half sent would garble every later one. A request whose
        # asker is cancelled is still answered; its answer is dropped (a kernel it
        # started, destroyed) when it comes.
        try:
            await asyncio.shield(self._send(protocol.encode({**message, "tag": tag})))
        except OSError as e:  # EPIPE, ECONNRESET: it died since the last request
            self._waiting.pop(tag, None)
            raise SpawnerError("gone", f"the spawner exited ({e.strerror})") from e
        reply, fds = await answer
        if not reply.get("ok"):
            for fd in fds:
                os.close(fd)
            raise SpawnerError(reply.get("kind", "error"), reply.get("error", "spawner error"))
        return reply, fds

    async def _send(self, frame: bytes) -> None:
        async with self._send_lock:
            await asyncio.get_running_loop().sock_sendall(self._sock, frame)

    def _listen(self) -> None:
        if not self._listening and self._gone is None:
            asyncio.get_running_loop().add_reader(self._sock.fileno(), self._on_readable)
            self._listening = True

    def _on_readable(self) -> None:
        """Read what the spawner sent and answer the requests it replies to."""
        try:
            data, fds, _flags, _addr = socket.recv_fds(self._sock, 65536, 16)
        except BlockingIOError:
            return
        except OSError as e:  # ECONNRESET: it died with our requests unread
            self._end(f"the spawner exited ({e.strerror})")
            return
        self._fds += fds
        if not data:
            self._end("the spawner exited")
            return
        self._reader.feed(data)
        for message, _blob, _raw in self._reader.frames():
            count = message.get("fds", 0)
            count = count if isinstance(count, int) and 0 <= count <= len(self._fds) else 0
            mine, self._fds = self._fds[:count], self._fds[count:]
            answer, request = self._waiting.pop(message.get("tag"), (None, {}))
            if answer is not None and not answer.done():
                answer.set_result((message, mine))
                continue
            for fd in mine:  # its asker gave up (cancelled)
                os.close(fd)
            if request.get("op") == "spawn" and message.get("ok"):  # nobody has that kernel
                self._in_background(self.request({"op": "destroy", "id": request["id"]}))

    def _in_background(self, coro: Coroutine[object, object, object]) -> None:
        async def quietly() -> None:
            with contextlib.suppress(SpawnerError):
                await coro

        task = asyncio.get_running_loop().create_task(quietly())
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    def _end(self, why: str) -> None:
        """The connection is over: every request waiting is told so."""
        self._gone = why
        if self._listening:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._listening = False
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        waiting, self._waiting = self._waiting, {}
        for answer, _request in waiting.values():
            if not answer.done():
                answer.set_exception(SpawnerError("gone", why))

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

    async def adopt(self) -> list[tuple[str, int, socket.socket]]:
        """The kernels the spawner kept from an earlier server: (id, pid, the host's
        end of its socket) each."""
        adopted: list[tuple[str, int, socket.socket]] = []
        while True:
            reply, fds = await self.request({"op": "adopt", "offset": len(adopted)})
            kernels = reply.get("kernels")
            if not isinstance(kernels, list) or len(fds) != len(kernels):
                for fd in fds:
                    os.close(fd)
                raise SpawnerError("bad-reply", "the spawner's adopt reply does not add up")
            for kernel, fd in zip(kernels, fds, strict=True):
                adopted.append((kernel["id"], kernel["pid"], socket.socket(fileno=fd)))
            if not reply.get("more") or not kernels:
                return adopted

    async def close(self, keep_kernels: bool = False) -> None:
        """Close the connection. Unless `keep_kernels`, the spawner is told to shut
        down (it destroys every kernel and exits, and is waited for; a spawner that
        is a service of its own stays); with it, a spawner started to keep them
        (`start`: listen, keep_for) waits for the next server."""
        self._unwatch()
        exits = not keep_kernels
        if not keep_kernels and self._gone is None:
            with contextlib.suppress(SpawnerError, OSError):
                reply, _ = await self.request({"op": "shutdown"})
                exits = reply.get("exits") is not False  # a service stays
        self._end("the spawner was closed")
        self._sock.close()
        if exits:
            await self.wait_exited()
        os.close(self._pidfd)

    async def wait_exited(self) -> None:
        """Return once the spawner process has exited (and is reaped, if ours)."""
        if self.proc is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.proc.wait)
            return
        loop = asyncio.get_running_loop()
        while not self.has_exited():
            exited = loop.create_future()
            loop.add_reader(self._pidfd, exited.set_result, None)
            try:
                await exited
            finally:
                loop.remove_reader(self._pidfd)

    async def _hello(self) -> dict:
        """The spawner's first message, before any request: ready, or why not."""
        loop = asyncio.get_running_loop()
        while True:
            frames = self._reader.frames()
            if frames:
                return frames[0][0]
            ready = loop.create_future()
            loop.add_reader(self._sock.fileno(), ready.set_result, None)
            try:
                await ready
            finally:
                loop.remove_reader(self._sock.fileno())
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                raise SpawnerError("gone", f"the spawner exited ({e.strerror})") from e
            if not data:
                raise SpawnerError("gone", "the spawner exited")
            self._reader.feed(data)
