"""The warm pool: kernels started ahead of demand, so that a create is an assignment.

Per language in `[pool] pool_languages`, `pool_size` kernels wait, started with the
server's default limits and no folders; as many again for one-shot jobs once the
first job of that language came, if jobs' kernels differ (a python3 job's comes
from the zygote without the pre-imported modules: KernelSpec.preimported). A
create that mounts no folder takes one (popped, so no kernel ever reaches two
users); if it asked for another memory limit, the spawner changes the kernel's
cgroup first, and where that cannot be done (the none layout) the kernel goes
back and a cold one is started. A background task starts a replacement after
each take. A waiting kernel has run no user code, so it holds nothing of anyone.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import secrets
from collections.abc import Awaitable, Callable

from sandbox import languages
from sandbox.kernel import Kernel
from sandbox.spawner_client import SpawnerClient, SpawnerError
from sandbox.spec import Bind, KernelSpec

from .errors import EngineError
from .settings import EngineSettings

log = logging.getLogger("sandbox.server")

RETRY_SECONDS = 5.0  # after a failed start, before the pool tries that language again

Starter = Callable[[str, KernelSpec], Awaitable[Kernel]]


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


class WarmPool:
    """Ready kernels per language, refilled in the background."""

    def __init__(self, settings: EngineSettings, spawner: SpawnerClient, start: Starter) -> None:
        self.settings = settings.pool
        self.spawner = spawner
        self._start = start
        # The spec of each pooled language's kernels: what a create must match.
        self.specs: dict[str, KernelSpec] = {}
        for name in settings.pool.pool_languages:
            row = _pooled_language(name)
            missing = row.missing()
            if missing:
                log.warning("warm pool: no %s kernels: %s is not installed", row.name, missing)
            else:
                memory = settings.limits.default_memory_bytes
                self.specs[row.name] = kernel_spec(settings, row, memory)
        self.ready: dict[str, collections.deque[tuple[str, Kernel]]] = {
            name: collections.deque() for name in self.specs
        }
        # One-shot jobs' kernels of a pooled language, when they differ from its
        # sessions' (KernelSpec.preimported): kept from the first job on.
        self.job_specs: dict[str, KernelSpec] = {}
        self.job_ready: dict[str, collections.deque[tuple[str, Kernel]]] = {}
        self._wanted = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.settings.pool_size > 0 and self.specs and self._task is None:
            self._wanted.set()
            self._task = asyncio.create_task(self._refill())

    async def take(self, lang: str, spec: KernelSpec) -> tuple[str, Kernel] | None:
        """A ready `lang` kernel for `spec` (its id and kernel), or None: then start
        one cold. Only the memory limit may differ from the pool's spec."""
        kind = self._kind(lang, spec)
        if kind is None or self.spawner.has_exited():
            return None  # not pooled; or the spawner died, and its kernels with it
        ready, default = kind
        if dataclasses.replace(spec, memory_bytes=default.memory_bytes) != default:
            return None
        while ready:
            kernel_id, kernel = ready.popleft()
            self._wanted.set()
            if kernel.dead:
                await self._discard(kernel_id, kernel)
                continue
            if spec.memory_bytes != default.memory_bytes:
                try:
                    await self.spawner.set_limits(
                        kernel_id, spec.memory_bytes, spec.pids, spec.cpu_quota
                    )
                except SpawnerError as e:
                    log.info("warm kernel %s cannot take the limits asked for: %s", kernel_id, e)
                    ready.appendleft((kernel_id, kernel))
                    return None
            return kernel_id, kernel
        return None

    def _kind(
        self, lang: str, spec: KernelSpec
    ) -> tuple[collections.deque[tuple[str, Kernel]], KernelSpec] | None:
        """The ready kernels that could serve `spec`, and their spec; None if `lang`
        is not pooled, or for the first job of a kind (the pool keeps some from now)."""
        default = self.specs.get(lang)
        if default is None:
            return None
        if spec.preimported == default.preimported:
            return self.ready[lang], default
        if lang not in self.job_specs:
            self.job_specs[lang] = dataclasses.replace(default, preimported=spec.preimported)
            self.job_ready[lang] = collections.deque()
            self._wanted.set()
            return None
        return self.job_ready[lang], self.job_specs[lang]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for ready in [*self.ready.values(), *self.job_ready.values()]:
            while ready:
                await self._discard(*ready.popleft())

    async def _refill(self) -> None:
        """Top every language up to pool_size, one start at a time (the spawner
        serves one request at a time; creates go between them)."""
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            kinds = [(name, spec, self.ready[name]) for name, spec in self.specs.items()]
            kinds += [(name, spec, self.job_ready[name]) for name, spec in self.job_specs.items()]
            for name, spec, ready in kinds:
                while len(ready) < self.settings.pool_size:
                    kernel_id = secrets.token_urlsafe(16)
                    try:
                        ready.append((kernel_id, await self._start(kernel_id, spec)))
                    except EngineError as e:
                        log.warning("warm pool: a %s kernel did not start: %s", name, e)
                        asyncio.get_running_loop().call_later(RETRY_SECONDS, self._wanted.set)
                        break

    async def _discard(self, kernel_id: str, kernel: Kernel) -> None:
        await kernel.close()
        with contextlib.suppress(SpawnerError):
            await self.spawner.destroy(kernel_id)


def _pooled_language(name: str) -> languages.Language:
    row = languages.resolve(name)
    if row is None:
        raise ValueError(f"pool_languages: unknown language {name!r}")
    return row
