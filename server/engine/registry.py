"""The server's kernels: who owns them, their session tokens, and their lifetimes.

Kernels are processes, so this registry lives in memory. Each kernel belongs to
the access key that created it and is found by (access key, client session
token) for get-or-create; a kernel id from another key is answered like an
unknown one (404). The concurrency count of a key is the number of its live
kernels, so reusing a session never counts twice (spec §9, counter drift).

Each live kernel is a `Session` (session.py: its run state).

Lifetimes (spec §5.10): a reaper task destroys kernels whose run is past its
exec timeout while nobody polls, kernels idle past their idle timeout, and
(every `cpu_check_seconds`) kernels that used up their CPU credit. A kernel
whose runner the OOM killer took is restarted (same id, files kept, state
lost) and the run's last response says so; one that crashed otherwise, or that
the host ended (a malformed frame, a flood past its bound, an op it did not
read: `Kernel.end_reason`), is destroyed. Why a kernel went is kept for a
while, so a GET on it answers 404 with the reason instead of a bare "No such
kernel"; a call that finds its kernel dead before that waits for its watcher
and answers the same, never a 500 for a socket that closed under it.

What the server holds for kernels' events is bounded per kernel and in total
(`KernelBounds`, `HeldBytes`: kernel_pause_bytes, kernel_held_bytes,
server_held_bytes).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass

from sandbox import languages
from sandbox.held import HeldBytes
from sandbox.kernel import Kernel, KernelGone
from sandbox.kernel_snapshot import Snapshot
from sandbox.spawner_client import SpawnerClient, SpawnerError
from sandbox.spec import KernelSpec

from . import kept_kernels
from .errors import (
    EngineError,
    InvalidRequest,
    KernelNotFound,
    KernelStartFailed,
    LanguageMismatch,
    NoCapacity,
    QuotaExceeded,
    ServiceUnavailable,
    UnknownLanguage,
)
from .kernel_records import KernelRecords
from .lifecycle import RESTARTED, STARTED, TERMINATED, reason_slug
from .limits import KernelLimits
from .pool import WarmPool
from .session import IDLE, Session
from .settings import EngineSettings
from .tally import Tally

log = logging.getLogger("sandbox.server")

SWEEP_INTERVAL = 0.5  # seconds between checks of the exec and idle timeouts
DESTROY_TIMEOUT = 15.0  # a destroy that takes longer is logged and left to the spawner
OBITUARIES = 10_000  # why-it-died records kept for GETs on dead kernels


def start_error(error: SpawnerError, context: str = "", restart: bool = False) -> EngineError:
    """What a failed spawner start means: the kernel did not start, unless the
    spawner itself is gone, since then no kernel can start until the server is
    restarted."""
    detail = f"{context}{error}"
    if error.kind == "gone":
        log.critical("the spawner is gone: no kernel can start until the server restarts")
        return ServiceUnavailable(f"{detail}; the server must be restarted")
    return KernelStartFailed(detail, restart=restart)


def resolve_lang(lang: str) -> languages.Language:
    """Resolve an alias (spec §8.2), naming what exists when it is unknown; NoCapacity
    when the runtime is not installed on this host."""
    row = languages.resolve(lang)
    if row is None:
        available = ", ".join(languages.names())
        raise UnknownLanguage(f"unknown lang {lang!r}; available: {available}")
    missing = row.missing()
    if missing:
        raise NoCapacity(
            f"the {row.name} runtime is not installed on this host ({', '.join(missing)} "
            f"not found); install it with: apt-get install {row.packages}",
        )
    return row


@dataclass(frozen=True)
class KernelInfo:
    """What a kernel has used and may use, for a face to show in its units."""

    lang: str
    limits: KernelLimits
    age_ms: float
    idle_ms: float
    queries: int
    memory_peak_bytes: int
    memory_current_bytes: int
    cpu_used_ms: float


def _ended(session: Session, reason: str) -> dict[str, object]:
    """A kernel's end, as log fields."""
    return {"event": TERMINATED, "kernel": session.id, "key": session.access_key,
            "reason": reason_slug(reason), "detail": reason}  # fmt: skip


class Registry:
    """All live sessions, and the spawner that makes their kernels."""

    def __init__(
        self,
        spawner: SpawnerClient,
        settings: EngineSettings,
        records: KernelRecords | None = None,
    ) -> None:
        self.spawner = spawner
        self.settings = settings
        self.records = records  # for the next server (kept_kernels.py); None: not kept
        limits = settings.limits
        self.sessions: dict[str, Session] = {}
        self.by_token: dict[tuple[str, str], str] = {}
        self.per_key: collections.Counter[str] = collections.Counter()  # live sessions
        self.obituaries: collections.OrderedDict[str, tuple[str, str]] = collections.OrderedDict()
        # creates under way, by (key, token): a second create of the same waits for it
        self._creating: dict[tuple[str, str], asyncio.Future[None]] = {}
        self.borrowed = 0  # kernels counted by `counted`, not sessions
        self._watchers: set[asyncio.Task] = set()
        self._reaper: asyncio.Task | None = None
        self.held = HeldBytes(limits.server_held_bytes)  # for every kernel together
        self.bounds = limits.kernel_bounds()
        self.pool = WarmPool(settings, spawner, self._start_fresh)
        self.tally = Tally()

    def start(self) -> None:
        """Begin filling the warm pool and watching the spawner (needs the running
        event loop)."""
        self.pool.start()
        self.spawner.when_exited(self._on_spawner_exit)

    def _on_spawner_exit(self) -> None:
        self._in_background(self._spawner_died())

    def _in_background(self, coro: Coroutine[object, object, None]) -> asyncio.Task:
        """Run coro as a task, referenced until it is done (the loop keeps only a
        weak reference)."""
        task = asyncio.create_task(coro)
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)
        return task

    def mounting(self, folder_id: str) -> list[str]:
        """Ids of the live kernels that mount a folder."""
        return [s.id for s in self.sessions.values() if folder_id in s.mounts.values()]

    def count_for(self, access_key: str) -> int:
        """Live sessions of the key: counted as they come and go, since a scan of every
        session on each create grows with the host's kernels."""
        return self.per_key[access_key]

    @contextlib.asynccontextmanager
    async def counted(self, access_key: str, concurrency_limit: int) -> AsyncIterator[None]:
        """Count a kernel that is no session (a folder operation's) against the key's
        concurrency (QuotaExceeded) and max_kernels (NoCapacity) while the block runs,
        as a create is."""
        refusal = f"at most {concurrency_limit} kernels per key, folder operations included"
        with self._reserved(access_key, concurrency_limit, refusal):
            yield

    @contextlib.contextmanager
    def _reserved(
        self, access_key: str, concurrency_limit: int, refusal: str, tallied: bool = False
    ) -> Iterator[None]:
        """A kernel that is not a session yet (or never becomes one), counted against
        the key and max_kernels while the block runs; QuotaExceeded(`refusal`),
        counted in the tally if `tallied`, when the key has its limit already."""
        if self.count_for(access_key) >= concurrency_limit:
            if tallied:
                self.tally.refused["key-kernels"] += 1
            raise QuotaExceeded(refusal)
        self._check_capacity()
        self.per_key[access_key] += 1
        self.borrowed += 1
        try:
            yield
        finally:
            self.borrowed -= 1
            self.per_key[access_key] -= 1
            if not self.per_key[access_key]:
                del self.per_key[access_key]

    def _check_capacity(self) -> None:
        most = self.settings.limits.max_kernels
        if len(self.sessions) + self.borrowed >= most:
            self.tally.refused["max-kernels"] += 1
            raise NoCapacity(f"this server runs its maximum of {most} kernels")

    def get(self, access_key: str, kernel_id: str) -> Session:
        """The key's kernel; KernelNotFound for an unknown or foreign id alike, with
        why it went if it was the key's."""
        session = self.sessions.get(kernel_id)
        if session is None or session.access_key != access_key:
            owner, reason = self.obituaries.get(kernel_id, ("", ""))
            raise KernelNotFound(reason if owner == access_key else "")
        return session

    async def get_or_create(
        self,
        access_key: str,
        token: str,
        lang: str,
        spec: KernelSpec,
        limits: KernelLimits,
        concurrency_limit: int,
        mounts: dict[str, str] | None = None,
        kept: bool = True,
    ) -> tuple[Session, bool]:
        while (access_key, token) in self._creating:  # the same session, asked twice
            await asyncio.shield(self._creating[(access_key, token)])
        existing = self.by_token.get((access_key, token))
        if existing is not None and existing in self.sessions:
            session = self.sessions[existing]
            if session.lang != lang:
                raise LanguageMismatch(f"session {token!r} runs {session.lang}")
            return session, False
        # Counted against the key and max_kernels now, started outside any lock: a
        # class's creates overlap (the spawner starts kernels side by side).
        refusal = f"at most {concurrency_limit} kernels per key"
        with self._reserved(access_key, concurrency_limit, refusal, tallied=True):
            created = asyncio.get_running_loop().create_future()
            self._creating[(access_key, token)] = created
            try:
                began = time.monotonic()
                kernel_id, kernel, warm = await self.pool.kernel(lang, spec)
            finally:
                del self._creating[(access_key, token)]
                created.set_result(None)
        session = Session(
            kernel_id, access_key, token, lang, spec, limits, kernel, self.spawner,
            mounts=dict(mounts or {}), kept=kept,
        )  # fmt: skip
        self.tally.created(lang, warm, time.monotonic() - began)
        self.add(session)
        session.lifecycle.publish(STARTED, "created")
        log.info("kernel created", extra={
            "event": STARTED, "kernel": kernel_id, "key": access_key, "lang": lang,
            "warm": warm,
        })  # fmt: skip
        return session, True

    def add(self, session: Session) -> None:
        """Make a live session known (a create's, or one the next server adopted):
        counted, watched, reaped, recorded."""
        self.sessions[session.id] = session
        self.by_token[(session.access_key, session.token)] = session.id
        self.per_key[session.access_key] += 1
        self._watch(session)
        if self.records is not None and session.kept:
            session.on_state_change = self.record
            self.record(session)
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap())

    def record(self, session: Session, snapshot: Snapshot | None = None) -> None:
        """Write the session's record for the next server (kept_kernels.py)."""
        if self.records is not None and session.kept:
            self.records.save(session.id, kept_kernels.record(session, snapshot))
            session.recorded_state = session.state

    async def restart(self, session: Session) -> None:
        """Same id, same /home/work, fresh interpreter; CPU credit carries over."""
        async with session.lock:
            await self._restart_locked(session, "restarted by the client")

    async def _restart_locked(self, session: Session, why: str) -> None:
        session.cpu_ms_before_restart = await session.cpu_ms()
        await session.kernel.close()
        try:
            self._count_pids_hits(await self.spawner.destroy(session.id, keep_work=True))
            session.kernel = await self._start(session.id, session.spec, keep_work=True)
        except (SpawnerError, KernelGone, EngineError) as e:
            await self.destroy(session, reason="its restart failed")
            if isinstance(e, SpawnerError):
                raise start_error(e, restart=True) from e
            if isinstance(e, ServiceUnavailable):
                raise
            raise KernelStartFailed(getattr(e, "detail", None) or str(e), restart=True) from e
        session.state, session.run_id = IDLE, None
        session.oom_kills_seen, session.oom_restart_pending = 0, False
        session.last_used = time.monotonic()
        self._watch(session)
        session.lifecycle.publish(RESTARTED, why)
        self.tally.restarts[reason_slug(why)] += 1

    def _count_pids_hits(self, hits: int) -> None:
        if hits:
            self.tally.limit_hits["pids"] += hits

    async def destroy(self, session: Session, reason: str = "destroyed by the client") -> bool:
        """Forget the kernel and have the spawner free it. False when a process of it
        would not die (the spawner frees the rest once it does): the kernel is gone
        from the engine's view, but a face may say its destruction failed."""
        if not self._forget(session, reason):
            return True
        await session.kernel.close()
        try:
            self._count_pids_hits(await self.spawner.destroy(session.id))
        except SpawnerError as e:
            if e.kind == "undead":
                log.warning("kernel destroyed, but a process of it would not die",
                            extra={**_ended(session, reason), "error": str(e)})  # fmt: skip
                return False
        log.info("kernel destroyed", extra=_ended(session, reason))
        return True

    async def info(self, session: Session) -> KernelInfo:
        await session.check_alive()
        stats = await session.stats()
        now = time.monotonic()
        return KernelInfo(
            lang=session.lang,
            limits=session.limits,
            age_ms=(now - session.created) * 1000,
            idle_ms=(now - session.last_used) * 1000,
            queries=session.queries,
            memory_peak_bytes=stats.get("memory_peak", 0),
            memory_current_bytes=stats.get("memory_current", 0),
            cpu_used_ms=session.cpu_ms_before_restart + stats.get("cpu_usec", 0) / 1000,
        )

    async def _reap(self) -> None:
        """Destroy kernels past their limits. Never dies: one kernel's trouble is
        logged and the others are still looked after."""
        every = self.settings.limits.cpu_check_seconds
        next_cpu_check = time.monotonic() + every
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = time.monotonic()
            cpu_usec: dict[str, int] | None = None  # every kernel's, in one spawner request
            if now >= next_cpu_check and self.sessions:
                next_cpu_check = now + every
                try:
                    cpu_usec = await self.spawner.cpu_usage()
                except SpawnerError:
                    log.exception("reaper: reading CPU time")
            for session in list(self.sessions.values()):
                try:
                    reason = self._past_a_limit(session, now, cpu_usec)
                    if reason:
                        await asyncio.wait_for(self.destroy(session, reason), DESTROY_TIMEOUT)
                except Exception:  # noqa: BLE001 - the reaper must outlive any one kernel
                    log.exception("reaper: kernel %s", session.id)

    def _forget(self, session: Session, reason: str) -> bool:
        """Drop the session from the registry, keeping why it went for later 404s.
        False if it was gone already."""
        if self.sessions.pop(session.id, None) is None:
            return False
        if self.records is not None and session.kept:
            self.records.remove(session.id)
        self.by_token.pop((session.access_key, session.token), None)
        self.per_key[session.access_key] -= 1
        if not self.per_key[session.access_key]:
            del self.per_key[session.access_key]
        self.obituaries[session.id] = (session.access_key, reason)
        session.ended = reason
        session.lifecycle.publish(TERMINATED, reason)
        self.tally.ends[reason_slug(reason)] += 1
        if reason_slug(reason) == "cpu-credit-exhausted":
            self.tally.limit_hits["cpu-credit"] += 1
        while len(self.obituaries) > OBITUARIES:
            self.obituaries.popitem(last=False)
        return True

    async def _spawner_died(self) -> None:
        """The spawner was killed: its kernels are orphans that only their sockets
        still tie to us. Close those so that every kernel ends itself (pid 1 exits
        when its host socket closes); a new server's spawner sweeps their cgroups."""
        status = self.spawner.returncode
        # 0: it was told to stop (SIGTERM), as a service manager stopping the whole
        # server does; anything else is a crash or a kill.
        log.log(
            logging.WARNING if status == 0 else logging.CRITICAL,
            "the spawner exited (status %s): no kernel can start until the server restarts",
            status,
        )
        if self._reaper is not None:
            self._reaper.cancel()
        await self.pool.close()
        for session in list(self.sessions.values()):
            self._forget(session, "the server's spawner died")
            await session.kernel.close()

    def _past_a_limit(self, session: Session, now: float, cpu_usec: dict[str, int] | None) -> str:
        """Why the kernel must go, or "". `cpu_usec` is every kernel's CPU time when
        this sweep checks CPU credit, else None."""
        limits = session.limits
        if session.overdue() and not session.lock.locked():
            return f"exec timeout: a run took longer than {limits.exec_timeout_ms / 1000:g} s"
        idle_ms = (now - session.last_used) * 1000
        if idle_ms > limits.idle_timeout_ms and not session.lock.locked():
            return f"idle timeout: no execute call for {limits.idle_timeout_ms / 1000:g} s"
        used_ms = None if cpu_usec is None else cpu_usec.get(session.id, 0) / 1000
        if used_ms is not None and session.cpu_ms_before_restart + used_ms > limits.cpu_credit_ms:
            return f"CPU credit used up: {limits.cpu_credit_ms / 1000:g} s of CPU time"
        return ""

    async def quiesce(self) -> None:
        """Stop the warm pool (its kernels destroyed) and the reaper: nothing but a
        client changes the sessions from now on (before a close or a hand-over)."""
        await self.pool.close()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper

    async def close(self) -> None:
        """Destroy every kernel left (handover.suspend_all has taken those that the
        next server adopts)."""
        await self.quiesce()
        for session in list(self.sessions.values()):
            await self.destroy(session, reason="server shutdown")

    def leave(self, session: Session) -> None:
        """Drop a session the next server takes over: not ended, so no obituary, no
        lifecycle event, and its record stays."""
        if session.watcher is not None:
            session.watcher.cancel()
        self.sessions.pop(session.id, None)
        self.by_token.pop((session.access_key, session.token), None)
        self.per_key[session.access_key] -= 1
        if not self.per_key[session.access_key]:
            del self.per_key[session.access_key]

    async def _start_fresh(self, kernel_id: str, spec: KernelSpec) -> Kernel:
        return await self._start(kernel_id, spec, keep_work=False)

    async def _start(self, kernel_id: str, spec: KernelSpec, keep_work: bool) -> Kernel:
        try:
            pid, sock = await self.spawner.spawn(kernel_id, spec, keep_work=keep_work)
        except SpawnerError as e:
            if e.kind == "bad-request":
                raise InvalidRequest(str(e)) from e
            raise start_error(e) from e
        try:
            kernel = await Kernel.connect(kernel_id, pid, sock, self.bounds, self.held)
            await kernel.wait_ready()
        except KernelGone as e:
            with contextlib.suppress(SpawnerError):
                await self.spawner.destroy(kernel_id)
            raise KernelStartFailed(str(e)) from e
        return kernel

    def _watch(self, session: Session) -> None:
        """When a kernel's socket closes on its own: restart it after an OOM kill of
        its runner, destroy it after any other death."""
        kernel = session.kernel

        async def watch() -> None:
            await kernel.wait_gone()
            # The lock lets a waiting execute call collect the final events (and
            # notice an OOM) first; a restart holds it too and replaces the kernel.
            async with session.lock:
                if self.sessions.get(session.id) is not session or session.kernel is not kernel:
                    return
                if kernel.end_reason:  # the host ended it (the protocol, a bound)
                    await self.destroy(session, reason=kernel.end_reason)
                    return
                if session.oom_restart_pending or await session.out_of_memory():
                    log.info("kernel ran out of memory: restarting", extra={
                        "event": RESTARTED, "kernel": session.id, "key": session.access_key,
                        "reason": "out-of-memory",
                    })  # fmt: skip
                    with contextlib.suppress(EngineError):
                        await self._restart_locked(session, "out of memory")
                    return
                status = kernel.exit_status
                await self.destroy(session, reason=f"the kernel exited (wait status {status})")

        session.watcher = self._in_background(watch())
