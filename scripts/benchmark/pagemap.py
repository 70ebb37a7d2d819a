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
    counts = frame_map_counts()
    unique, pss = [], []
    for pids in _kernels(spawner):
        with contextlib.suppress(psutil.NoSuchProcess, OSError):  # one ending as we look
            kernel_pss = sum(psutil.Process(pid).memory_full_info().pss for pid in pids)
            # one kernel's frames at a time: all of them at once, with thousands
            # alive, would be gigabytes of this process where the host has little left
            mine = collections.Counter(itertools.chain.from_iterable(map(mapped_frames, pids)))
            unique.append(sum(1 for f, n in mine.items() if counts[f] == n) * PAGE / MiB)
            pss.append(kernel_pss / MiB)
    return unique, pss


def _kernels(spawner: psutil.Process) -> list[list[int]]:
    """The pids of each kernel: its pid 1 (a "kernel-init" child of the spawner; the
    others are spares) and that one's descendants. From one scan of /proc, where
    psutil's children() scans it whole at every call: with thousands of kernels,
    time that grew with the square of their number."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    names = {}
    for proc in psutil.process_iter(["ppid", "name"]):
        children[proc.info["ppid"]].append(proc.pid)
        names[proc.pid] = proc.info["name"]
    kernels = []
    for init in children[spawner.pid]:
        if names[init] != "kernel-init":
            continue
        pids, todo = [], [init]
        while todo:
            pids.append(todo.pop())
            todo += children[pids[-1]]
        kernels.append(pids)
    return kernels
