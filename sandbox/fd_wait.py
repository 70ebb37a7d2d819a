"""Waiting for fds to become readable, with poll(2) rather than select(2).

select's fd_set holds only fds below FD_SETSIZE (1024): Python's select.select
raises ValueError for any fd above. The spawner keeps a socket per kernel while
kernels outlive their server (sandbox.spawner_connections), so with a thousand
kernels the fds it waits on (a start's status pipe, a spare's hello) pass that
line, and a select there would end the spawner and every kernel with it.
"""

from __future__ import annotations

import math
import select
from collections.abc import Iterable
from typing import Protocol, TypeVar


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


Waitable = TypeVar("Waitable", bound=int | _HasFileno)


def readable(waitables: Iterable[Waitable], timeout: float | None) -> list[Waitable]:
    """Those of `waitables` (fds, or objects with fileno()) that are readable, or at
    their end (hung up, in error), within `timeout` seconds (None: no limit); an
    empty list if none is by then. What select.select's first list gives, for any fd."""
    poller = select.poll()
    by_fd: dict[int, Waitable] = {}
    for waitable in waitables:
        fd = waitable if isinstance(waitable, int) else waitable.fileno()
        by_fd[fd] = waitable
        poller.register(fd, select.POLLIN)
    # ceil: a wait of a fraction of a millisecond must not become a busy poll(0)
    millis = None if timeout is None else math.ceil(max(0.0, timeout) * 1000)
    return [by_fd[fd] for fd, _events in poller.poll(millis)]
