"""The server's kernels: who owns them, their session tokens, and the v2 run state.

Kernels are processes, so this registry lives in memory. Each kernel belongs to
the access key that created it and is found by (access key, client session
token) for get-or-create; a kernel id from another key is answered like an
unknown one (404). The concurrency count of a key is the number of its live
kernels, so reusing a session never counts twice (spec §9, counter drift).

`Session.execute` implements the implicit v2 run model (spec §6.2): one run at a
time; a call while a run is active continues it (its `code` is ignored), or
answers the pending `input()` with it; every call holds up to `hold` seconds.
The explicit `runId` model (§6.3) rides on the same state: `continue` and
`input` modes name what the implicit model infers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field

from sandbox import languages
from sandbox.kernel import Kernel, KernelGone, RunResult
from sandbox.spawner import SpawnerClient, SpawnerError
from sandbox.spec import KernelSpec

from .errors import Problem, bad_params

log = logging.getLogger("sandbox.server")

IDLE, RUNNING, WAITING, TIMED_OUT = "idle", "running", "waiting-input", "exec-timeout"
SWEEP_INTERVAL = 0.5  # seconds between checks for runs past their exec timeout


def resolve_lang(lang: str) -> languages.Language:
    """Resolve an alias (spec §8.2), or raise image-not-found naming what exists;
    instance-not-available when the runtime is not installed on this host."""
    row = languages.resolve(lang)
    if row is None:
        available = ", ".join(languages.names())
        raise Problem("image-not-found", f"unknown lang {lang!r}; available: {available}")
    missing = row.missing()
    if missing:
        raise Problem(
            "instance-not-available",
            f"the {row.name} runtime is not installed on this host ({', '.join(missing)} "
            f"not found); install it with: apt-get install {row.packages}",
        )
    return row


@dataclass
class Session:
    """One kernel as the API sees it."""

    id: str
    access_key: str
    token: str
    lang: str
    spec: KernelSpec
    exec_timeout_ms: int
    kernel: Kernel
    created: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    queries: int = 0
    state: str = IDLE
    run_id: str | None = None
    cpu_ms_before_restart: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # exec timeout of the current run: seconds left when the clock last (re)started,
    # and when that was; the clock stops while the program waits for input()
    run_budget: float = 0.0
    run_clock: float | None = None

    @property
    def language(self) -> languages.Language:
        row = languages.resolve(self.lang)
        assert row is not None, self.lang  # sessions are made with canonical names
        return row

    def touch(self) -> None:
        self.queries += 1
        self.last_used = time.monotonic()

    def remaining(self) -> float:
        """Seconds left of the current run's exec timeout."""
        if self.run_clock is None:
            return self.run_budget
        return self.run_budget - (time.monotonic() - self.run_clock)

    def overdue(self) -> bool:
        return self.state == RUNNING and self.remaining() <= 0

    def _start_run(self, run_id: str | None) -> None:
        self.run_id = run_id or secrets.token_hex(8)
        self.run_budget = self.exec_timeout_ms / 1000
        self.run_clock = time.monotonic()

    async def execute(
        self, mode: str, code: str, options: dict, run_id: str | None, hold: float
    ) -> tuple[RunResult, str | None]:
        """One execute call of the v2/v3 model. Returns the result and the run id."""
        async with self.lock:
            if mode == "continue" and self.state == IDLE:
                raise bad_params("mode: no run to continue")
            if mode == "input" and self.state != WAITING:
                raise bad_params("mode: the run is not waiting for input")
            if self.state == TIMED_OUT:
                raise Problem("kernel-not-found", "its run exceeded the exec timeout")
            if self.state == WAITING:  # the clock runs again from the moment input arrives
                self.run_clock = time.monotonic()
            elif self.state == IDLE:
                self._start_run(run_id)
            hold = max(0.0, min(hold, self.remaining()))
            if self.state == IDLE and mode == "batch":
                result = await self.kernel.start(self.language.batch_op(options), hold)
            elif self.state == IDLE:
                result = await self.kernel.start(self.language.query_op(code), hold)
            elif self.state == WAITING:
                result = await self.kernel.feed_input(code, hold)
            else:  # RUNNING: v2 ignores the code of a continuation
                result = await self.kernel.collect(hold)
            self.state = {"finished": IDLE, "waiting-input": WAITING}.get(result.status, RUNNING)
            if self.state == WAITING:
                self.run_budget, self.run_clock = self.remaining(), None
            elif self.overdue():
                self.state = TIMED_OUT
                result = RunResult("exec-timeout", console=result.console)
            return result, self.run_id


class Registry:
    """All live sessions, and the spawner that makes their kernels."""

    def __init__(self, spawner: SpawnerClient) -> None:
        self.spawner = spawner
        self.sessions: dict[str, Session] = {}
        self.by_token: dict[tuple[str, str], str] = {}
        self._create_lock = asyncio.Lock()
        self._watchers: set[asyncio.Task] = set()
        self._sweeper: asyncio.Task | None = None

    def count_for(self, access_key: str) -> int:
        return sum(1 for s in self.sessions.values() if s.access_key == access_key)

    def get(self, access_key: str, kernel_id: str) -> Session:
        session = self.sessions.get(kernel_id)
        if session is None or session.access_key != access_key:
            raise Problem("kernel-not-found")
        return session

    async def get_or_create(
        self,
        access_key: str,
        token: str,
        lang: str,
        spec: KernelSpec,
        exec_timeout_ms: int,
        concurrency_limit: int,
    ) -> tuple[Session, bool]:
        async with self._create_lock:
            existing = self.by_token.get((access_key, token))
            if existing is not None and existing in self.sessions:
                session = self.sessions[existing]
                if session.lang != lang:
                    raise Problem("kernel-already-exists", f"session {token!r} runs {session.lang}")
                return session, False
            if self.count_for(access_key) >= concurrency_limit:
                raise Problem("quota-exceeded", f"at most {concurrency_limit} kernels per key")
            kernel_id = secrets.token_urlsafe(16)
            kernel = await self._start(kernel_id, spec, keep_work=False)
            session = Session(kernel_id, access_key, token, lang, spec, exec_timeout_ms, kernel)
            self.sessions[kernel_id] = session
            self.by_token[(access_key, token)] = kernel_id
            self._watch(session)
            if self._sweeper is None:
                self._sweeper = asyncio.create_task(self._sweep())
            log.info("kernel created id=%s key=%s lang=%s", kernel_id, access_key, lang)
            return session, True

    async def restart(self, session: Session) -> None:
        """Same id, same /home/work, fresh interpreter; CPU credit carries over."""
        async with session.lock:
            stats = await self._stats(session)
            session.cpu_ms_before_restart += stats.get("cpu_usec", 0) / 1000
            await session.kernel.close()
            try:
                await self.spawner.destroy(session.id, keep_work=True)
                session.kernel = await self._start(session.id, session.spec, keep_work=True)
            except (SpawnerError, KernelGone) as e:
                await self.destroy(session, reason="restart failed")
                raise Problem("kernel-restart-failed", str(e)) from e
            session.state, session.run_id = IDLE, None
            session.last_used = time.monotonic()
            self._watch(session)

    async def destroy(self, session: Session, reason: str = "destroyed by the client") -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        self.by_token.pop((session.access_key, session.token), None)
        await session.kernel.close()
        with contextlib.suppress(SpawnerError):
            await self.spawner.destroy(session.id)
        log.info("kernel destroyed id=%s reason=%s", session.id, reason)

    async def info(self, session: Session) -> dict:
        """The flat DOC-v2 info object (spec §5.2), in its units."""
        stats = await self._stats(session)
        now = time.monotonic()
        timeout_ms = session.exec_timeout_ms
        return {
            "lang": session.lang,
            "age": round((now - session.created) * 1000, 1),
            "queryTimeout": timeout_ms,
            "idleTimeout": -1,
            "memoryLimit": (session.spec.memory_bytes or 0) // 1024,
            "maxCpuCredit": timeout_ms,
            "numQueriesExecuted": session.queries,
            "idle": round((now - session.last_used) * 1000, 1),
            "memoryUsed": stats.get("memory_peak", 0) // 1024,
            "cpuCreditUsed": round(
                session.cpu_ms_before_restart + stats.get("cpu_usec", 0) / 1000, 1
            ),
        }

    async def _sweep(self) -> None:
        """Destroy kernels whose run is past its exec timeout while nobody polls it
        (a call in progress holds the lock and reports exec-timeout itself)."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            for session in list(self.sessions.values()):
                if session.overdue() and not session.lock.locked():
                    await self.destroy(session, reason="exec timeout")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for session in list(self.sessions.values()):
            await self.destroy(session, reason="server shutdown")

    async def _start(self, kernel_id: str, spec: KernelSpec, keep_work: bool) -> Kernel:
        try:
            pid, sock = await self.spawner.spawn(kernel_id, spec, keep_work=keep_work)
        except SpawnerError as e:
            if e.kind == "bad-request":
                raise bad_params(str(e)) from e
            raise Problem("kernel-creation-failed", str(e)) from e
        try:
            kernel = await Kernel.connect(kernel_id, pid, sock)
            await kernel.wait_ready()
        except KernelGone as e:
            with contextlib.suppress(SpawnerError):
                await self.spawner.destroy(kernel_id)
            raise Problem("kernel-creation-failed", str(e)) from e
        return kernel

    async def _stats(self, session: Session) -> dict:
        try:
            return await self.spawner.stats(session.id)
        except SpawnerError:
            return {}

    def _watch(self, session: Session) -> None:
        """When a kernel's socket closes on its own (crash, OOM), clean it up."""
        kernel = session.kernel

        async def watch() -> None:
            await kernel.wait_gone()
            # The lock lets a waiting execute call collect the final events first;
            # a restart holds it too and replaces the kernel, so check after taking it.
            async with session.lock:
                if self.sessions.get(session.id) is session and session.kernel is kernel:
                    await self.destroy(session, reason="the kernel exited")

        task = asyncio.create_task(watch())
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)
