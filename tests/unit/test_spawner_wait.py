"""The spawner's bounded wait: a kernel that will not die must not stall it."""

from __future__ import annotations

import subprocess
import time

from sandbox.pid_namespace import wait_for_exit


def test_reaps_a_child_that_exits():
    child = subprocess.Popen(["sh", "-c", "exit 3"])
    status = wait_for_exit(child.pid, 5)
    assert status is not None and status >> 8 == 3
    child.returncode = 3  # reaped here, not by Popen


def test_gives_up_on_a_child_that_does_not_exit():
    child = subprocess.Popen(["sleep", "30"])
    try:
        start = time.monotonic()
        assert wait_for_exit(child.pid, 0.3) is None
        assert 0.3 <= time.monotonic() - start < 2
    finally:
        child.kill()
        child.wait()


def test_not_our_child_is_none():
    assert wait_for_exit(1, 0.1) is None
