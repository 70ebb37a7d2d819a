"""kernel-init's build cache: compiled once per source version, opened by the
caller, and the binaries of other versions removed without breaking a spawner
that has its own open."""

from __future__ import annotations

import os
import subprocess

from sandbox import kernel_init


def test_a_build_is_compiled_once_and_opened(tmp_path) -> None:
    path, fd = kernel_init.build(str(tmp_path))
    again, fd2 = kernel_init.build(str(tmp_path))
    try:
        assert again == path and os.path.basename(path).startswith("kernel-init-")
        assert os.stat(fd).st_ino == os.stat(fd2).st_ino == os.stat(path).st_ino
        assert os.access(path, os.X_OK)
        assert sorted(os.listdir(tmp_path)) == [os.path.basename(path)]  # no partial left
    finally:
        os.close(fd)
        os.close(fd2)


def test_a_compile_removes_other_versions_but_not_an_open_one(tmp_path) -> None:
    older = tmp_path / "kernel-init-0123456789abcdef"
    older.write_bytes(b"#!/bin/sh\necho older\n")
    older.chmod(0o755)
    kept = os.open(older, os.O_RDONLY)  # as a spawner started on that version holds it
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("not ours")
    path, fd = kernel_init.build(str(tmp_path))
    try:
        assert sorted(os.listdir(tmp_path)) == [os.path.basename(path), "notes.txt"]
        run = subprocess.run(["/bin/sh", f"/proc/self/fd/{kept}"], pass_fds=[kept], text=True,
                             capture_output=True)  # fmt: skip
        assert run.stdout == "older\n"
    finally:
        os.close(fd)
        os.close(kept)
