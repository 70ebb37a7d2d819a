"""Raw cgroupfs reads and writes, shared by the drivers that have cgroup directories.

The drivers call these through the module (`fs.write`), so a test can watch every
value written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time

from .interface import CgroupError

CPU_PERIOD_US = 100_000  # the CFS period every CPU quota is written against


def write(path: str, value: str) -> None:
    """Write one value to a cgroup file (one write(2), as the kernel expects)."""
    with open(path, "w") as f:
        f.write(value)


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def read_int(path: str, default: int | None = 0) -> int | None:
    try:
        return int(read(path).split()[0])
    except (OSError, ValueError, IndexError):
        return default


def read_keyed(path: str) -> dict[str, int]:
    """Parse flat-keyed files ("key value" per line: cpu.stat, memory.events, ...)."""
    out: dict[str, int] = {}
    try:
        text = read(path)
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            with contextlib.suppress(ValueError):
                out[parts[0]] = int(parts[1])
    return out


def read_pids(path: str) -> list[int]:
    """Pids in a cgroup.procs file; none when the cgroup is gone."""
    try:
        text = read(path)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENODEV):
            return []
        raise
    return [int(p) for p in text.split()]


def cpu_quota_us(cores: float) -> int:
    """A quota in cores as microseconds per CPU_PERIOD_US. The kernel refuses
    quotas under 1 ms."""
    return max(1000, round(cores * CPU_PERIOD_US))


def rmdir_tree(path: str, timeout: float = 1.0) -> None:
    """rmdir a cgroup directory and any child cgroups, deepest first. ENOENT is fine
    (idempotent); EBUSY (tasks still exiting) is retried briefly."""
    try:
        children = [e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return
    for child in children:
        rmdir_tree(child, timeout)
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise CgroupError(f"rmdir {path}: {e}") from e
            time.sleep(0.01)
