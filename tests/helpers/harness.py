"""A synchronous face on the async spawner client, for tests.

An event loop runs in a background thread; tests call `Sandbox.run(coro)`. One
spawner per test session (it is what the server will run), real kernels, real
namespaces and cgroups.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field

from sandbox import cgroups
from sandbox.cgroups.probe import probe
from sandbox.environment import layout_from_environment
from sandbox.held import KernelBounds
from sandbox.kernel import Kernel
from sandbox.run_result import RunResult
from sandbox.settings import SandboxSettings
from sandbox.spawner_client import SpawnerClient
from sandbox.spec import KernelSpec
from server.engine.settings import LimitSettings

_ids = itertools.count(1)

# The layout the spawners of this run pick (honours SANDBOX_CGROUP_LAYOUT, as they
# do). Under none there are no cgroups, only rlimits and psutil: the cgroup tests
# assert the weaker guarantees docs/architecture.md documents for it instead.
LAYOUT = cgroups.detect(layout_from_environment()).layout
HAS_CGROUPS = LAYOUT is not cgroups.Layout.NONE


def kernel_spec(memory_bytes: int | None = None, **overrides: object) -> KernelSpec:
    """A kernel's spec as the server's default settings make it, with `overrides`."""
    memory = LimitSettings().default_memory_bytes if memory_bytes is None else memory_bytes
    return SandboxSettings().kernel_spec(memory, **overrides)


def kernel_bounds(**overrides: object) -> KernelBounds:
    """What the host holds for a kernel, as the server's default settings say."""
    return dataclasses.replace(LimitSettings().kernel_bounds(), **overrides)


def sandbox_cgroup_dirs(pid: int) -> list[str]:
    """The directories of the sandbox's cgroups (below a sandbox-<pid> parent) that
    process `pid` is in, one per mounted hierarchy. Kernel cgroups are named k0,
    k1, ... (a spare's is made before its kernel is known), so a kernel's are found
    through its pid 1. [] under the none layout: the kernel stays where we are."""
    with open(f"/proc/{pid}/cgroup") as f:
        host = probe(proc_cgroup=f.read())
    found = {h.own_dir for h in (*host.v1.values(), host.v2) if h is not None and h.own_dir}
    return sorted(d for d in found if "/sandbox-" in d)


def own_v1_freezer() -> str | None:
    """This process's cgroup in the v1 freezer hierarchy, if the host mounts one."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if "freezer" in controllers.split(","):
                directory = "/sys/fs/cgroup/freezer" + path.rstrip("/")
                return directory if os.path.isdir(directory) else None
    return None


@contextlib.contextmanager
def frozen(pids: Iterable[int], name: str = "undead"):
    """Hold processes in a v1 freezer cgroup of our own (only that hierarchy
    changes): a SIGKILL waits for the thaw, as for a process stuck in uninterruptible
    sleep. Thawed on exit; the cgroup is removed once its processes are gone.
    Skips the test where there is no v1 freezer (the v2 one lets SIGKILL through)."""
    import pytest

    freezer = own_v1_freezer()
    if freezer is None:
        pytest.skip("needs a cgroup v1 freezer hierarchy to make a process that will not die")
    jail = f"{freezer}/sandbox-test-{name}-{os.getpid()}"
    os.mkdir(jail)
    try:
        for pid in pids:
            _write(f"{jail}/cgroup.procs", str(pid))
        _write(f"{jail}/freezer.state", "FROZEN")
        wait_until(lambda: _read(f"{jail}/freezer.state").strip() == "FROZEN", "FROZEN")
        yield
    finally:
        _write(f"{jail}/freezer.state", "THAWED")
        with contextlib.suppress(AssertionError):
            wait_until(lambda: not _read(f"{jail}/cgroup.procs").strip(), "the thawed to go")
        with contextlib.suppress(OSError):
            os.rmdir(jail)


def _state(pid: int) -> str | None:
    """The state letter of /proc/<pid>/stat, or None if there is no such pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def alive(pid: int) -> bool:
    """pid exists and has not exited (a zombie counts as exited)."""
    return _state(pid) not in (None, "Z", "X")


def zombie(pid: int) -> bool:
    """pid has exited and its parent has not reaped it yet."""
    return _state(pid) == "Z"


def wait_until(condition: Callable[[], object], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.05)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


@dataclass
class Output:
    """A whole run, gathered across `continued` responses."""

    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    statuses: list[str] = field(default_factory=list)
    console: list[list] = field(default_factory=list)

    def add(self, result: RunResult) -> None:
        self.statuses.append(result.status)
        for kind, text in result.console:
            self.console.append([kind, text])
            if kind == "stdout":
                self.stdout += text
            elif kind == "stderr":
                self.stderr += text
        self.exit_code = result.exit_code


class Sandbox:
    def __init__(self, spares: int | None = None, start_timeout: float | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client: SpawnerClient = self.run(
            SpawnerClient.start(
                spares=spares,
                start_timeout=start_timeout,
                cgroup_layout=layout_from_environment(),
            )
        )

    def run(self, coro: Coroutine, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def kernel(self, spec: KernelSpec | None = None, name: str = "k") -> TestKernel:
        kernel_id = f"t{os.getpid()}-{name}-{next(_ids)}"
        pid, sock = self.run(self.client.spawn(kernel_id, spec or kernel_spec()))
        kernel = self.run(Kernel.connect(kernel_id, pid, sock, kernel_bounds()))
        self.run(kernel.wait_ready())
        return TestKernel(self, kernel)

    def close(self) -> None:
        self.run(self.client.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class TestKernel:
    __test__ = False  # not a test class, despite the name

    def __init__(self, sandbox: Sandbox, kernel: Kernel) -> None:
        self.sandbox = sandbox
        self.k = kernel
        self.id = kernel.id
        self.pid = kernel.pid
        self.destroyed = False

    def query(self, code: str, hold: float = 2.0) -> RunResult:
        return self.sandbox.run(self.k.query(code, hold))

    def collect(self, hold: float = 2.0) -> RunResult:
        return self.sandbox.run(self.k.collect(hold))

    def feed(self, text: str, hold: float = 2.0) -> RunResult:
        return self.sandbox.run(self.k.feed_input(text, hold))

    def interrupt(self) -> None:
        self.sandbox.run(self.k.interrupt())

    def run(self, code: str, max_rounds: int = 30) -> Output:
        """Run code to the end, following `continued` responses."""
        out = Output()
        result = self.query(code)
        out.add(result)
        for _ in range(max_rounds):
            if result.status != "continued":
                break
            result = self.collect()
            out.add(result)
        return out

    def stats(self) -> dict:
        return self.sandbox.run(self.sandbox.client.stats(self.id))

    def destroy(self) -> int:
        """Free the kernel; the forks its pids limit refused over its life."""
        if self.destroyed:
            return 0
        self.destroyed = True
        self.sandbox.run(self.k.close())
        return self.sandbox.run(self.sandbox.client.destroy(self.id))


# In-kernel: wait until the runner's main thread waits for its next op, so its
# "finished" is out and no frame of a flooding thread can interleave with its own.
AFTER_THE_QUERY = """
import sys, threading, time
def after_the_query():
    main, deadline = threading.main_thread().ident, time.monotonic() + 30
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(main)
        while frame is not None and frame.f_code.co_name != "next_op":
            frame = frame.f_back
        if frame is not None:
            return
        time.sleep(0.01)
    raise TimeoutError("the query did not end")
"""
