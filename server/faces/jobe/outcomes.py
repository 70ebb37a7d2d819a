"""What a run's steps mean to Jobe's clients: the outcome codes, the cmpinfo, and
output made safe to send as JSON (docs/reference/jobe.md §3).

The rules, as Jobe applies them and CodeRunner reads them:
* a compile whose (error) output is not empty is a compile error (11): warnings
  count, as they do in Jobe;
* a run that used up its CPU time or its wall time (2 x cputime) is 13; its
  stdout so far is kept and its stderr dropped;
* killed by the kernel's memory limit (the OOM killer) is 17; by seccomp's
  kill action (a foreign system call ABI) is 19; a run whose kernel ended
  under it is 20;
* otherwise anything on stderr, or a signal, is a runtime error (12): a
  segmentation fault's stderr is dropped (Jobe's runguard wipes it), another
  signal adds one line naming it, as runguard's warning does;
* anything else is 15, whatever the exit code: Jobe ignores it.
Nothing of ours is written to a program's stderr otherwise: CodeRunner takes any
stderr text as a runtime error.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from sandbox.run_result import JobStep

COMPILATION_ERROR = 11
RUNTIME_ERROR = 12
TIME_LIMIT = 13
SUCCESS = 15
MEMORY_LIMIT = 17
ILLEGAL_SYSCALL = 19
INTERNAL_ERROR = 20
SERVER_OVERLOAD = 21

# A run killed by SIGKILL that used at least this share of its CPU time ran into
# RLIMIT_CPU's hard limit (it ignored SIGXCPU).
CPU_SHARE_AT_LIMIT = 0.9


@dataclass(frozen=True)
class RunResult:
    outcome: int
    cmpinfo: str = ""
    stdout: str = ""
    stderr: str = ""
    run_id: str | None = None

    def body(self) -> dict:
        """The JSON object, keys in Jobe's order."""
        return {
            "run_id": self.run_id,
            "outcome": self.outcome,
            "cmpinfo": self.cmpinfo,
            "stdout": self.stdout,
            "stderr": self.stderr,
        }


def clean(data: bytes) -> str:
    """Jobe's ResultObject::clean: valid UTF-8 as it is; otherwise every byte
    outside printable ASCII (but newline, CR and tab) becomes \\xNN."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    return "".join(
        chr(b) if 0x20 <= b <= 0x7E or b in (0x09, 0x0A, 0x0D) else f"\\x{b:02x}" for b in data
    )


def compile_info(step: JobStep, with_stdout: bool) -> str:
    """The cmpinfo of a compile step ("" when it compiled)."""
    if with_stdout and step.stdout.strip() and step.stderr:
        return clean(step.stdout) + "\\n" + clean(step.stderr)  # Jobe's literal backslash-n
    return clean(step.stderr)


def diagnose(step: JobStep, cputime: float, out_of_memory: bool) -> RunResult:
    """The outcome of a run step."""
    stdout = clean(step.stdout)
    sig = step.signal
    spent = step.cpu_ms >= cputime * 1000 * CPU_SHARE_AT_LIMIT
    if step.timed_out or sig == signal.SIGXCPU or (sig == signal.SIGKILL and spent):
        return RunResult(TIME_LIMIT, stdout=stdout)
    if sig == signal.SIGKILL and out_of_memory:
        return RunResult(MEMORY_LIMIT, stdout=stdout)
    if sig == signal.SIGSYS:
        return RunResult(ILLEGAL_SYSCALL, stdout=stdout)
    if sig == signal.SIGSEGV:
        return RunResult(RUNTIME_ERROR, stdout=stdout)
    stderr = clean(step.stderr)
    if sig is not None:
        if stderr and not stderr.endswith("\n"):
            stderr += "\n"
        stderr += f"sandbox: warning: command terminated with signal {sig}\n"
    return RunResult(RUNTIME_ERROR if stderr else SUCCESS, stdout=stdout, stderr=stderr)
