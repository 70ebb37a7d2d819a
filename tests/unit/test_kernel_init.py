"""kernel-init's build cache: compiled once per source version, opened by the
caller, and the binaries of other versions removed without breaking a spawner
that has its own open; and what it forwards of its file helper's frames."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from sandbox import kernel_init_build
from sandbox.runner import files, protocol


def test_a_build_is_compiled_once_and_opened(tmp_path) -> None:
    path, fd = kernel_init_build.build(str(tmp_path))
    again, fd2 = kernel_init_build.build(str(tmp_path))
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
    path, fd = kernel_init_build.build(str(tmp_path))
    try:
        assert sorted(os.listdir(tmp_path)) == [os.path.basename(path), "notes.txt"]
        run = subprocess.run(["/bin/sh", f"/proc/self/fd/{kept}"], pass_fds=[kept], text=True,
                             capture_output=True)  # fmt: skip
        assert run.stdout == "older\n"
    finally:
        os.close(fd)
        os.close(kept)


# -- the file helper's replies ---------------------------------------------------------
#
# A real kernel-init, outside any namespace, with a stand-in helper: kernel-init
# runs whatever its PYTHON argument names, so a script that answers each request
# with a given frame shows what pid 1 forwards. Inside a kernel, user code that got
# hold of the helper (its memory, its socket) could send exactly these frames.

LAUNCHER = """
import os, sys, time
binary, helper, work, host, ctl, out, err, zip_fd = sys.argv[1:]
runner = os.fork()
if runner == 0:  # the runner: waits to be killed
    os.setpgid(0, 0)
    time.sleep(60)
    os._exit(0)
for fd, target in ((host, 3), (ctl, 5), (out, 6), (err, 7), (zip_fd, 8)):
    os.dup2(int(fd), target)
os.execv(binary, [binary, str(runner), helper, work, "-1"])
"""

HELPER = """#!/usr/bin/python3
import os, struct
reply = {reply!r}
while True:
    header = os.read(3, 8)
    if len(header) < 8:
        break
    jlen, blen = struct.unpack(">II", header)
    left = jlen + blen
    while left:
        left -= len(os.read(3, left))
    os.write(3, struct.pack(">II", len(reply), 0) + reply)
"""


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> Iterator[str]:
    path, fd = kernel_init_build.build(str(tmp_path_factory.mktemp("cache")))
    os.close(fd)
    yield path


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "kernel-init closed the host socket"
        data += chunk
    return data


def forwarded(binary: str, tmp_path, reply: bytes) -> tuple[bool, dict]:
    """Send one file operation (rid 7) through kernel-init to a helper that answers
    `reply`; return what the host got: (FOR_PID1 set, the decoded JSON)."""
    helper = tmp_path / "helper"
    helper.write_text(HELPER.format(reply=reply))
    helper.chmod(0o755)
    host, host_end = socket.socketpair()
    ctl, ctl_end = socket.socketpair()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    fds = [host_end.fileno(), ctl_end.fileno(), out_r, err_r]
    args = [binary, str(helper), str(tmp_path), *map(str, fds), str(out_r)]
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, *args], pass_fds=fds)
    try:
        for s in (host_end, ctl_end):
            s.close()
        for fd in (out_r, err_r):
            os.close(fd)
        host.settimeout(10)
        host.sendall(protocol.encode_op({"op": "files", "rid": 7, "path": "."}))
        jword, blen = protocol.HEADER.unpack(_recv_exact(host, protocol.HEADER.size))
        body = _recv_exact(host, (jword & ~protocol.FLAGS) + blen)
        message = protocol.decode_body(body[: jword & ~protocol.FLAGS])
        return bool(jword & protocol.FOR_PID1), message
    finally:
        host.close()  # kernel-init exits at once, and kills the runner
        proc.wait(10)
        ctl.close()
        os.close(out_w)
        os.close(err_w)


@pytest.mark.parametrize(
    "reply",
    [
        b'{"ev":"reply","rid":7,"ok":true}',
        b'{"ev":"reply","rid":7,"ok":false,"error":"cannot list \\"a\\\\u00e9\\""}',
        (
            b'{"ev":"reply","rid":7,"ok":true,"files":[{"mode":"-rw-r--r--","size":12,'
            b'"ctime":1764860000.123,"mtime":1.5e9,"atime":-0.25,'
            b'"filename":"\\",\\"ev\\":\\"exited\\""}],"abspath":"/home/work"}'
        ),
    ],
)
def test_a_helper_reply_is_forwarded_as_it_is(binary, tmp_path, reply) -> None:
    flagged, message = forwarded(binary, tmp_path, reply)
    assert flagged and message == protocol.decode_body(reply)


@pytest.mark.parametrize(
    "reply",
    [
        # the host's json.loads keeps the last of duplicate keys
        b'{"ev":"reply","rid":7,"ok":true,"ev":"exited","status":0}',
        b'{"ev":"reply","rid":7,"ok":true,"\\u0065v":"exited","status":0}',
        b'{"ev":"reply","rid":7,"ok":true,"files":[{"filename":"a","filename":"b"}]}',
        b'{"ev":"reply","rid":7,"ok":true,"status":0}',  # a key no reply has
        b'{"ev":"reply","rid":8,"ok":true}',  # not the pending request
        b'{"ev":"reply","rid":"7","ok":true}',
        b'{"ev":"reply","rid":7}',
        b'{"ev":"reply","rid":7,"ok":true} ',
        b'{"ev":"reply","rid":7,"ok":true,"size":NaN}',
        b'{"ev":"exited","status":0}',
    ],
)
def test_anything_else_from_the_helper_fails_the_request(binary, tmp_path, reply) -> None:
    flagged, message = forwarded(binary, tmp_path, reply)
    assert flagged
    assert message == {
        "ev": "reply",
        "rid": 7,
        "ok": False,
        "error": "file operations stopped: the helper misbehaved",
    }


def test_what_the_real_helper_writes_passes(binary, tmp_path) -> None:
    """A listing of file names that need every kind of escape, as files.handle and
    protocol.encode (the helper's own code) write it."""
    work = tmp_path / "work"
    work.mkdir()
    for name in (b'a"b\\c', b"\x7f\x01\n\t", "é✓😀".encode(), b"\xff\xfe", b'","ev":"exited'):
        (work / os.fsdecode(name)).write_bytes(b"x")
    reply, _ = files.handle({"op": "files", "rid": 7, "path": "."}, b"", root=str(work))
    body = protocol.encode(reply)[protocol.HEADER.size :]
    flagged, message = forwarded(binary, tmp_path, body)
    assert flagged and message == reply and len(message["files"]) == 5
