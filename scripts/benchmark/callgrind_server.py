"""`python -m server` as the instruction counts run it: under valgrind, which (3.19,
Debian 12's) does not know pidfd_open(2). The server watches its spawner through a
pidfd; here a pipe that never becomes readable stands in for it, so the server runs
as it does elsewhere, only without noticing a spawner that dies (none does here).
Measurement only: never how the server is run."""

import os
import runpy
import sys

_held: list[int] = []


def _pidfd_open(pid: int, flags: int = 0) -> int:
    read_end, write_end = os.pipe()
    _held.append(write_end)
    return read_end


os.pidfd_open = _pidfd_open
sys.path[0] = os.getcwd()  # as `python -m server` from the project's root
sys.argv = ["server", *sys.argv[1:]]
runpy.run_module("server", run_name="__main__", alter_sys=True)
