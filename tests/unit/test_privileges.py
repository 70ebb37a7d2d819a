"""The bounding set as privileges.clear_bounding_set reads it: one read of
/proc/self/status must say what PR_CAPBSET_READ says, capability by capability,
and clearing it in a fork must leave it empty."""

from __future__ import annotations

import os

from sandbox import privileges, syscalls


def test_the_status_read_agrees_with_prctl_on_every_capability() -> None:
    held = privileges._bounding_set()
    assert held is not None
    for cap in range(privileges._LAST_CAP + 1):
        assert bool(held >> cap & 1) == syscalls.in_bounding_set(cap), cap


def test_clearing_the_bounding_set_in_a_fork_empties_it() -> None:
    before = privileges._bounding_set()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            privileges.clear_bounding_set()
            left = [c for c in range(privileges._LAST_CAP + 1) if syscalls.in_bounding_set(c)]
            os.write(w, repr((privileges._bounding_set(), left)).encode())
        finally:
            os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    report = os.read(r, 1000).decode()
    os.close(r)
    assert status == 0
    assert report == "(0, [])"
    assert privileges._bounding_set() == before  # the parent's is its own
