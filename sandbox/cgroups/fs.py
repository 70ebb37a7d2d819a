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
    """Write one value to a cgroup file (one write(2), as the kernel expects).
    os.open, not open(): the io stack adds an fstat, an isatty ioctl and a seek to
    every file, and the spawner writes and reads a dozen per kernel. The flags are
    open()'s "w"."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


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
    (idempotent); EBUSY (tasks still exiting) is retried briefly. The directory is
    only listed when its rmdir fails: a kernel's cgroup has no children."""
    deadline = time.monotonic() + timeout
    rounds = 0  # of removing children: bounded, should more keep appearing
    while True:
        try:
            os.rmdir(path)
            return
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as e:
            if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                raise CgroupError(f"rmdir {path}: {e}") from e
            try:
                children = [c.path for c in os.scandir(path) if c.is_dir(follow_symlinks=False)]
            except (FileNotFoundError, NotADirectoryError):
                return
            if children and rounds < 3:
                rounds += 1
                for child in children:
                    rmdir_tree(child, timeout)
                continue  # they are gone now: try again
            if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise CgroupError(f"rmdir {path}: {e}") from e
            time.sleep(0.01)
