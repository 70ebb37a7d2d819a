"""StdinWatch (sandbox/runner/stdin_watch.py) against real child processes on the host.

Each test gives a child the read end of a fresh pipe as its stdin and keeps only the
write end. StdinWatch scans every process in /proc (the test runs as root, so it may
read their `syscall` files) but only matches fds that are this very pipe, so the other
processes on the host do not matter.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time

import pytest

from sandbox.runner.stdin_watch import StdinWatch, unread_bytes

pytestmark = pytest.mark.timeout(30)

PYTHON = sys.executable
NODE = shutil.which("node")


def poll(predicate, timeout: float = 5.0) -> bool:
    """True as soon as predicate() is; False if it never is within timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def stays_false(predicate, duration: float = 0.5) -> bool:
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        if predicate():
            return False
        time.sleep(0.02)
    return True


@contextlib.contextmanager
def child_on_pipe(argv: list[str]):
    """Start argv with a new pipe's read end as stdin; yield (process, write end)."""
    read_end, write_end = os.pipe()
    proc = None
    try:
        proc = subprocess.Popen(argv, stdin=read_end, stdout=subprocess.DEVNULL)
        os.close(read_end)
        read_end = -1
        yield proc, write_end
    finally:
        if read_end >= 0:
            os.close(read_end)
        os.close(write_end)
        if proc is not None:
            proc.kill()
            proc.wait(10)


READERS = {
    "cat": ["cat"],
    "python-readline": [PYTHON, "-c", "import sys; sys.stdin.readline()"],
    # The main thread waits in a futex (join); another thread is the one reading.
    "python-thread": [
        PYTHON,
        "-c",
        "import sys, threading\n"
        "t = threading.Thread(target=sys.stdin.readline)\n"
        "t.start()\n"
        "t.join()\n",
    ],
    "bash-read": ["bash", "-c", "read line"],
    # The reader is a grandchild: sh waits in wait4 for cat.
    "sh-cat": ["sh", "-c", "cat; echo done"],
    # Node.js waits in epoll_wait with the stdin pipe in its interest set.
    "node-readline": [
        NODE or "node",
        "-e",
        "require('readline').createInterface({input: process.stdin}).on('line', () => {})",
    ],
}


@pytest.mark.parametrize("name", list(READERS))
def test_blocked_reader_is_waiting(name):
    if name.startswith("node") and NODE is None:
        pytest.fail("node is not installed")
    with child_on_pipe(READERS[name]) as (proc, write_end):
        watch = StdinWatch(write_end)
        assert poll(watch.waiting), f"{name}: never seen waiting on its stdin"
        assert proc.poll() is None


def test_reader_stops_waiting_once_fed_and_gone():
    with child_on_pipe([PYTHON, "-c", "import sys; sys.stdin.readline()"]) as (proc, w):
        watch = StdinWatch(w)
        assert poll(watch.waiting)
        os.write(w, b"a line\n")
        proc.wait(10)
        assert proc.returncode == 0
        assert not watch.waiting()


def test_holder_that_never_reads_is_not_waiting():
    with child_on_pipe(["sleep", "5"]) as (proc, write_end):
        watch = StdinWatch(write_end)
        assert stays_false(watch.waiting, 0.5)
        assert proc.poll() is None  # it was alive (holding the pipe) all along


def test_reader_of_another_pipe_does_not_count():
    other_read, other_write = os.pipe()
    try:
        with child_on_pipe(["sleep", "5"]) as (_, write_end):
            reader = subprocess.Popen(["cat"], stdin=other_read, stdout=subprocess.DEVNULL)
            try:
                assert poll(StdinWatch(other_write).waiting)  # cat is blocked on the other one
                assert stays_false(StdinWatch(write_end).waiting, 0.5)
            finally:
                reader.kill()
                reader.wait(10)
    finally:
        os.close(other_read)
        os.close(other_write)


def test_unread_bytes_counts_what_nobody_read():
    with child_on_pipe(["sleep", "5"]) as (_, write_end):
        assert unread_bytes(write_end) == 0
        os.write(write_end, b"abc")
        assert unread_bytes(write_end) == 3
        os.write(write_end, b"de\n")
        assert unread_bytes(write_end) == 6
        assert not StdinWatch(write_end).waiting()


def test_unread_bytes_on_the_read_end():
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"hello")
        assert unread_bytes(read_end) == 5
        assert os.read(read_end, 2) == b"he"
        assert unread_bytes(read_end) == 3
        assert unread_bytes(write_end) == 3
    finally:
        os.close(read_end)
        os.close(write_end)


def test_not_waiting_while_bytes_sit_unread_in_the_pipe():
    # An edge-triggered epoll waiter: after one wake-up for the bytes it goes back to
    # sleep in epoll_wait, its interest set still holding the pipe, and never reads.
    # Without the unread-bytes check it would look like a program waiting for input.
    code = (
        "import select\n"
        "ep = select.epoll()\n"
        "ep.register(0, select.EPOLLIN | select.EPOLLET)\n"
        "while True:\n"
        "    ep.poll()\n"
    )
    with child_on_pipe([PYTHON, "-c", code]) as (proc, write_end):
        watch = StdinWatch(write_end)
        assert poll(watch.waiting), "the epoll waiter was never seen waiting"
        os.write(write_end, b"unread\n")
        assert unread_bytes(write_end) == 7
        assert stays_false(watch.waiting, 0.5)
        assert unread_bytes(write_end) == 7  # still there: nobody read them
        assert proc.poll() is None
