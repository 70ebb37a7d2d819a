"""A Piston submission run on the engine: a fresh kernel, the files written into
/home/work, the compile stage if the runtime has one, then the run stage, and
each stage's result as Piston reports it (docs/reference/piston.md §4).

A stage's status: TO when its wall or CPU time ran out, OL / EL when stdout /
stderr passed output_max_size (the program is stopped then, as Piston stops
it), SG when a signal ended it, RE for a non-zero exit; then signal is SIGKILL
and code null for TO, OL and EL. `memory` is null (Piston reports its box's
cgroup peak, and null when it killed the program); `output` is stdout then
stderr (Piston interleaves them as they arrive).
"""

from __future__ import annotations

import shlex
import signal

from sandbox.run_result import JobStep

from ...engine.jobs import Jobs, StepLimits
from .settings import PistonSettings
from .submission import StageLimits, Submission

ENVIRONMENT = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp"}
CPU_SHARE_AT_LIMIT = 0.9  # a SIGKILL after this much of the CPU time: RLIMIT_CPU's hard limit


def signal_name(number: int | None) -> str | None:
    if number is None:
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        offset = number - signal.SIGRTMIN
        return "SIGRTMAX" if number == signal.SIGRTMAX else f"SIGRTMIN+{offset}"


def stage_result(step: JobStep, limits: StageLimits) -> dict:
    sig, code = step.signal, step.exit_code
    cpu_out = sig == signal.SIGXCPU or (
        sig == signal.SIGKILL and step.cpu_ms >= limits.cpu_time_ms * CPU_SHARE_AT_LIMIT
    )
    status = message = None
    if step.timed_out:
        status, message = "TO", "Time limit exceeded (wall clock)"
    elif cpu_out:
        status, message = "TO", "Time limit exceeded"
    elif step.truncated[0]:
        status, message = "OL", "stdout length exceeded"
    elif step.truncated[1]:
        status, message = "EL", "stderr length exceeded"
    elif sig is not None:
        status, message = "SG", f"Caught fatal signal {sig}"
    elif code:
        status, message = "RE", f"Exited with error status {code}"
    name = signal_name(sig)
    if status in ("TO", "OL", "EL"):
        name, code = "SIGKILL", None
    stdout = step.stdout.decode("utf-8", "replace")
    stderr = step.stderr.decode("utf-8", "replace")
    return {
        "signal": name,
        "stdout": stdout,
        "stderr": stderr,
        "code": code,
        "output": stdout + stderr,
        "memory": None,  # not measured: a step's peak is not told apart from its kernel's
        "message": message,
        "status": status,
        "cpu_time": step.cpu_ms,
        "wall_time": step.wall_ms,
    }


def commands(sub: Submission) -> tuple[str, str]:
    """The runtime's compile and run commands for this submission."""
    fill = {
        "files": " ".join(shlex.quote(name) for name in sub.sources),
        "main": shlex.quote(sub.main),
        "args": " ".join(shlex.quote(a) for a in sub.args),
    }
    runtime = sub.installed.runtime
    return runtime.compile.format(**fill), runtime.run.format(**fill)


def step_limits(limits: StageLimits, settings: PistonSettings) -> StepLimits:
    return StepLimits(
        cpu_seconds=limits.cpu_time_ms / 1000,
        wall_seconds=limits.timeout_ms / 1000,
        output_bytes=settings.output_max_size,
        processes=settings.max_process_count,
        file_bytes=settings.max_file_size,
        stop_at_output=True,
    )


def environment(sub: Submission) -> dict[str, str]:
    return {**ENVIRONMENT, **dict(sub.installed.runtime.env)}


def kernel_memory(sub: Submission) -> int | None:
    """The kernel's memory: the larger stage limit asked for (both stages share the
    kernel), else the server's default."""
    return max(sub.compile.memory_bytes, sub.run.memory_bytes) or None


async def execute(jobs: Jobs, sub: Submission, settings: PistonSettings) -> dict:
    """The execute response's body."""
    runtime = sub.installed.runtime
    compile_command, run_command = commands(sub)
    seconds = (sub.run.timeout_ms + (sub.compile.timeout_ms if runtime.compile else 0)) / 1000
    result: dict = {}
    files = list(sub.files)
    env = environment(sub)
    async with jobs.kernel(runtime.kernel, seconds, kernel_memory(sub)) as job:
        if runtime.compile:
            built = await job.step(
                compile_command, b"", step_limits(sub.compile, settings), files=files, env=env
            )
            files = []
            result["compile"] = stage_result(built, sub.compile)
            if result["compile"]["code"] != 0:  # Piston: no run; run is the compile's copy
                result["run"] = dict(result["compile"])
        if "run" not in result:
            python = None
            if runtime.python:
                python = {"mode": "run", "path": sub.main, "args": list(sub.args)}
            ran = await job.step(
                run_command, sub.stdin.encode(), step_limits(sub.run, settings),
                files=files, env=env, python=python, last=True,
            )  # fmt: skip
            result["run"] = stage_result(ran, sub.run)
    return {**result, "language": runtime.language, "version": sub.installed.version}
