"""folder_images.copy_sparse: the bytes of a file, its holes left as holes."""

from __future__ import annotations

import os

import pytest

from sandbox.folder_images import copy_sparse


def test_copies_bytes_and_keeps_holes(tmp_path):
    source, target = tmp_path / "image", tmp_path / "copy"
    with open(source, "wb") as f:
        f.write(b"head" * 1024)
        f.seek(32 * 2**20)
        f.write(b"tail")
        f.truncate(64 * 2**20)
    written = copy_sparse(str(source), str(target))
    assert target.read_bytes() == source.read_bytes()
    assert os.stat(target).st_size == 64 * 2**20
    assert written < 2**20 and os.stat(target).st_blocks * 512 < 2**20
    assert os.stat(target).st_mode & 0o777 == 0o600


def test_never_overwrites(tmp_path):
    (tmp_path / "a").write_bytes(b"x")
    (tmp_path / "b").write_bytes(b"y")
    with pytest.raises(FileExistsError):
        copy_sparse(str(tmp_path / "a"), str(tmp_path / "b"))
    assert (tmp_path / "b").read_bytes() == b"y"
