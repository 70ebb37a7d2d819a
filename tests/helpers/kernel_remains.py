"""What one kernel of a real server leaves on the host, to check it is all gone."""

from __future__ import annotations

import contextlib
import os
import time

import psutil

from helpers.api_server import ApiServer, spawner_pid
from helpers.harness import HAS_CGROUPS, sandbox_cgroup_dirs


class KernelRemains:
    """Everything one kernel of a server owns on the host, recorded while it runs:
    the processes in its pid namespace, its cgroups, its /home/work mount and
    scratch directory (both in the spawner's mount namespace)."""

    def __init__(self, server: ApiServer, kernel_id: str) -> None:
        self.spawner = spawner_pid(server.pid)
        self.kernel_id = kernel_id
        work = next((m for m in self._mounts() if m[1].endswith(f"/work/{kernel_id}")), None)
        assert work, "the kernel should have a work mount"
        self.work_dir = f"/proc/{self.spawner}/root{work[1]}"
        # Its pid 1 is the spawner's child that has that same tmpfs (same device)
        # at /home/work: found without any cgroup, so on every layout.
        inits = [
            child.pid
            for child in psutil.Process(self.spawner).children()
            if (work[0], "/home/work") in self._mounts(child.pid)
        ]
        assert len(inits) == 1, inits
        self.cgroup_dirs = sandbox_cgroup_dirs(inits[0])
        if HAS_CGROUPS:
            assert self.cgroup_dirs, "the kernel should have cgroups"
        else:
            assert self.cgroup_dirs == [], "the none layout makes no cgroups"
        self.namespaces = {self._namespace(inits[0])}
        # The kernel frees a dead namespace's inode number for reuse, so a later
        # kernel can show the same "pid:[...]": a namespace is the old one only
        # while its init (namespace pid 1) is the process recorded here.
        self.inits = {self._namespace(inits[0]): self._identity(inits[0])}

    def _mounts(self, pid: int | None = None) -> list[tuple[str, str]]:
        """(device, mount point) of each mount that `pid` (the spawner) sees."""
        with contextlib.suppress(OSError), open(f"/proc/{pid or self.spawner}/mountinfo") as f:
            return [(line.split()[2], line.split()[4]) for line in f]
        return []

    @staticmethod
    def _namespace(pid: int) -> str:
        return os.readlink(f"/proc/{pid}/ns/pid")

    @staticmethod
    def _identity(pid: int) -> tuple[int, float]:
        return pid, psutil.Process(pid).create_time()

    def _still_ours(self, namespace: str) -> bool:
        init = self.inits.get(namespace)
        if init is None:
            return True  # no init seen: be strict
        try:
            return self._identity(init[0]) == init
        except psutil.Error:
            return False

    def processes(self) -> list[int]:
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(OSError):
                namespace = self._namespace(proc.pid)
                if namespace in self.namespaces and self._still_ours(namespace):
                    found.append(proc.pid)
        return found

    def assert_processes_gone(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.05)
        left = []
        for pid in self.processes():
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                left.append((pid, p.name(), p.status(), p.ppid(), p.cmdline()[:3]))
        assert left == [], "processes survived"

    def assert_gone(self, timeout: float = 10) -> None:
        # A kernel the server ended (a limit, a timeout) is 404 at once and freed by
        # the spawner just after: what is left of it is waited for, within bounds.
        self.assert_processes_gone(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._leftovers():
            time.sleep(0.05)
        assert [d for d in self.cgroup_dirs if os.path.exists(d)] == [], "cgroups survived"
        assert not self._work_mounted(), "work mount survived"
        assert not os.path.exists(self.work_dir), "scratch directory survived"

    def _work_mounted(self) -> bool:
        return any(m.endswith(f"/work/{self.kernel_id}") for _, m in self._mounts())

    def _leftovers(self) -> bool:
        return (
            any(os.path.exists(d) for d in self.cgroup_dirs)
            or self._work_mounted()
            or os.path.exists(self.work_dir)
        )
