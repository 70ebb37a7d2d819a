"""The version of what a server and its spawner say to each other (sandbox.spawner's
requests) and of the frames between the server and its kernels
(sandbox.runner.protocol, sandbox.kernel_events). A spawner outlives its server
when kernels are kept across restarts, so the next server may be newer: it adopts
the kernels only if their versions agree, and ends them otherwise ("server
upgraded"). Raise VERSION with any change to either; this module stays tiny, for
both the spawner and the server to import.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator

VERSION = 1
# Kernels an "adopt" reply hands over at once: the server reads 16 fds a message.
ADOPT_BATCH = 16
UNIX_PATH_MAX = 108  # sockaddr_un.sun_path, with its NUL
# struct ucred (SO_PEERCRED, SCM_CREDENTIALS): pid, uid, gid
UCRED = struct.Struct("3i")


@contextlib.contextmanager
def reachable(path: str) -> Iterator[str]:
    """`path` as a unix socket address: itself when short enough, else the same file
    through /proc/self/fd of its directory (sun_path holds 108 bytes; a data
    directory's path may be longer)."""
    if len(os.fsencode(path)) < UNIX_PATH_MAX:
        yield path
        return
    directory = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{directory}/{os.path.basename(path)}"
    finally:
        os.close(directory)
