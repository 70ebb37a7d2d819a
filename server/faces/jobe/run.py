"""One Jobe run on the engine: a fresh kernel, the files and the source written
into /home/work, the compile step if the language has one, then the run step,
each under the limits its parameters give (Jobe's units: MB are 1000 x 1024
bytes, as runguard counts them), in an environment like the one runguard gives.

A python3 step whose command is Jobe's own (`python3 -m py_compile`, `python3
-BE` with plain arguments) runs as a fork of the kernel's python3, which is the
same and saves starting an interpreter (sandbox/runner/python_program.py).
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import signal

from sandbox.runner.job import COMPILE_HERE_MAX

from ...engine.errors import EngineError, ExecutionFailed, NoCapacity, QuotaExceeded
from ...engine.jobs import Jobs, Overloaded, StepLimits
from .outcomes import (
    COMPILATION_ERROR,
    INTERNAL_ERROR,
    SERVER_OVERLOAD,
    RunResult,
    compile_info,
    diagnose,
)
from .run_spec import Params, RunSpec

MB = 1000 * 1024
# What runguard leaves a program: PATH and the locale; HOME somewhere writable.
ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "HOME": "/home/work",
    "MPLCONFIGDIR": "/tmp/matplotlib",
    "OPENBLAS_NUM_THREADS": "1",
}
# an argument the shell passes on as it is
_PLAIN_ARGUMENT = re.compile(r"[\w@%+=:,./-]+")


def step_limits(params: Params) -> StepLimits:
    return StepLimits(
        cpu_seconds=params.cputime,
        wall_seconds=2 * params.cputime,  # runguard's --time
        output_bytes=int(params.streamsize * MB),
        memory_bytes=int(params.memorylimit * MB),
        processes=params.numprocs + 1,  # Jobe's +1: the shell that starts it
        file_bytes=int(params.disklimit * MB) if params.disklimit > 0 else 0,
    )


def command(template: str, spec: RunSpec, params: Params) -> str:
    """A language's shell template filled: our names quoted, the client's argument
    lists as Jobe passes them (joined, for the shell to read)."""
    return template.format(
        src=shlex.quote(spec.sourcefilename),
        exe=shlex.quote(spec.sourcefilename + ".exe"),
        main_class=shlex.quote(spec.main_class),
        **{name: " ".join(getattr(params, name)) for name in
           ("compileargs", "linkargs", "interpreterargs", "runargs")},
    )  # fmt: skip


def python_way(spec: RunSpec, compiling: bool) -> dict | None:
    """The step as a fork of the kernel's python3, when that is the same as its
    command; None otherwise (custom interpreter args, arguments the shell reads)."""
    if not spec.language.python_fork:
        return None
    if compiling:
        return {"mode": "compile", "path": spec.sourcefilename}
    args = spec.params.runargs
    if spec.params.interpreterargs != ("-BE",) or not all(
        _PLAIN_ARGUMENT.fullmatch(a) for a in args
    ):
        return None
    return {"mode": "run", "path": spec.sourcefilename, "args": list(args)}


async def execute(jobs: Jobs, spec: RunSpec, files: list[tuple[str, bytes]]) -> RunResult:
    """The run's result; an overloaded or failing engine is an outcome, not an error."""
    try:
        return await _execute(jobs, spec, files)
    except (Overloaded, NoCapacity, QuotaExceeded):
        return RunResult(SERVER_OVERLOAD)
    except ExecutionFailed:
        return RunResult(INTERNAL_ERROR, stderr="sandbox: the run's kernel ended unexpectedly\n")
    except EngineError as e:
        return RunResult(INTERNAL_ERROR, stderr=f"sandbox: {e.detail}\n")


async def _execute(jobs: Jobs, spec: RunSpec, files: list[tuple[str, bytes]]) -> RunResult:
    language, params = spec.language, spec.params
    at_compile = params.for_compile()
    seconds = 2 * params.cputime + (2 * at_compile.cputime if language.compile else 0)
    sources = [*files, (spec.sourcefilename, spec.sourcecode.encode())]
    # A python3 source small enough for the runner to compile in its own process is
    # checked by the run step itself rather than by a step of its own: a round trip less.
    check = None
    if python_way(spec, compiling=True) and len(spec.sourcecode.encode()) <= COMPILE_HERE_MAX:
        check = spec.sourcefilename
    async with jobs.kernel(language.kernel, seconds) as job:
        if language.compile and not check:
            built = await job.step(
                command(language.compile, spec, at_compile), b"", step_limits(at_compile),
                files=sources, env=ENVIRONMENT, python=python_way(spec, compiling=True),
            )  # fmt: skip
            sources = []
            cmpinfo = compile_info(built, language.compile_stdout)
            if cmpinfo:
                return RunResult(COMPILATION_ERROR, cmpinfo=cmpinfo)
        ran = await job.step(
            command(language.run, spec, params), spec.input.encode(), step_limits(params),
            files=sources, env=ENVIRONMENT, python=python_way(spec, compiling=False),
            last=True, check=check,
        )  # fmt: skip
        if ran.failed_check:
            return RunResult(COMPILATION_ERROR, cmpinfo=compile_info(ran, language.compile_stdout))
        if language.expand_stderr_tabs:
            ran = dataclasses.replace(ran, stderr=ran.stderr.replace(b"\n\t", b"\n        "))
        killed = ran.signal == signal.SIGKILL  # the OOM killer's signal: ask only then
        return diagnose(ran, params.cputime, killed and await job.out_of_memory())
