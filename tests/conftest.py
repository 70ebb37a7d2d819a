"""Shared fixtures: one spawner per session, kernels per test or per module."""

from __future__ import annotations

import os

import pytest
from helpers.harness import Sandbox


def pytest_configure(config: pytest.Config) -> None:
    if os.geteuid() != 0:
        raise pytest.UsageError("the suite starts real kernels: run it as root (./scripts/test)")


@pytest.fixture(scope="session")
def sandbox():
    box = Sandbox()
    yield box
    box.close()


@pytest.fixture(scope="module")
def shared_kernel(sandbox):
    """One kernel for tests that only read or attack without changing it."""
    kernel = sandbox.kernel(name="shared")
    yield kernel
    kernel.destroy()


@pytest.fixture
def kernel(sandbox):
    """A fresh kernel for tests that change or break it."""
    kernel = sandbox.kernel()
    yield kernel
    kernel.destroy()
