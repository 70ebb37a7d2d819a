"""Pid 1 (kernel-init) with the runner: exits, a hostile control socket, file operations
and the file helper, and frames forged by user code."""

from __future__ import annotations

import os
import signal
import time

import pytest
from helpers.harness import wait_until
from helpers.runner_host import (
    file_helpers,
    frame_code,
)

from sandbox.runner import protocol

pytestmark = pytest.mark.timeout(10)


# -- pid 1 ----------------------------------------------------------------------


def test_runner_exit_is_reported(kernel):
    run = kernel.query("import os\nprint('bye')\nos._exit(5)")
    assert run.stdout == "bye\n"
    assert run.last["ev"] == "exited"
    status = run.last["status"]
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 5
    assert kernel.wait() is not None and os.waitstatus_to_exitcode(kernel.wait()) == 0


def test_garbage_on_the_control_socket_ends_the_kernel(kernel):
    run = kernel.query("import os\nos.write(3, b'garbage, not a frame!')\nprint('x')")
    assert run.last["ev"] == "exited"
    status = run.last["status"]
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert kernel.wait() is not None


def test_host_close_ends_init(kernel):
    kernel.sock.close()
    status = kernel.wait(3.0)
    assert status is not None
    assert os.waitstatus_to_exitcode(status) == 0


# -- file operations (pid 1) -------------------------------------------------------


def test_file_ops_round_trip(wkernel, work):
    wkernel.send(op="upload", rid=1, path="dir/sub/a.txt", blob=b"hello\n")
    assert wkernel.collect(until=("reply",)).last == {"ev": "reply", "rid": 1, "ok": True}
    assert (work / "dir" / "sub" / "a.txt").read_bytes() == b"hello\n"
    wkernel.send(op="files", rid=2, path="dir/sub")
    reply = wkernel.collect(until=("reply",)).last
    assert reply["rid"] == 2 and reply["ok"] is True
    assert reply["abspath"] == f"{work}/dir/sub"
    assert [(f["filename"], f["size"], f["mode"][0]) for f in reply["files"]] == [("a.txt", 6, "-")]
    wkernel.send(op="download", rid=3, path="dir/sub/a.txt")
    run = wkernel.collect(until=("reply",))
    assert run.events[-1][:2] == ({"ev": "reply", "rid": 3, "ok": True}, b"hello\n")
    # the runner saw the upload too, and still works
    code = f"print(open({str(work / 'dir/sub/a.txt')!r}).read(), end='')"
    assert wkernel.query(code).stdout == "hello\n"


def test_file_ops_errors_are_replies(wkernel, work):
    wkernel.send(op="upload", rid=5, path="../escape.txt", blob=b"x")
    reply = wkernel.collect(until=("reply",)).last
    assert reply["rid"] == 5 and reply["ok"] is False
    assert "'../escape.txt'" in reply["error"] and ".." in reply["error"]
    assert not (work.parent / "escape.txt").exists()
    wkernel.send(op="download", rid=6, path="missing.txt")
    reply = wkernel.collect(until=("reply",)).last
    assert reply == {
        "ev": "reply",
        "rid": 6,
        "ok": False,
        "error": "cannot download 'missing.txt': 'missing.txt' does not exist",
    }
    wkernel.send(op="files", rid=7, path=None)
    assert wkernel.collect(until=("reply",)).last["ok"] is False
    assert wkernel.query("print('alive')").stdout == "alive\n"


def test_file_ops_answered_while_the_runner_is_busy(wkernel, work):
    wkernel.send(op="query", code="while True:\n    pass")
    time.sleep(0.2)
    start = time.monotonic()
    wkernel.send(op="upload", rid=1, path="busy.txt", blob=b"b")
    assert wkernel.collect(until=("reply",)).last["ok"] is True
    wkernel.send(op="download", rid=2, path="busy.txt")
    assert wkernel.collect(until=("reply",)).events[-1][1] == b"b"
    assert time.monotonic() - start < 1.0
    wkernel.send(op="interrupt")
    assert wkernel.collect().exit_code == 130


def test_the_file_helper_starts_on_demand_and_ends_when_idle(wkernel, work):
    assert file_helpers(wkernel) == []
    wkernel.send(op="upload", rid=1, path="a.txt", blob=b"a")
    assert wkernel.collect(until=("reply",)).last["ok"] is True
    (helper,) = file_helpers(wkernel)
    # idle for 5 s (HELPER_IDLE_MS), it is told to go; the next op starts another
    wait_until(lambda: file_helpers(wkernel) == [], "the idle helper to end", timeout=10.0)
    wkernel.send(op="download", rid=2, path="a.txt")
    assert wkernel.collect(until=("reply",)).events[-1][1] == b"a"
    assert file_helpers(wkernel) not in ([], [helper])


def test_a_killed_file_helper_fails_its_requests_and_is_replaced(wkernel, work):
    wkernel.send(op="files", rid=1, path=".")
    assert wkernel.collect(until=("reply",)).last["ok"] is True
    (helper,) = file_helpers(wkernel)
    os.kill(helper, signal.SIGSTOP)  # as user code could: it runs as the kernel's user
    wkernel.send(op="files", rid=2, path=".")
    wkernel.send(op="download", rid=3, path="missing")
    time.sleep(0.2)
    os.kill(helper, signal.SIGKILL)
    replies = wkernel.collect(until=("reply",))
    more = wkernel.collect(until=("reply",))
    assert [(r["rid"], r["ok"]) for r in (replies.last, more.last)] == [(2, False), (3, False)]
    assert replies.from_pid1[-1] and more.from_pid1[-1]
    assert more.last["error"] == "file operations stopped: the helper exited"
    wkernel.send(op="upload", rid=4, path="b.txt", blob=b"b")
    assert wkernel.collect(until=("reply",)).last == {"ev": "reply", "rid": 4, "ok": True}
    assert (work / "b.txt").read_bytes() == b"b"


def test_forged_reply_and_exited_from_user_code_lack_pid_1s_flag(wkernel, work):
    forged = {"ev": "reply", "rid": 1, "ok": True, "files": [], "abspath": "/etc"}
    code = frame_code(forged) + frame_code({"ev": "exited", "status": 0}) + "print('after')"
    run = wkernel.query(code)
    evs = [m["ev"] for m, _, _ in run.events]
    assert evs == ["reply", "exited", "stdout", "finished"]
    assert run.from_pid1 == [False] * 4
    assert run.stdout == "after\n" and run.exit_code == 0
    # the kernel is intact, and pid 1's own reply for rid 1 carries the flag
    wkernel.send(op="files", rid=1, path=".")
    reply = wkernel.collect(until=("reply",))
    assert reply.from_pid1[-1] is True
    assert reply.last["ok"] is True and reply.last["abspath"] == str(work)
    assert wkernel.query("print('still')").stdout == "still\n"


@pytest.mark.parametrize("flag", [protocol.FOR_PID1, protocol.FOR_PID1 | protocol.NO_ACK])
def test_a_frame_from_user_code_flagged_as_pid_1s_ends_the_kernel(kernel, flag):
    run = kernel.query(frame_code({"ev": "reply", "rid": 1, "ok": True}, flag))
    assert [m["ev"] for m, _, _ in run.events] == ["exited"]
    assert run.from_pid1 == [True]
    status = run.last["status"]
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert kernel.wait() is not None


def test_a_no_ack_frame_from_user_code_goes_on_unflagged_and_unanswered(kernel):
    """NO_ACK is the runner's to set (its events between ops), but user code can
    write fd 3 too: such a frame goes on without the flag (recv_flagged asserts
    that), is not pid 1's, and gets no ack that the runner would miscount."""
    forged = {"ev": "reply", "rid": 1, "ok": True}
    code = frame_code(forged, protocol.NO_ACK) + "print('after')\nprint('and on')"
    run = kernel.query(code)
    assert [m["ev"] for m, _, _ in run.events] == ["reply", "stdout", "stdout", "finished"]
    assert run.from_pid1 == [False] * 4
    assert run.stdout == "after\nand on\n" and run.exit_code == 0
    for _ in range(3):  # acks and frames still pair up
        assert kernel.query("print('x'); import os; os.write(1, b'y')").console == [
            ("stdout", "x\ny")
        ]
