"""CPU time: per party (server, spawner with its kernels, this client) for the
throughput figures, and the host's for the run's last note."""

from __future__ import annotations

import contextlib
import time

import psutil

from .services import Server, spawner_of


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """CPU time of `procs` and of the children each has reaped; the gone ones count 0."""
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += sum(proc.cpu_times()[:4])  # user, system, children's user and system
    return total


class CpuMeter:
    """CPU seconds used so far by the server, by its spawner and kernels, and by us.

    A process's time moves into its parent's children times when it is reaped, so
    a sum over the live tree (read anew each time) stays right as processes come
    and go below the spawner (its kernels' pid 1s included: it is their reaper).
    Not counted: processes that die with their kernel's pid namespace (a destroy
    kills its pid 1): Linux reaps those without adding their time to any parent.
    The host's busy time (`cpu_clock`) has them."""

    def __init__(self, server: Server) -> None:
        self.server = psutil.Process(server.proc.pid)
        self.spawner = spawner_of(server)

    def read(self) -> dict[str, float]:
        return {
            "server": cpu_seconds([self.server]),
            "spawner+kernels": cpu_seconds([self.spawner, *self.spawner.children(recursive=True)]),
            "client": cpu_seconds([psutil.Process()]),
        }


def cpu_clock() -> tuple[float, float, float]:
    """(wall seconds, CPU seconds the host has been busy, of them ours: this process
    and, once reaped, everything it started: the server, its spawner and kernels)."""
    host = psutil.cpu_times()
    busy = host.user + host.nice + host.system + host.steal
    return time.monotonic(), busy, cpu_seconds([psutil.Process()])
