"""Argument parsing of sandbox-exec."""

from __future__ import annotations

import argparse

import pytest

from sandbox.exec_cli import parse_size


@pytest.mark.parametrize(("text", "value"), [
    ("1024", 1024), ("64k", 64 << 10), ("256M", 256 << 20), ("1G", 1 << 30), ("2GiB", 2 << 30),
])  # fmt: skip
def test_sizes(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "0", "-1", "1T", "lots", "1.5G"])
def test_bad_sizes(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)
