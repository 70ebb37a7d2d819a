"""One kernel as its owner sees it: its limits and its run state.

`Session.execute` implements the implicit v2 run model (spec §6.2): one run at a
time; a call while a run is active continues it (its `code` is ignored), or
answers the pending `input()` with it; every call holds up to `hold` seconds.
The explicit `runId` model (§6.3) rides on the same state: `continue` and
`input` modes name what the implicit model infers.

The registry (registry.py) makes sessions and ends them; a session's
`watcher` is the registry's task that restarts or destroys its kernel when the
kernel dies, and `ended` the reason once it was destroyed.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sandbox import languages
from sandbox.kernel import Kernel, KernelGone
from sandbox.run_result import RunResult
from sandbox.spawner_client import SpawnerClient, SpawnerError
from sandbox.spec import KernelSpec

from .errors import ExecutionFailed, InvalidRequest, KernelNotFound
from .lifecycle import Lifecycle
from .limits import KernelLimits

IDLE, RUNNING, WAITING, TIMED_OUT = "idle", "running", "waiting-input", "exec-timeout"
# A call that finds its kernel dead waits this long for the watcher to restart or
# destroy it (a destroy may take 15 s; a restart starts a kernel: its 10 s ready
# wait, then some).
SETTLE_TIMEOUT = 30.0
OOM_KILLED = 128 + 9
# uvloop rounds timers to the millisecond: a hold that ends at the exec deadline may
# wake a little before it, and must still count as reaching it.
TIMER_SLACK = 0.005


@dataclass
class Session:
    """One kernel as its owner sees it."""

    id: str
    access_key: str
    token: str
    lang: str
    spec: KernelSpec
    limits: KernelLimits
    kernel: Kernel
    spawner: SpawnerClient
    created: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    queries: int = 0
    state: str = IDLE
    run_id: str | None = None
    cpu_ms_before_restart: float = 0.0
    oom_kills_seen: int = 0  # of the current kernel's cgroup
    oom_restart_pending: bool = False  # the runner died of OOM: restart, don't destroy
    run_out_of_memory: bool = False  # the OOM killer struck during the current run
    mounts: dict[str, str] = field(default_factory=dict)  # path under /home/work -> folder id
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # exec timeout of the current run: seconds left when the clock last (re)started,
    # and when that was; the clock stops while the program waits for input()
    run_budget: float = 0.0
    run_clock: float | None = None
    watcher: asyncio.Task | None = None  # restarts or destroys the kernel when it dies
    ended: str = ""  # why it was destroyed, once it was
    lifecycle: Lifecycle = field(default_factory=Lifecycle)  # started, restarted, terminated
    # Called when a call leaves the session in another run state than its record has
    # (kept_kernels.py: the next server must know a run is under way).
    on_state_change: Callable[[Session], None] | None = None
    recorded_state: str = IDLE
    # Recorded for the next server at all: a one-shot job's kernel is not (its job
    # ends with the server that ran it, and the next one destroys it as unknown).
    kept: bool = True

    def mounted_at(self, path: str) -> str | None:
        """The mount a path in /home/work falls in, if any."""
        parts = [p for p in path.split("/") if p not in ("", ".")]
        for alias in self.mounts:
            alias_parts = alias.split("/")
            if parts[: len(alias_parts)] == alias_parts:
                return alias
        return None

    @property
    def language(self) -> languages.Language:
        row = languages.resolve(self.lang)
        assert row is not None, self.lang  # sessions are made with canonical names
        return row

    def touch(self) -> None:
        self.queries += 1
        self.last_used = time.monotonic()

    def keep_alive(self) -> None:
        """Activity that is not a query (a stream's frames): the idle clock restarts."""
        self.last_used = time.monotonic()

    def remaining(self) -> float:
        """Seconds left of the current run's exec timeout."""
        if self.run_clock is None:
            return self.run_budget
        return self.run_budget - (time.monotonic() - self.run_clock)

    def overdue(self) -> bool:
        return self.state == RUNNING and self.remaining() <= TIMER_SLACK

    def _start_run(self, run_id: str | None) -> None:
        self.run_id = run_id or secrets.token_hex(8)
        self.run_out_of_memory = False
        self.run_budget = self.limits.exec_timeout_ms / 1000
        self.run_clock = time.monotonic()

    async def execute(
        self,
        mode: str,
        code: str,
        options: dict,
        run_id: str | None,
        hold: float,
        eager: bool = False,
        gone: Callable[[], bool] | None = None,
    ) -> tuple[RunResult, str | None]:
        """One execute call of the v2/v3 model. Returns the result and the run id.
        `eager` answers as soon as output arrives (Kernel.collect), for streams;
        `gone` says whether the caller's client has left: if so at the end of the
        call, the run is abandoned (`abandon`) before anyone else may call.

        A dead kernel (it exited, or the host ended it) only gives a running run its
        last events; anything else waits for its watcher, then goes on in the
        restarted kernel (after an OOM kill) or answers kernel-not-found with the
        reason it was destroyed, never a send to a closed socket."""
        for _ in range(2):
            async with self.lock:  # a restart replaces the kernel and its watcher under it
                watcher = self.watcher
                if not self.kernel.dead or self.state == RUNNING:
                    with contextlib.suppress(KernelGone):  # it died under us: as above
                        answer = await self._execute_locked(
                            mode, code, options, run_id, hold, eager
                        )
                        if self.state != self.recorded_state and self.on_state_change:
                            self.on_state_change(self)
                        if gone is not None and gone():
                            await self._abandon_locked()
                        return answer
            if watcher is not None:
                await asyncio.wait({watcher}, timeout=SETTLE_TIMEOUT)
            if self.ended:
                break
        raise KernelNotFound(self.ended or "the kernel is gone")

    async def abandon(self, hold: float = 1.0) -> None:
        """The client of the current run went away (a stream closed mid-run):
        interrupt the run and take what is left of it, so that the kernel is idle
        for whoever comes next. A program that ignores the interrupt is taken until
        its exec timeout, after which the reaper ends the kernel."""
        async with self.lock:
            await self._abandon_locked(hold)

    async def _abandon_locked(self, hold: float = 1.0) -> None:
        while self.state in (RUNNING, WAITING) and not self.kernel.dead:
            if self.state == WAITING:  # its clock runs again: input will not come
                self.run_clock, self.state = time.monotonic(), RUNNING
            if self.remaining() <= TIMER_SLACK:
                return
            try:
                await self.kernel.interrupt()
                result = await self.kernel.collect(min(hold, self.remaining()))
            except KernelGone:
                return
            if result.status == "waiting-input":
                self.run_budget, self.run_clock = self.remaining(), None
                self.state = WAITING
            elif result.status == "finished":
                self.state = IDLE

    async def check_alive(self, kernel: Kernel | None = None) -> None:
        """If `kernel` (this session's, the current one by default) is dead, wait for
        its watcher; KernelNotFound with the reason if that destroyed the session."""
        kernel = kernel or self.kernel
        if kernel.dead and kernel is self.kernel and self.watcher is not None:
            await asyncio.wait({self.watcher}, timeout=SETTLE_TIMEOUT)
        if self.ended:
            raise KernelNotFound(self.ended)

    async def gone_error(self, kernel: Kernel, error: KernelGone) -> ExecutionFailed:
        """What a call that met `kernel` gone answers: KernelNotFound with the reason
        once its watcher has destroyed it (raised); ExecutionFailed if it is alive but
        did not answer, or was restarted after an OOM kill."""
        await self.check_alive(kernel)
        return ExecutionFailed(str(error))

    async def _execute_locked(
        self, mode: str, code: str, options: dict, run_id: str | None, hold: float, eager: bool
    ) -> tuple[RunResult, str | None]:
        if mode == "continue" and self.state == IDLE:
            raise InvalidRequest("mode: no run to continue")
        if mode == "input" and self.state != WAITING:
            raise InvalidRequest("mode: the run is not waiting for input")
        if self.state == TIMED_OUT:
            raise KernelNotFound("its run exceeded the exec timeout")
        if self.state == WAITING:  # the clock runs again from the moment input arrives
            self.run_clock = time.monotonic()
        elif self.state == IDLE:
            self._start_run(run_id)
        hold = max(0.0, min(hold, self.remaining()))
        if self.state == IDLE and mode == "batch":
            result = await self.kernel.start(self.language.batch_op(options), hold, eager)
        elif self.state == IDLE:
            result = await self.kernel.start(self.language.query_op(code), hold, eager)
        elif self.state == WAITING:
            result = await self.kernel.feed_input(code, hold, eager)
        else:  # RUNNING: v2 ignores the code of a continuation
            result = await self.kernel.collect(hold, eager)
        self.state = {"finished": IDLE, "waiting-input": WAITING}.get(result.status, RUNNING)
        if self.state == WAITING:
            self.run_budget, self.run_clock = self.remaining(), None
        elif self.overdue():
            self.state = TIMED_OUT
            result = RunResult("exec-timeout", console=result.console)
        elif self.state == IDLE and (self.kernel.dead or result.exit_code == OOM_KILLED):
            await self._report_oom(result)
        return result, self.run_id

    async def cpu_ms(self) -> float:
        """CPU time used over the kernel's life, restarts included."""
        return self.cpu_ms_before_restart + (await self.stats()).get("cpu_usec", 0) / 1000

    async def stats(self) -> dict:
        try:
            return await self.spawner.stats(self.id)
        except SpawnerError:
            return {}

    async def out_of_memory(self) -> bool:
        """Whether the OOM killer struck in this kernel since the last look."""
        kills = (await self.stats()).get("oom_kills", 0)
        struck, self.oom_kills_seen = kills > self.oom_kills_seen, max(kills, self.oom_kills_seen)
        return struck

    async def _report_oom(self, result: RunResult) -> None:
        if not await self.out_of_memory():
            return
        self.run_out_of_memory = True
        limit = self.limits.memory_bytes // (1024 * 1024)
        note = f"\n[out of memory: the kernel reached its {limit} MiB limit"
        if self.kernel.dead:
            note += "; it was restarted: variables are gone, files in /home/work are kept"
            self.oom_restart_pending = True
        result.console.append(["stderr", note + "]\n"])
