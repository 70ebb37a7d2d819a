"""Floods through the kernel protocol, against the host's handle on a kernel.

User code writes frames or output that nobody collects; the host must hold no
more than its bounds (`KernelBounds`, `HeldBytes`) whatever it is waiting for,
pause the kernel rather than lose output, and end a kernel it cannot pause.
Real kernels from the test session's spawner; the bounds are small so that
they are reached quickly. (The same attacks over HTTP, with the server's RSS:
tests/api/test_kernel_gone_api.py.)
"""

from __future__ import annotations

import itertools
import os
import time

import pytest
from helpers.harness import AFTER_THE_QUERY, TestKernel, kernel_bounds, kernel_spec, wait_until

from sandbox.held import PIECE, QUIET_BYTES, HeldBytes, KernelBounds
from sandbox.kernel import Kernel, KernelGone
from sandbox.kernel_events import EVENT_OVERHEAD

MiB = 1024 * 1024
_ids = itertools.count(1)
# The most a kernel holds past a bound before its reader looks again: one piece.
STEP = PIECE + EVENT_OVERHEAD

# A thread in the kernel writes 16 MiB stdout frames straight to fd 3, forever,
# once the query is over (its frames must not interleave with the runner's).
FRAME_FLOOD = (
    AFTER_THE_QUERY
    + """
import os, struct
def flood():
    after_the_query()
    frame = struct.pack(">II", 15, 16 << 20) + b'{"ev":"stdout"}' + b"f" * (16 << 20)
    while True:
        view = memoryview(frame)
        while view:
            view = view[os.write(3, view):]
threading.Thread(target=flood, daemon=True).start()
"""
)


def connect(sandbox, bounds: KernelBounds, shared: HeldBytes | None = None) -> TestKernel:
    kernel_id = f"t{os.getpid()}-abuse-{next(_ids)}"
    pid, sock = sandbox.run(sandbox.client.spawn(kernel_id, kernel_spec()))
    kernel = sandbox.run(Kernel.connect(kernel_id, pid, sock, bounds, shared))
    sandbox.run(kernel.wait_ready())
    return TestKernel(sandbox, kernel)


@pytest.fixture
def kernels(sandbox):
    made: list[TestKernel] = []
    yield lambda bounds, shared=None: made.append(connect(sandbox, bounds, shared)) or made[-1]
    for kernel in made:
        kernel.destroy()


def held_stays_bounded(kernel: TestKernel, ceiling: int, samples: int = 20) -> None:
    """Once the reader has paused, `held` stays under the ceiling while nobody reads."""
    wait_until(lambda: kernel.k.held >= kernel.k.bounds.pause_bytes, "the output to pile up")
    for _ in range(samples):
        assert kernel.k.held <= ceiling, kernel.k.held
        assert not kernel.k.gone, kernel.k.end_reason
        time.sleep(0.05)


def test_output_nobody_collects_pauses_the_kernel_and_is_all_kept(kernels):
    """40 MiB printed in one write while nobody collects: the host holds at most
    pause_bytes and a piece, the program waits in write(), and every byte arrives
    once a client collects."""
    kernel = kernels(kernel_bounds(pause_bytes=2 * MiB, held_bytes=8 * MiB))
    first = kernel.query("import sys\nsys.stdout.write('x' * (40 << 20))\nprint('end')", hold=0.5)
    held_stays_bounded(kernel, 2 * MiB + STEP)
    out = "".join(text for _kind, text in first.console)
    result = first
    for _ in range(200):
        if result.status == "finished":
            break
        result = kernel.collect()
        out += "".join(text for _kind, text in result.console)
    assert result.status == "finished" and result.exit_code == 0, result
    assert out == "x" * (40 << 20) + "end\n"
    assert kernel.k.held == 0


def test_a_flood_while_a_file_operation_waits_ends_the_kernel(kernels):
    """A request's reply comes behind what the kernel sent, so the host reads on past
    pause_bytes while it waits; a kernel that floods past held_bytes meanwhile is
    ended with the reason, and the request says so, rather than the host holding
    all of it (before: without bound)."""
    kernel = kernels(kernel_bounds(pause_bytes=1 * MiB, held_bytes=4 * MiB))
    kernel.query(FRAME_FLOOD)
    held_stays_bounded(kernel, 1 * MiB + STEP, samples=3)
    with pytest.raises(KernelGone, match="no client took"):
        kernel.sandbox.run(kernel.k.request("files", path="."))
    assert "no client took" in kernel.k.end_reason
    assert kernel.k.held <= 4 * MiB + STEP


def test_the_server_wide_bound_pauses_floods_and_quiet_kernels_still_answer(kernels):
    """Two kernels flood into one HeldBytes of 3 MiB (each may hold 4): together they
    stay within it plus a piece each past QUIET_BYTES, and a third kernel that holds
    next to nothing still runs its query."""
    shared = HeldBytes(3 * MiB)
    bounds = kernel_bounds(pause_bytes=4 * MiB, held_bytes=16 * MiB)
    floods = [kernels(bounds, shared) for _ in range(2)]
    quiet = kernels(bounds, shared)
    for kernel in floods:
        kernel.query(FRAME_FLOOD)
    wait_until(lambda: shared.over, "the floods to fill the server-wide bound")
    for _ in range(20):
        assert shared.total <= 3 * MiB + 2 * (QUIET_BYTES + STEP), shared.total
        time.sleep(0.05)
    assert quiet.run("print(6 * 7)").stdout == "42\n"
    assert not any(kernel.k.gone for kernel in floods)
