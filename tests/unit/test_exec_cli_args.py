"""Argument parsing of sandbox-exec."""

from __future__ import annotations

import argparse

import pytest

from sandbox.exec_cli import main, parse_memory, parse_size


@pytest.mark.parametrize(("text", "value"), [
    ("1024", 1024), ("64k", 64 << 10), ("256M", 256 << 20), ("1G", 1 << 30), ("2GiB", 2 << 30),
])  # fmt: skip
def test_sizes(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "0", "-1", "1T", "lots", "1.5G"])
def test_bad_sizes(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)


def test_a_memory_limit_too_small_to_start_a_kernel_is_refused():
    with pytest.raises(argparse.ArgumentTypeError, match="a bare number is bytes"):
        parse_memory("512")
    assert parse_memory("16M") == 16 << 20


def test_an_unknown_lang_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--lang", "cobol", "--", "true"])
    assert exit_info.value.code == 2
    assert "unknown 'cobol'" in capsys.readouterr().err
