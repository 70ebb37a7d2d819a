"""One-shot jobs: a program built and run once in a kernel of its own, for the faces
whose API is "run this with this input under these limits" (Jobe, Piston).

A job gets a kernel that has run nothing (a warm one from the pool, else a new
one) and the kernel is destroyed when the job ends, whatever happened: nothing of
one job reaches another. Inside, the face runs its steps (build, run) one by one,
each a `Kernel.run_job` with limits of its own, the job's files written into
/home/work with the first; what a step's outcome means (a compile error, a time
limit) is the face's to say.

Jobs run at most `max_running` at once, and at most `max_waiting` wait for a
slot; past that a job is refused at once with `Overloaded`, so a burst of
submissions is queued within a bound and never grows without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sandbox.kernel import KernelGone
from sandbox.run_result import JobStep, RunResult

from .errors import EngineError, ExecutionFailed
from .limits import KernelLimits
from .pool import kernel_spec
from .registry import Registry, resolve_lang
from .session import Session
from .settings import EngineSettings

# The owner the registry counts jobs under: no client's key, so no client's quota.
JOBS_OWNER = "jobs:"
# A job's kernel outlives its steps' wall times by this much before the reaper may
# take it for idle.
IDLE_SLACK_MS = 60_000


T = TypeVar("T")


class Overloaded(EngineError):
    """More jobs are waiting than the server queues."""


@dataclass(frozen=True)
class StepLimits:
    cpu_seconds: float
    wall_seconds: float
    output_bytes: int  # each of stdout and stderr; the rest is read and dropped
    memory_bytes: int = 0  # RLIMIT_AS; 0: only the kernel's memory limit
    processes: int = 0  # RLIMIT_NPROC of the kernel's user; 0: only its pids limit
    file_bytes: int = 0  # RLIMIT_FSIZE; 0: only /home/work's size
    stop_at_output: bool = False  # kill it once a stream passes output_bytes


class JobKernel:
    """The kernel of one job, while the job runs."""

    def __init__(self, session: Session) -> None:
        self.session = session

    async def step(
        self,
        command: str,
        stdin: bytes,
        limits: StepLimits,
        *,
        files: Sequence[tuple[str, bytes]] = (),
        env: dict[str, str] | None = None,
        python: dict | None = None,
        last: bool = False,
        check: str | None = None,
    ) -> JobStep:
        """Run `command` (a shell command in /home/work) once, to its end, after
        writing `files` there (paths relative to it). `env`: the program's whole
        environment (default: the kernel's). `python`: the same step as a fork of
        the kernel's python3 (sandbox/runner/python_program.py), for python3 kernels.
        `last`: the job runs no step after this one, which then runs in the place of
        the kernel's runner instead of a fork of it (cheaper; the kernel ends with it).
        `check`: a python3 source to compile-check first, in the kernel's python3; if
        it does not compile, the answer is the check's (JobStep.failed_check)."""
        return await self._kernel_call(
            self.session.kernel.run_job(
                command,
                stdin,
                cpu=limits.cpu_seconds,
                wall=limits.wall_seconds,
                output=limits.output_bytes,
                memory=limits.memory_bytes,
                processes=limits.processes,
                file_size=limits.file_bytes,
                files=files,
                env=env,
                python=python,
                stop_at_output=limits.stop_at_output,
                last=last,
                check=check,
            )
        )

    async def start(self, command: str, hold: float) -> RunResult:
        """Start `command` (a shell command in /home/work) as a run whose output comes
        as it is printed and which asks for input when it reads it (the batch op's
        exec), for an interactive face; then `more` and `give` until "finished"."""
        op = {"op": "batch", "clean": "", "build": "", "exec": command}
        return await self._kernel_call(self.session.kernel.start(op, hold, eager=True))

    async def more(self, hold: float) -> RunResult:
        return await self._kernel_call(self.session.kernel.collect(hold, eager=True))

    async def give(self, text: str, hold: float) -> RunResult:
        """The run's input, while it waits for some."""
        return await self._kernel_call(self.session.kernel.feed_input(text, hold, eager=True))

    async def interrupt(self) -> None:
        """SIGINT to the running command."""
        await self._kernel_call(self.session.kernel.interrupt())

    async def _kernel_call(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except KernelGone as e:
            raise ExecutionFailed(f"the job's kernel ended: {e}") from e

    async def out_of_memory(self) -> bool:
        """Whether the OOM killer struck in the kernel since the last look (a step
        killed by SIGKILL then ran out of the kernel's memory)."""
        return await self.session.out_of_memory()


class Jobs:
    """The jobs of one server: their slots, their queue, their kernels."""

    def __init__(self, settings: EngineSettings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.max_running = settings.limits.max_running_jobs
        self.max_waiting = settings.limits.max_waiting_jobs
        self._slots = asyncio.Semaphore(self.max_running)
        self._ending: set[asyncio.Task] = set()
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def kernel(
        self, lang: str, seconds: float, memory_bytes: int | None = None
    ) -> AsyncIterator[JobKernel]:
        """A fresh kernel of `lang` for one job expected to take about `seconds`
        (its steps' wall times), with `memory_bytes` of memory (default: [limits]
        default_memory_bytes, which the warm pool's kernels have; up to
        max_memory_bytes), destroyed on leaving. Overloaded past the queue.

        The destroy runs after the block, in the background: the job's answer need
        not wait for its kernel's end, but its slot does, so the kernels that jobs
        hold, ending ones included, stay within max_running."""
        if self._slots.locked() and self.waiting >= self.max_waiting:
            self.registry.tally.refused["job-queue"] += 1
            raise Overloaded(f"more than {self.max_waiting} jobs are waiting")
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        try:
            session = await self._create(lang, seconds, memory_bytes)
        except BaseException:
            self._slots.release()
            raise
        ending = False
        try:
            async with session.lock:
                try:
                    yield JobKernel(session)
                finally:
                    # begun while the lock is held: its destroy forgets the kernel
                    # before the registry's watcher, waiting for the lock, takes a
                    # kernel that ended with its last step for one that died
                    ending = True
                    self._end_soon(session)
        finally:
            if not ending:
                self._end_soon(session)

    def _end_soon(self, session: Session) -> None:
        ending = asyncio.create_task(self._end(session))
        self._ending.add(ending)
        ending.add_done_callback(self._ending.discard)

    async def _end(self, session: Session) -> None:
        try:
            await self.registry.destroy(session, "the job ended")
        finally:
            self._slots.release()

    async def ended(self) -> None:
        """Wait until the kernels of the jobs that ended are gone."""
        while self._ending:
            await asyncio.gather(*self._ending, return_exceptions=True)

    async def _create(self, lang: str, seconds: float, memory_bytes: int | None) -> Session:
        language = resolve_lang(lang)
        limits = self.settings.limits
        memory = min(memory_bytes or limits.default_memory_bytes, limits.max_memory_bytes)
        lifetime_ms = int(seconds * 1000) + IDLE_SLACK_MS
        kernel_limits = KernelLimits(
            memory_bytes=memory,
            exec_timeout_ms=lifetime_ms,
            idle_timeout_ms=lifetime_ms,
            cpu_credit_ms=lifetime_ms,
        )
        spec = kernel_spec(self.settings, language, memory, job=True)
        session, _ = await self.registry.get_or_create(
            JOBS_OWNER, secrets.token_hex(8), language.name, spec, kernel_limits, self.max_running,
            kept=False,  # a job ends with the server that runs it: no record to write
        )  # fmt: skip
        return session
