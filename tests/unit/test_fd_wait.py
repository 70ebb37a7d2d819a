"""sandbox.fd_wait: readiness for fds past select's FD_SETSIZE (1024), which the
spawner reaches once it keeps a socket per kernel for a thousand kernels."""

from __future__ import annotations

import contextlib
import os
import resource
import select
import socket

import pytest

from sandbox import fd_wait

HIGH_FD = 1500


@pytest.fixture
def high_pipe():
    """A pipe whose read end is fd HIGH_FD (the soft open files limit raised for it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= HIGH_FD:
        pytest.skip(f"the hard open files limit ({hard}) is below {HIGH_FD}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, HIGH_FD + 1), hard))
    r, w = os.pipe()
    os.dup2(r, HIGH_FD)
    os.close(r)
    try:
        yield HIGH_FD, w
    finally:
        for fd in (HIGH_FD, w):
            with contextlib.suppress(OSError):
                os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_select_cannot_wait_on_a_high_fd_and_readable_can(high_pipe):
    r, w = high_pipe
    with pytest.raises(ValueError):
        select.select([r], [], [], 0)
    assert fd_wait.readable([r], 0) == []
    os.write(w, b"x")
    assert fd_wait.readable([r], 1) == [r]


def test_an_end_counts_as_readable_as_with_select(high_pipe):
    r, w = high_pipe
    os.close(w)
    assert fd_wait.readable([r], 1) == [r]


def test_it_gives_back_the_objects_it_was_given_and_waits_its_timeout():
    a, b = socket.socketpair()
    with a, b:
        assert fd_wait.readable([a], 0.05) == []
        b.send(b"x")
        assert fd_wait.readable([a, b], 1) == [a]
        assert fd_wait.readable([a, b.fileno()], None) == [a]
