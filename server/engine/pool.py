"""The warm pool: kernels started ahead of demand, so that a create is an assignment.

Per language in `[pool] pool_languages`, kernels wait, started with the server's
default limits and no folders; as many again for one-shot jobs once the first job
of that language came, if jobs' kernels differ (a python3 job's comes from the
zygote without the pre-imported modules: KernelSpec.preimported). A create that
mounts no folder takes one (popped, so no kernel ever reaches two users); if it
asked for another memory limit, the spawner changes the kernel's cgroup first, and
where that cannot be done (the none layout) the kernel goes back and a cold one is
started. A waiting kernel has run no user code, so it holds nothing of anyone.

How many wait follows demand. A class that presses Run together asks for as many
kernels within a second as it has students, and a cold start costs about ten times
the CPU of a take: on two cores, 200 cold starts take two seconds whatever their
order. So each kind of kernel counts its burst: the kernels given out since its
pool was last at its size that are still alive (creates the refill keeps up with
are bursts of one; a class is its size; a create-destroy loop or a stream of
short jobs holds a few at once). The pool then holds as many as the largest
burst of the last pool_shrink_seconds: pool_size at rest, up to pool_max after a
class came (or after an admin said one would: `expect`); when the burst is that
old, the surplus is destroyed. A background task starts kernels one at a time,
round the kinds, and creates go between them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from sandbox import languages
from sandbox.kernel import Kernel
from sandbox.spawner_client import SpawnerClient, SpawnerError
from sandbox.spec import Bind, KernelSpec

from .errors import EngineError
from .settings import EngineSettings, PoolSettings

log = logging.getLogger("sandbox.server")

RETRY_SECONDS = 5.0  # after a failed start, before the pool tries that language again

Starter = Callable[[str, KernelSpec], Awaitable[Kernel]]
Ready = collections.deque[tuple[str, Kernel]]


def kernel_spec(
    settings: EngineSettings,
    language: languages.Language,
    memory_bytes: int,
    binds: tuple[Bind, ...] = (),
    job: bool = False,
) -> KernelSpec:
    """The spec of a kernel of `language` (for a one-shot `job`, or not): the one
    place that builds it, so that a pooled kernel and a cold one are alike."""
    preimported = language.preimports and (settings.sandbox.preimport_jobs or not job)
    return settings.sandbox.kernel_spec(
        memory_bytes, binds, env=dict(language.env), preimported=preimported
    )


class Given(Protocol):
    """A kernel the pool gave out, as its demand sees it."""

    @property
    def dead(self) -> bool: ...


class Demand:
    """The largest burst of one kind within the last `memory` seconds (a sliding-
    window maximum): the pool shrinks when a burst is that old, back to the largest
    one since. A burst is the kernels given out since the pool was last at its size
    that are still alive, at most `most` (more would change nothing): a class keeps
    its kernels, a client that creates and destroys in a loop, or a stream of short
    jobs, holds few at once however many it made."""

    def __init__(self, memory: float, most: int) -> None:
        self.memory = memory
        self.most = most
        self._burst: list[Given] = []
        # (when, burst size): each burst that no later one is as large as
        self._peaks: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, now: float, kernel: Given, at_rest: bool) -> None:
        """A kernel of this kind was given out, warm or cold; `at_rest`: the pool held
        all it should when it was asked for, so a new burst begins."""
        if at_rest:
            self._burst = []
        self._burst = [k for k in self._burst if not k.dead]
        if len(self._burst) < self.most:
            self._burst.append(kernel)
        self._push(now, len(self._burst))

    def expect(self, now: float, size: int) -> None:
        """A burst of `size` is expected (a class about to begin): counted as if it
        had come now."""
        self._push(now, min(size, self.most))

    def _push(self, now: float, size: int) -> None:
        """A burst of `size` at `now`: the earlier ones no larger can never be the
        peak again."""
        while self._peaks and self._peaks[-1][1] <= size:
            self._peaks.pop()
        self._peaks.append((now, size))

    def peak(self, now: float) -> int:
        """The largest burst within the last `memory` seconds."""
        while self._peaks and self._peaks[0][0] <= now - self.memory:
            self._peaks.popleft()
        return self._peaks[0][1] if self._peaks else 0

    def falls_at(self) -> float | None:
        """When the largest burst becomes too old to count (the pool may shrink)."""
        return self._peaks[0][0] + self.memory if self._peaks else None


@dataclasses.dataclass
class Kind:
    """One kind of pooled kernel: a language's sessions', or its one-shot jobs'."""

    lang: str
    spec: KernelSpec
    ready: Ready
    demand: Demand

    def wanted(self, settings: PoolSettings, now: float) -> int:
        """How many of it should wait now."""
        return settings.kept(self.demand.peak(now))


class WarmPool:
    """Ready kernels per language, refilled in the background."""

    def __init__(self, settings: EngineSettings, spawner: SpawnerClient, start: Starter) -> None:
        self.settings = settings.pool
        self.spawner = spawner
        self._start = start
        # Each pooled language's sessions' kernels: what a create must match.
        self.kinds: dict[str, Kind] = {}
        for name in settings.pool.pool_languages:
            row = _pooled_language(name)
            missing = row.missing()
            if missing:
                log.warning("warm pool: no %s kernels: %s is not installed", row.name, missing)
            else:
                memory = settings.limits.default_memory_bytes
                self.kinds[row.name] = self._kind(row.name, kernel_spec(settings, row, memory))
        # One-shot jobs' kernels of a pooled language, when they differ from its
        # sessions' (KernelSpec.preimported): kept from the first job on.
        self.job_kinds: dict[str, Kind] = {}
        self._wanted = asyncio.Event()
        self._task: asyncio.Task | None = None

    @property
    def ready(self) -> dict[str, Ready]:
        """Each pooled language's sessions' kernels waiting (as the faces show them)."""
        return {lang: kind.ready for lang, kind in self.kinds.items()}

    def sizes(self) -> dict[str, int]:
        """How many of each pooled language's sessions' kernels the pool keeps now:
        pool_size, or more after a burst (none when the pool is off)."""
        now = time.monotonic()
        return {lang: kind.wanted(self.settings, now) for lang, kind in self.kinds.items()}

    def expect(self, lang: str, size: int) -> int:
        """Keep `size` of `lang`'s sessions' kernels ready for the next
        pool_shrink_seconds, as if a burst of that size had just come (an admin,
        before a class begins); how many it will keep (at most pool_max, at least
        pool_size). KeyError if `lang` is not pooled."""
        kind = self.kinds[lang]
        kind.demand.expect(time.monotonic(), size)
        self._wanted.set()
        return self.sizes()[lang]

    def start(self) -> None:
        if self.settings.pool_size > 0 and self.kinds and self._task is None:
            self._wanted.set()
            self._task = asyncio.create_task(self._refill())

    async def kernel(self, lang: str, spec: KernelSpec) -> tuple[str, Kernel, bool]:
        """A kernel for a create of `lang` with `spec`: a ready one if the pool has
        one that fits (only the memory limit may differ from the pool's spec), else
        one started now; its id, and whether it was ready."""
        kind = self._kind_for(lang, spec)
        if kind is None or self.spawner.has_exited():
            # not pooled; or the spawner died, and its kernels with it
            kernel_id = secrets.token_urlsafe(16)
            return kernel_id, await self._start(kernel_id, spec), False
        at_rest = len(kind.ready) >= kind.wanted(self.settings, time.monotonic())
        self._wanted.set()
        warm = await self._take(kind, spec)
        if warm is not None:
            kernel_id, kernel = warm
        else:
            kernel_id = secrets.token_urlsafe(16)
            kernel = await self._start(kernel_id, spec)
        kind.demand.add(time.monotonic(), kernel, at_rest)
        self._wanted.set()  # the pool's size may have grown
        return kernel_id, kernel, warm is not None

    async def _take(self, kind: Kind, spec: KernelSpec) -> tuple[str, Kernel] | None:
        """A ready kernel of `kind` with `spec`'s memory limit, or None."""
        while kind.ready:
            kernel_id, kernel = kind.ready.popleft()
            if kernel.dead:
                await self._discard(kernel_id, kernel)
                continue
            if spec.memory_bytes != kind.spec.memory_bytes:
                try:
                    await self.spawner.set_limits(
                        kernel_id, spec.memory_bytes, spec.pids, spec.cpu_quota
                    )
                except SpawnerError as e:
                    log.info("warm kernel %s cannot take the limits asked for: %s", kernel_id, e)
                    kind.ready.appendleft((kernel_id, kernel))
                    return None
            return kernel_id, kernel
        return None

    def _kind(self, lang: str, spec: KernelSpec) -> Kind:
        demand = Demand(self.settings.pool_shrink_seconds, self.settings.pool_max)
        return Kind(lang, spec, collections.deque(), demand)

    def _kind_for(self, lang: str, spec: KernelSpec) -> Kind | None:
        """The kind of pooled kernel that serves `spec`; None if `lang` is not pooled,
        or if `spec` asks for more than a memory limit of its own (folders, say). A
        language's first job of a kind of its own begins that kind (empty)."""
        kind = self.kinds.get(lang)
        if kind is not None and spec.preimported != kind.spec.preimported:
            if lang not in self.job_kinds:
                job_spec = dataclasses.replace(kind.spec, preimported=spec.preimported)
                self.job_kinds[lang] = self._kind(lang, job_spec)
            kind = self.job_kinds[lang]
        if kind is None:
            return None
        fits = dataclasses.replace(spec, memory_bytes=kind.spec.memory_bytes) == kind.spec
        return kind if fits else None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for kind in self._all_kinds():
            while kind.ready:
                await self._discard(*kind.ready.popleft())

    def _all_kinds(self) -> list[Kind]:
        return [*self.kinds.values(), *self.job_kinds.values()]

    async def _refill(self) -> None:
        """Keep every kind at the size its demand asks for: woken by each take, and
        when a burst becomes too old to count."""
        while True:
            falls = [t for kind in self._all_kinds() if (t := kind.demand.falls_at())]
            timeout = max(0.0, min(falls) - time.monotonic()) if falls else None
            # asyncio.timeout, not wait_for: 3.11's wait_for swallows a cancel that
            # comes as the event is set, and close() would wait for ever
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wanted.wait()
            self._wanted.clear()
            await self._resize()

    async def _resize(self) -> None:
        """Destroy what waits beyond each kind's size; start what is missing one
        kernel at a time, round the kinds (the spawner serves one request at a
        time; creates go between them)."""
        failed: set[int] = set()
        while True:
            now = time.monotonic()
            short = []
            for kind in self._all_kinds():
                wanted = kind.wanted(self.settings, now)
                while len(kind.ready) > wanted:
                    await self._discard(*kind.ready.pop())
                if len(kind.ready) < wanted and id(kind) not in failed:
                    short.append(kind)
            if not short:
                return
            for kind in short:
                kernel_id = secrets.token_urlsafe(16)
                try:
                    kind.ready.append((kernel_id, await self._start(kernel_id, kind.spec)))
                except EngineError as e:
                    log.warning("warm pool: a %s kernel did not start: %s", kind.lang, e)
                    failed.add(id(kind))
                    asyncio.get_running_loop().call_later(RETRY_SECONDS, self._wanted.set)

    async def _discard(self, kernel_id: str, kernel: Kernel) -> None:
        await kernel.close()
        with contextlib.suppress(SpawnerError):
            await self.spawner.destroy(kernel_id)


def _pooled_language(name: str) -> languages.Language:
    row = languages.resolve(name)
    if row is None:
        raise ValueError(f"pool_languages: unknown language {name!r}")
    return row
