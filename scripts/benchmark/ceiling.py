"""How many idle kernels the host could hold: what one more takes of each resource
that could run out, and what is left of it."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

import psutil

from sandbox.cgroups.probe import probe

from .figures import MiB


def mem_available() -> int:
    """The host's MemAvailable, bytes: what kernels can still take before the OOM killer."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


async def settled_mem_available(timeout: float = 10.0) -> int:
    """MemAvailable once it stops moving: kernels destroyed just before give their
    memory back over the next moments (cgroups and namespaces are freed after an
    RCU grace period), which would make the next difference meaningless."""
    deadline = time.monotonic() + timeout
    last = mem_available()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = mem_available()
        if abs(now - last) < MiB:
            return now
        last = now
    return last


def host_tasks() -> int:
    """Tasks (threads) on the host: what kernel.pid_max bounds."""
    with open("/proc/loadavg") as f:
        return int(f.read().split()[3].split("/")[1])


def read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read())


def memory_cgroup_room(pid: int) -> float:
    """What the memory cgroup `pid` is in may still take (inf without a limit): kernels
    are created below it, so its limit bounds them too. Ancestors' limits are not
    looked at."""
    with open(f"/proc/{pid}/cgroup") as f:
        host = probe(proc_cgroup=f.read())
    if "memory" in host.v1:
        hierarchy, limit, usage = (
            host.v1["memory"],
            "memory.limit_in_bytes",
            "memory.usage_in_bytes",
        )
    else:
        hierarchy, limit, usage = host.v2, "memory.max", "memory.current"
    if hierarchy is None or hierarchy.own_dir is None:
        return float("inf")
    try:
        with open(os.path.join(hierarchy.own_dir, limit)) as f:
            text = f.read().strip()
        with open(os.path.join(hierarchy.own_dir, usage)) as f:
            used = int(f.read())
    except (OSError, ValueError):
        return float("inf")
    if text == "max" or int(text) >= 1 << 62:
        return float("inf")
    return max(int(text) - used, 0)


@dataclass
class Footprint:
    """What one more idle kernel takes from each host resource that could run out."""

    memory: float  # bytes of MemAvailable
    tasks: float
    server_fds: float


def ceiling_note(n: int, per_kernel: Footprint, server: psutil.Process) -> str:
    """How many idle python3 kernels this host could hold, and what runs out first,
    projected from the footprint of the N alive now (docs/benchmarks.md: the ceiling)."""
    nofile = server.rlimit(psutil.RLIMIT_NOFILE)[0]
    limits = {
        "memory (MemAvailable)": mem_available() / per_kernel.memory,
        "the server's memory cgroup": memory_cgroup_room(server.pid) / per_kernel.memory,
        "tasks (kernel.pid_max)": (read_int("/proc/sys/kernel/pid_max") - host_tasks())
        / per_kernel.tasks,
        "the server's open files": (nofile - server.num_fds()) / max(per_kernel.server_fds, 1e-9),
    }
    ranked = sorted((i for i in limits.items() if i[1] != float("inf")), key=lambda i: i[1])
    (first, room), *others = ranked
    rest = ", ".join(f"{name} at {n + r:,.0f}" for name, r in others)
    return (
        f"ceiling: about {n + room:,.0f} idle python3 kernels, set by {first}: each takes "
        f"{per_kernel.memory / MiB:.2f} MiB, {per_kernel.tasks:.1f} tasks and "
        f"{per_kernel.server_fds:.1f} server fds; then {rest} (max_kernels aside)"
    )
