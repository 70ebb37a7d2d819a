"""Each kernel's unique memory from the page tables (/proc/<pid>/pagemap and
/proc/kpagecount), and its PSS."""

from __future__ import annotations

import collections
import contextlib
import itertools
import os

import psutil

from .figures import MiB

PAGE = os.sysconf("SC_PAGE_SIZE")
PFN_MASK = (1 << 55) - 1  # /proc/<pid>/pagemap: bits 0-54 the frame, bit 63 "present"


def mapped_frames(pid: int) -> list[int]:
    """The physical frames of every page `pid` has in memory (root only: a reader
    without CAP_SYS_ADMIN gets zeros)."""
    frames: list[int] = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb", 0) as pagemap:
        for line in maps:
            start, end = (int(x, 16) for x in line.split(None, 1)[0].split("-"))
            if start >= 1 << 47:  # [vsyscall]: not in the page tables
                continue
            pagemap.seek(start // PAGE * 8)
            entries = memoryview(pagemap.read((end - start) // PAGE * 8)).cast("Q")
            frames.extend(e & PFN_MASK for e in entries if e >> 63)
    return frames


def frame_map_counts() -> memoryview:
    """How many page-table entries map each physical frame (/proc/kpagecount)."""
    chunks = []
    with open("/proc/kpagecount", "rb", 0) as f:
        while chunk := f.read(1 << 24):
            chunks.append(chunk)
    return memoryview(b"".join(chunks)).cast("Q")


def kernel_memory(spawner: psutil.Process) -> tuple[list[float], list[float]]:
    """Unique memory and PSS (MiB) of each kernel: its pid 1 (the spawner's child)
    and that one's descendants.

    Unique memory is the pages that only this kernel's processes map, each
    counted once: what destroying the kernel frees. A sum of the processes' USS
    would miss the pages that pid 1 and the runner share with each other (those
    pid 1 wrote before it forked the runner) and no one else.
    """
    kernels = []
    for init in spawner.children():
        with contextlib.suppress(psutil.NoSuchProcess, OSError):  # one ending as we look
            if init.name() != "kernel-init":  # a spare process, not (yet) a kernel
                continue
            procs = [init, *init.children(recursive=True)]
            pss = sum(p.memory_full_info().pss for p in procs)
            kernels.append(([mapped_frames(p.pid) for p in procs], pss))
    counts = frame_map_counts()
    unique, pss = [], []
    for frames, kernel_pss in kernels:
        mine = collections.Counter(itertools.chain.from_iterable(frames))
        unique.append(sum(1 for f, n in mine.items() if counts[f] == n) * PAGE / MiB)
        pss.append(kernel_pss / MiB)
    return unique, pss
