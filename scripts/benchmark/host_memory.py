"""Where the host memory of idle kernels goes, by the Linux kernel's own counters.

MemAvailable tells what kernels take in all (ceiling.py); this splits it into the
parts /proc/meminfo counts, read before and after the density's kernels, so that
the bench can name what the next ceiling is made of: the kernels' own pages, the
Linux kernel's objects for them (slab: their processes' memory maps, namespaces,
cgroups), page tables and kernel stacks. kmalloc-1k is named apart, from
/proc/slabinfo (root only): it holds each memory cgroup's slots for every
shrinker on the host (one per superblock), a table that grows with the square
of the number of kernels (docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from .figures import MiB

PARTS = {  # /proc/meminfo field: how the note names it
    "AnonPages": "anonymous pages",
    "Slab": "slab",
    "PageTables": "page tables",
    "KernelStack": "kernel stacks",
}
SHRINKER_SLAB = "kmalloc-1k"


@dataclass(frozen=True)
class HostMemory:
    """The parts of the host's memory, bytes, at one moment."""

    parts: dict[str, int]
    shrinker_slab: int | None  # kmalloc-1k; None where /proc/slabinfo cannot be read


def host_memory() -> HostMemory:
    """The parts now; read twice, around the kernels, like MemAvailable."""
    parts = {}
    with open("/proc/meminfo") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in PARTS:
                parts[name] = int(value.split()[0]) * 1024
    try:
        with open("/proc/slabinfo") as f:
            shrinker_slab = next(
                int(fields[2]) * int(fields[3])
                for fields in (line.split() for line in f)
                if fields[0] == SHRINKER_SLAB
            )
    except (OSError, StopIteration, IndexError, ValueError):
        shrinker_slab = None
    return HostMemory(parts, shrinker_slab)


def breakdown_note(n: int, per_kernel: float, before: HostMemory, after: HostMemory) -> str:
    """`per_kernel`: bytes of MemAvailable each of the `n` kernels took."""
    shares = {
        label: (after.parts[field] - before.parts[field]) / n
        for field, label in PARTS.items()
        if field in before.parts and field in after.parts
    }
    text = ", ".join(f"{label} {share / MiB:.2f}" for label, share in shares.items())
    if before.shrinker_slab is not None and after.shrinker_slab is not None:
        shrinkers = (after.shrinker_slab - before.shrinker_slab) / n
        text += f" (of the slab, {SHRINKER_SLAB} {shrinkers / MiB:.2f}: where the memory cgroups'"
        text += " shrinker table lies)"
    rest = per_kernel - sum(shares.values())
    return (
        f"host memory per kernel, {n:,} alive: {per_kernel / MiB:.2f} MiB: {text}; "
        f"the rest {rest / MiB:.2f}"
    )
