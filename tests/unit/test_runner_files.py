"""Pid 1's file operations (sandbox.runner.files) on a tmp work directory.

User code owns the work directory: it may plant symlinks, FIFOs and
directories anywhere in it. None of them may make pid 1 write or read outside
the root, or block.
"""

from __future__ import annotations

import os
import stat
import time

import pytest

from sandbox.runner import files

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def canary(tmp_path):
    """A directory outside the root with a file nobody may read or change."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "canary.txt").write_bytes(b"canary")
    return path


def _unchanged(canary) -> bool:
    st = os.stat(canary / "canary.txt")
    return (
        (canary / "canary.txt").read_bytes() == b"canary"
        and sorted(os.listdir(canary)) == ["canary.txt"]
        and st.st_size == 6
    )


def _error(func, *args, **kw) -> str:
    with pytest.raises(files.FileOpError) as info:
        func(*args, **kw)
    return str(info.value)


# -- round trips ----------------------------------------------------------------------


def test_upload_list_download_round_trip(root):
    files.upload("a.txt", b"alpha", str(root))
    files.upload("b.bin", bytes(range(256)), str(root))
    assert files.download("a.txt", str(root)) == b"alpha"
    assert files.download("./b.bin", str(root)) == bytes(range(256))
    listing = files.list_files(".", str(root))
    assert listing["abspath"] == str(root)
    names = [(f["filename"], f["size"], f["mode"]) for f in listing["files"]]
    assert names == [("a.txt", 5, "-rw-r--r--"), ("b.bin", 256, "-rw-r--r--")]
    entry = listing["files"][0]
    assert set(entry) == {"mode", "size", "ctime", "mtime", "atime", "filename"}
    assert all(isinstance(entry[k], float) for k in ("ctime", "mtime", "atime"))


def test_nested_directories_are_created(root):
    files.upload("x/y/z/deep.txt", b"deep", str(root))
    assert (root / "x" / "y" / "z" / "deep.txt").read_bytes() == b"deep"
    for d in ("x", "x/y", "x/y/z"):
        assert stat.S_IMODE(os.stat(root / d).st_mode) == 0o755
    listing = files.list_files("x/y/", str(root))
    assert listing["abspath"] == f"{root}/x/y"
    assert [(f["filename"], f["mode"]) for f in listing["files"]] == [("z", "drwxr-xr-x")]
    assert files.download("x//y/./z/deep.txt", str(root)) == b"deep"


def test_overwrite_truncates(root):
    files.upload("f.txt", b"a long first version", str(root))
    os.chmod(root / "f.txt", 0o600)
    files.upload("f.txt", b"short", str(root))
    assert (root / "f.txt").read_bytes() == b"short"
    assert stat.S_IMODE(os.stat(root / "f.txt").st_mode) == 0o600  # the file is kept
    files.upload("empty", b"", str(root))
    assert (root / "empty").read_bytes() == b""


# -- refused paths -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "the path is empty"),
        ("/etc/passwd", "must be relative"),
        ("../x", "must not contain '..'"),
        ("a/../../x", "must not contain '..'"),
        ("a/..", "must not contain '..'"),
        ("a\0b", "NUL"),
        ("a/" * 2049 + "x", "longer than 4096 bytes"),
        ("\ud800", "not a valid file name"),
    ],
)
def test_bad_paths_are_refused(root, path, reason):
    for func, args in (
        (files.upload, (path, b"x", str(root))),
        (files.download, (path, str(root))),
        (files.list_files, (path, str(root))),
    ):
        message = _error(func, *args)
        assert reason in message
        assert message.startswith("cannot ")
    assert os.listdir(root) == []
    assert not (root.parent / "x").exists()


def test_non_string_path_is_refused(root):
    assert "must be a string" in _error(files.upload, None, b"", str(root))
    assert "must be a string" in _error(files.list_files, ["."], str(root))


@pytest.mark.parametrize("path", [".", "dir/", "dir/."])
def test_upload_and_download_need_a_file_name(root, path):
    assert "does not name a file" in _error(files.upload, path, b"x", str(root))
    assert "does not name a file" in _error(files.download, path, str(root))


def test_error_names_the_path(root):
    assert _error(files.download, "no/such.txt", str(root)) == (
        "cannot download 'no/such.txt': 'no' does not exist"
    )
    assert _error(files.list_files, "nodir", str(root)) == (
        "cannot list 'nodir': 'nodir' does not exist"
    )
    (root / "plain").write_bytes(b"")
    assert _error(files.upload, "plain/x.txt", b"", str(root)) == (
        "cannot upload 'plain/x.txt': 'plain' is not a directory"
    )


# -- symlinks and special files planted by user code ------------------------------------


def test_symlink_as_a_middle_component_is_refused(root, canary):
    os.symlink(canary, root / "x")
    os.mkdir(root / "d")
    os.symlink(canary, root / "d" / "inner")
    for path, shown in (("x/canary.txt", "'x'"), ("d/inner/canary.txt", "'d/inner'")):
        assert _error(files.upload, path, b"owned", str(root)) == (
            f"cannot upload {path!r}: {shown} is a symbolic link"
        )
        assert "is a symbolic link" in _error(files.download, path, str(root))
        assert "is a symbolic link" in _error(
            files.upload, path.replace("canary", "new"), b"", str(root)
        )
    assert "is a symbolic link" in _error(files.list_files, "x", str(root))
    assert "is a symbolic link" in _error(files.list_files, "d/inner/", str(root))
    assert _unchanged(canary)


def test_symlink_as_the_final_component_is_refused(root, canary):
    os.symlink(canary / "canary.txt", root / "link")
    os.symlink(canary / "created.txt", root / "dangling")
    assert _error(files.upload, "link", b"owned", str(root)) == (
        "cannot upload 'link': 'link' is a symbolic link"
    )
    assert "is a symbolic link" in _error(files.upload, "dangling", b"owned", str(root))
    message = _error(files.download, "link", str(root))
    assert "is a symbolic link" in message and "canary" not in message.replace("'link'", "")
    assert _unchanged(canary)
    assert os.path.islink(root / "link") and os.path.islink(root / "dangling")
    # listed as a symlink, not followed
    listing = files.list_files(".", str(root))
    assert [(f["filename"], f["mode"][0]) for f in listing["files"]] == [
        ("dangling", "l"),
        ("link", "l"),
    ]


def test_fifo_as_the_final_component_is_refused_promptly(root):
    os.mkfifo(root / "fifo")
    start = time.monotonic()
    assert "not a regular file" in _error(files.upload, "fifo", b"x", str(root))
    assert "not a regular file" in _error(files.download, "fifo", str(root))
    # with a reader on the other end the open succeeds: refused by fstat, nothing written
    reader = os.open(root / "fifo", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert "not a regular file" in _error(files.upload, "fifo", b"x", str(root))
        assert os.read(reader, 10) == b""  # no writer left, nothing was written
    finally:
        os.close(reader)
    assert time.monotonic() - start < 1.0


def test_directories_are_not_files(root):
    (root / "d").mkdir()
    assert _error(files.upload, "d", b"x", str(root)) == "cannot upload 'd': 'd' is a directory"
    assert _error(files.download, "d", str(root)) == "cannot download 'd': it is a directory"
    (root / "f").write_bytes(b"")
    assert _error(files.list_files, "f", str(root)) == "cannot list 'f': 'f' is not a directory"


def test_download_size_limit(root):
    (root / "big").write_bytes(b"x" * (files.MAX_DOWNLOAD + 1))
    (root / "max").write_bytes(b"y" * files.MAX_DOWNLOAD)
    assert _error(files.download, "big", str(root)) == (
        f"cannot download 'big': it is larger than the limit of {files.MAX_DOWNLOAD} bytes"
    )
    assert files.download("max", str(root)) == b"y" * files.MAX_DOWNLOAD
    assert "larger than the limit of 3 bytes" in _error(
        files.download, "max", str(root), max_size=3
    )


def test_listing_limits(root):
    for i in range(5):
        (root / f"f{i}").write_bytes(b"")
    assert len(files.list_files(".", str(root), max_entries=5)["files"]) == 5
    assert "5 entries" in _error(files.list_files, ".", str(root), max_entries=4)


# -- handle: the reply frames ----------------------------------------------------------


def test_handle_replies(root):
    r = str(root)
    assert files.handle({"op": "upload", "rid": 1, "path": "a"}, b"A", r) == (
        {"ev": "reply", "rid": 1, "ok": True},
        b"",
    )
    reply, blob = files.handle({"op": "download", "rid": 2, "path": "a"}, b"", r)
    assert (reply, blob) == ({"ev": "reply", "rid": 2, "ok": True}, b"A")
    reply, blob = files.handle({"op": "files", "rid": 3, "path": "."}, b"", r)
    assert reply["ok"] is True and reply["abspath"] == r and len(reply["files"]) == 1
    reply, blob = files.handle({"op": "download", "rid": 4, "path": "/etc/passwd"}, b"", r)
    assert blob == b""
    assert reply == {
        "ev": "reply",
        "rid": 4,
        "ok": False,
        "error": "cannot download '/etc/passwd': the path must be relative to the work directory",
    }
    reply, _ = files.handle({"op": "files", "rid": 5}, b"", r)
    assert reply["ok"] is False and "must be a string" in reply["error"]


def test_handle_missing_root_is_an_error_not_a_crash(tmp_path):
    reply, _ = files.handle({"op": "files", "rid": 1, "path": "."}, b"", str(tmp_path / "none"))
    assert reply["ok"] is False and "work directory" in reply["error"]


def test_make_dir_and_delete(root):
    files.make_dir("a/b/c", str(root))
    assert (root / "a/b/c").is_dir()
    files.make_dir("a/b", str(root))  # exists: fine
    (root / "a/b/c/f.txt").write_text("x")
    with pytest.raises(files.FileOpError, match="not empty"):
        files.delete("a", False, str(root))
    files.delete("a/b/c/f.txt", False, str(root))
    files.delete("a", True, str(root))
    assert not (root / "a").exists()


def test_delete_removes_a_symlink_not_its_target(root, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "keep.txt").write_text("keep")
    (root / "link").symlink_to(outside)
    (root / "d").mkdir()
    (root / "d/inner").symlink_to(outside)
    files.delete("link", True, str(root))
    files.delete("d", True, str(root))
    assert (outside / "keep.txt").read_text() == "keep"
    assert not (root / "link").exists() and not (root / "d").exists()


def test_make_dir_refuses_a_symlinked_parent(root, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside2")
    (root / "link").symlink_to(outside)
    with pytest.raises(files.FileOpError, match="symbolic link"):
        files.make_dir("link/new", str(root))
    assert not (outside / "new").exists()
