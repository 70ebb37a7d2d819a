"""Whom the host's OOM killer takes when the whole host runs out of memory.

Each kernel's memory is bounded by its cgroup, but the bounds of many kernels can
add up to more than the host has (forty students at 256 MiB on an 8 GiB host;
thousands of idle kernels). When the host itself runs out, Linux kills the
process with the highest badness: the memory it holds plus oom_score_adj
(-1000..1000) thousandths of the host's. Left at 0 everywhere, that is the
server (100 MiB) or the spawner rather than a kernel that holds less, and every
kernel ends with them; a 4,400-kernel density run here lost its server so.

So the server and the spawner (and the zygotes, its forks) lower theirs, which
takes CAP_SYS_RESOURCE, and a kernel's pid 1 raises its own before any process of
the kernel is forked: they inherit it, and unprivileged they cannot lower it.
"""

from __future__ import annotations

import os

SERVICE = -900  # the server, the spawner, the zygotes: taken when no kernel is left
KERNEL = 500  # every process of a kernel: taken before anything of ours


def set_own(value: int) -> bool:
    """Set this process's oom_score_adj (inherited by its forks); False if refused.

    Plain os calls, not open(): a spare calls this first thing after its fork, and
    the io stack's first use there copied about 60 more pages (0.2 ms)."""
    try:
        fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"%d\n" % value)
        finally:
            os.close(fd)
    except OSError:
        return False
    return True
