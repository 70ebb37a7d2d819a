"""What runs give back: one response of the execution model with its console
items, and one job step's outcome (Kernel.run_job)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class RunResult:
    """One response of the execution model."""

    status: str  # continued | waiting-input | clean-finished | build-finished | finished
    console: list[list] = field(default_factory=list)
    options: dict | None = None
    exit_code: int | None = None


@dataclass(frozen=True)
class JobStep:
    """One program run under limits of its own (runner/job.py): its output as the
    bytes it wrote, each stream cut at the step's output size."""

    status: int  # the wait status
    stdout: bytes
    stderr: bytes
    cpu_ms: int
    wall_ms: int
    timed_out: bool  # the wall time ran out (RLIMIT_CPU shows as SIGXCPU or SIGKILL)
    truncated: tuple[bool, bool]  # stdout, stderr
    failed_check: bool = False  # the answer is the step's compile check's: it did not run

    @property
    def exit_code(self) -> int | None:
        return os.WEXITSTATUS(self.status) if os.WIFEXITED(self.status) else None

    @property
    def signal(self) -> int | None:
        return os.WTERMSIG(self.status) if os.WIFSIGNALED(self.status) else None


def wait_status_to_exit_code(status: int) -> int:
    """Shell convention: the exit code, or 128 + signal number when killed."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


class Console:
    """Accumulates console items for one response, merging adjacent text chunks."""

    def __init__(self, limit: int) -> None:
        self.items: list[list] = []
        self.size = 0
        self.limit = limit

    @property
    def full(self) -> bool:
        return self.size >= self.limit

    def add_item(self, item: list, size: int) -> None:
        """A media or html item: an item of its own, which ends the text before it."""
        self.size += size
        self.items.append(item)

    def add_text(self, stream: str, text: str) -> None:
        if not text:
            return
        self.size += len(text)
        if self.items and self.items[-1][0] == stream:
            self.items[-1][1] += text
        else:
            self.items.append([stream, text])
