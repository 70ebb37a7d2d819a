"""Fixtures of the runner tests: a stand-in kernel (helpers.runner_host), and one whose
pid 1 works in a directory of the test's."""

from __future__ import annotations

import pytest
from helpers.runner_host import Kernel


@pytest.fixture
def kernel():
    k = Kernel()
    try:
        yield k
    finally:
        k.close()


@pytest.fixture
def work(tmp_path):
    """A work directory for pid 1's file operations and batch steps."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def wkernel(work):
    """A kernel whose work directory is `work`."""
    k = Kernel(str(work))
    try:
        yield k
    finally:
        k.close()
