"""One response of the execution model, and the console items it carries."""

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
