"""The in-kernel runner without namespaces: pid 1 (kernel-init) + the python3 REPL.

Each test forks a process that plays pid 1 (PR_SET_CHILD_SUBREAPER makes
orphans come back to it, as they would to the real pid 1) and calls
`forking.fork_runner` with `main.serve` as the runner. The test is the host: it
speaks protocol frames over the other end of a socketpair.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import signal
import socket
import time
from dataclasses import dataclass, field

import pytest
from helpers.harness import alive, wait_until

from sandbox import kernel_init_build
from sandbox.runner import forking, main, protocol

pytestmark = pytest.mark.timeout(10)

PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def _descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        parent = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    children = [int(c) for c in f.read().split()]
            except OSError:
                continue
            found += children
            stack += children
    return found


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("kernel-init closed the socket")
        data += chunk
    return data


def _recv_flagged(sock: socket.socket) -> tuple[dict, bytes, bool]:
    """One frame from kernel-init: (message, blob, whether pid 1 flagged it)."""
    jword, blen = protocol.HEADER.unpack(_recv_exact(sock, protocol.HEADER.size))
    assert not jword & protocol.INTERRUPT, "kernel-init never sends INTERRUPT"
    jlen = jword & ~protocol.FLAGS
    body = _recv_exact(sock, jlen + blen)
    return protocol.decode_body(body[:jlen]), body[jlen:], bool(jword & protocol.FOR_PID1)


def _wait_pid(pid: int, timeout: float) -> int | None:
    """Reap pid within timeout; its wait status, or None if it is still running."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)


@dataclass
class Run:
    events: list[tuple[dict, bytes, float]] = field(default_factory=list)
    from_pid1: list[bool] = field(default_factory=list)  # each event's FOR_PID1 flag

    @property
    def last(self) -> dict:
        return self.events[-1][0]

    @property
    def exit_code(self) -> int | None:
        return self.last.get("exitCode")

    def text(self, stream: str) -> str:
        return b"".join(blob for m, blob, _ in self.events if m.get("ev") == stream).decode()

    @property
    def stdout(self) -> str:
        return self.text("stdout")

    @property
    def stderr(self) -> str:
        return self.text("stderr")

    @property
    def console(self) -> list[tuple[str, str]]:
        """stdout/stderr items merged as the API merges them (spec 6.6)."""
        items: list[tuple[str, str]] = []
        for message, blob, _ in self.events:
            ev = message.get("ev")
            if ev not in ("stdout", "stderr"):
                continue
            if items and items[-1][0] == ev:
                items[-1] = (ev, items[-1][1] + blob.decode())
            else:
                items.append((ev, blob.decode()))
        return items


_programs: list[kernel_init_build.KernelInit] = []


def _kernel_init() -> kernel_init_build.KernelInit:
    """kernel-init and a helper zip, made once for this module."""
    if not _programs:
        _programs.append(kernel_init_build.prepare())
    return _programs[0]


class Kernel:
    """A forked pid-1 stand-in running the python3 runner, seen from the host side:
    the test's process forks, becomes a subreaper, forks the runner and execs
    kernel-init, as pid 1 does in a real kernel.

    work_dir: the root of pid 1's file operations and the runner's batch steps.
    """

    def __init__(self, work_dir: str | None = None) -> None:
        built = _kernel_init()
        host, kernel = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                host.close()
                _become_subreaper()
                program = forking.KernelInitProgram(built.binary_fd, built.helper_fd, built.python)
                if work_dir is None:
                    forking.fork_runner(main.serve).serve(kernel.detach(), program)
                else:
                    serve = functools.partial(main.serve, work_dir=work_dir)
                    forking.fork_runner(serve).serve(kernel.detach(), program, work_dir=work_dir)
            finally:
                os._exit(99)
        kernel.close()
        self.pid = pid
        self.sock = host
        self.status: int | None = None
        ready = self.collect(until=("ready",))
        assert ready.last == {"ev": "ready"}

    def send(self, blob: bytes = b"", **message: object) -> None:
        self.sock.sendall(protocol.encode_op(message, blob))

    def collect(self, until: tuple[str, ...] = ("finished", "exited"), timeout: float = 5.0) -> Run:
        """Frames until one whose "ev" is in `until` (a "reply" or "exited" only
        counts with pid 1's flag, as for the host)."""
        run = Run()
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            message, blob, from_pid1 = _recv_flagged(self.sock)
            run.events.append((message, blob, time.monotonic()))
            run.from_pid1.append(from_pid1)
            ev = message.get("ev")
            if ev in until and (from_pid1 or ev not in ("reply", "exited")):
                return run

    def query(self, code: str, until: tuple[str, ...] = ("finished", "exited"), **kw) -> Run:
        self.send(op="query", code=code)
        return self.collect(until, **kw)

    def wait(self, timeout: float = 3.0) -> int | None:
        if self.status is None:
            self.status = _wait_pid(self.pid, timeout)
        return self.status

    def close(self) -> None:
        leftovers = _descendants(self.pid)
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.wait(3.0) is None:
            leftovers.append(self.pid)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.status is None:
            self.wait(3.0)


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


# -- the REPL ---------------------------------------------------------------------


def test_ready_then_state_persists(kernel):
    assert kernel.query("x = 41").exit_code == 0
    run = kernel.query("print(x + 1)")
    assert run.stdout == "42\n"
    assert run.last == {"ev": "finished", "exitCode": 0}


def test_namespace_is_a_real_main_module(kernel):
    run = kernel.query(
        "import pickle, sys\n"
        "class P:\n    pass\n"
        "print(type(pickle.loads(pickle.dumps(P()))).__name__, __name__,"
        " sys.modules['__main__'].P is P)\n"
        "print(sorted(k for k in globals() if not k.startswith('__')))"
    )
    assert run.stdout == "P __main__ True\n['P', 'pickle', 'sys']\n"


def test_interpreter_looks_like_the_system_one(kernel):
    project = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    run = kernel.query("import sys\nprint(sys.argv)\nprint(sys.path)")
    argv, path = run.stdout.splitlines()
    assert argv == "['']"
    assert path.startswith("['', ")
    assert project not in path
    assert ".venv" not in path


def test_input_round_trip(kernel):
    run = kernel.query("name = input('Who? ')\nprint('Hi,', name)", until=("waiting-input",))
    assert run.events[-2][:2] == ({"ev": "stdout"}, b"Who? ")
    assert run.last == {"ev": "waiting-input", "is_password": False}
    kernel.send(op="input", data="Alice")
    run = kernel.collect()
    assert run.stdout == "Hi, Alice\n"
    assert run.exit_code == 0


def test_getpass_is_password(kernel):
    run = kernel.query("import getpass\npw = getpass.getpass()", until=("waiting-input",))
    assert run.stdout == "Password: "
    assert run.last == {"ev": "waiting-input", "is_password": True}
    kernel.send(op="input", data="s3cret")
    assert kernel.collect().exit_code == 0
    assert kernel.query("print(len(pw))").stdout == "6\n"


def test_stdin_reads_lines_until_eof(kernel):
    run = kernel.query("import sys\nlines = list(sys.stdin)", until=("waiting-input",))
    assert run.last == {"ev": "waiting-input", "is_password": False}
    kernel.send(op="input", data="a\nb")
    assert kernel.collect(until=("waiting-input",)).last["ev"] == "waiting-input"
    kernel.send(op="input", data="", eof=True)
    assert kernel.collect().exit_code == 0
    assert kernel.query("print(lines)").stdout == "['a\\n', 'b\\n']\n"


def test_output_order_across_python_and_fd_level_writes(kernel):
    run = kernel.query(
        "import os, sys\n"
        "print('a'); os.system('echo b'); print('c', file=sys.stderr); os.write(1, b'd\\n')"
    )
    assert run.console == [("stdout", "a\nb\n"), ("stderr", "c\n"), ("stdout", "d\n")]
    assert run.exit_code == 0


def test_output_order_under_stress(kernel):
    code = (
        "import os, sys\n"
        "for i in range(200):\n"
        "    print('p%d' % i)\n"
        "    os.write(1, b'w%d\\n' % i)\n"
        "    print('e%d' % i, file=sys.stderr)\n"
        "    os.write(2, b'f%d\\n' % i)\n"
    )
    run = kernel.query(code)
    words = [w for _, text in run.console for w in text.split()]
    assert words == [f"{c}{i}" for i in range(200) for c in "pwef"]


def test_subprocess_with_sys_stdout_and_buffer(kernel):
    run = kernel.query(
        "import subprocess, sys\n"
        "subprocess.run(['echo', 'sub'], stdout=sys.stdout, check=True)\n"
        "sys.stdout.buffer.write(b'raw\\n')\n"
        "sys.stdout.write('')\n"
        "print('end')"
    )
    assert run.stdout == "sub\nraw\nend\n"
    # an empty write sends nothing
    assert all(blob for m, blob, _ in run.events if m["ev"] == "stdout")


def test_traceback_starts_at_input(kernel):
    run = kernel.query("def f():\n    return 1 / 0\n\nf()")
    assert run.exit_code == 1
    assert run.stderr.startswith('Traceback (most recent call last):\n  File "<input>", line 4')
    assert 'File "<input>", line 2, in f' in run.stderr
    assert run.stderr.endswith("ZeroDivisionError: division by zero\n")
    for name in ("sandbox", "runner", "python_repl", "main.py", "channel"):
        assert name not in run.stderr


def test_chained_traceback_is_trimmed_too(kernel):
    run = kernel.query("try:\n    int('x')\nexcept ValueError as e:\n    raise KeyError(1) from e")
    assert run.exit_code == 1
    assert run.stderr.count('Traceback (most recent call last):\n  File "<input>"') == 2
    assert "runner" not in run.stderr


def test_syntax_error(kernel):
    run = kernel.query("x = (")
    assert run.exit_code == 1
    assert run.stderr.startswith('  File "<input>", line 1\n    x = (\n        ^\n')
    assert "SyntaxError" in run.stderr
    assert "Traceback" not in run.stderr
    assert kernel.query("print('fine')").stdout == "fine\n"


def test_system_exit(kernel):
    assert kernel.query("raise SystemExit(3)").last == {"ev": "finished", "exitCode": 3}
    assert kernel.query("import sys\nsys.exit()").exit_code == 0
    run = kernel.query("raise SystemExit('bye')")
    assert (run.exit_code, run.stderr) == (1, "bye\n")
    assert kernel.query("exit(4)").exit_code == 4  # exit() closes stdin: must not break it
    run = kernel.query("print('still here')", until=("finished", "exited"))
    assert (run.stdout, run.exit_code) == ("still here\n", 0)


def test_interrupt_busy_loop(kernel):
    kernel.send(op="query", code="while True:\n    pass")
    time.sleep(0.3)
    kernel.send(op="interrupt")
    run = kernel.collect()
    assert run.exit_code == 130
    assert run.stderr.startswith('Traceback (most recent call last):\n  File "<input>"')
    assert run.stderr.endswith("KeyboardInterrupt\n")
    assert kernel.query("print('next')").stdout == "next\n"


def test_interrupt_printing_loop_keeps_the_stream_in_frame(kernel):
    kernel.send(op="query", code="i = 0\nwhile True:\n    print(i)\n    i += 1")
    time.sleep(0.5)
    kernel.send(op="interrupt")
    run = kernel.collect()
    assert run.exit_code == 130
    assert run.stderr.endswith("KeyboardInterrupt\n")
    assert kernel.query("print('alive')").stdout == "alive\n"


def test_interrupt_waiting_input(kernel):
    kernel.query("input()", until=("waiting-input",))
    kernel.send(op="interrupt")
    run = kernel.collect()
    assert run.exit_code == 130
    assert run.stderr.endswith("KeyboardInterrupt\n")


def test_interrupt_while_idle_is_ignored(kernel):
    kernel.send(op="interrupt")
    time.sleep(0.2)
    assert kernel.query("print('ok')").stdout == "ok\n"


def test_output_streams_while_running(kernel):
    sent = time.monotonic()
    run = kernel.query(
        "import time\nfor i in range(6):\n    print(i)\n    time.sleep(0.5)", timeout=8
    )
    times = [t for m, _, t in run.events if m["ev"] == "stdout"]
    assert run.stdout == "0\n1\n2\n3\n4\n5\n"
    assert times[0] - sent < 1.0
    assert times[-1] - times[0] > 2.0


def test_user_code_sees_exactly_fds_0_to_3(kernel):
    run = kernel.query(
        "import os\n"
        "fds = sorted(int(fd) for fd in os.listdir('/proc/self/fd'))\n"
        "print(fds)\n"
        "print([os.readlink(f'/proc/self/fd/{fd}').split(':')[0] for fd in range(4)])\n"
        "print(os.get_inheritable(3))"
    )
    # 4 is the directory listdir itself had open
    assert run.stdout == "[0, 1, 2, 3, 4]\n['/dev/null', 'pipe', 'pipe', 'socket']\nFalse\n"


def test_background_grandchild_does_not_block(kernel):
    start = time.monotonic()
    run = kernel.query("import os\nos.system('sleep 30 &')\nprint('bg')")
    assert run.stdout == "bg\n"
    assert run.exit_code == 0
    assert time.monotonic() - start < 3
    sleepers = [p for p in _descendants(kernel.pid) if alive(p)]
    assert sleepers  # the runner and the orphaned sleep
    kernel.close()
    deadline = time.monotonic() + 3
    while any(alive(p) for p in sleepers) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(alive(p) for p in sleepers)


def test_fork_in_user_code(kernel):
    run = kernel.query(
        "import os\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    print('child')\n"
        "else:\n"
        "    os.waitpid(pid, 0)\n"
        "    print('parent')"
    )
    assert run.stdout == "child\nparent\n"
    assert kernel.query("print(pid > 0)").stdout == "True\n"


def test_unknown_op_and_stray_input(kernel):
    kernel.send(op="dance")
    assert kernel.collect(until=("error",)).last == {
        "ev": "error",
        "message": "unknown op 'dance'",
    }
    kernel.send(op="input", data="nobody asked")
    assert kernel.collect(until=("error",)).last["ev"] == "error"
    assert kernel.query("print(1)").stdout == "1\n"


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


def _helpers(kernel: Kernel) -> list[int]:
    """The file helpers running under a kernel's pid 1 (not zombies)."""
    found = []
    for pid in _descendants(kernel.pid):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"/proc/self/fd/4" in f.read() and alive(pid):
                found.append(pid)
    return found


def test_the_file_helper_starts_on_demand_and_ends_when_idle(wkernel, work):
    assert _helpers(wkernel) == []
    wkernel.send(op="upload", rid=1, path="a.txt", blob=b"a")
    assert wkernel.collect(until=("reply",)).last["ok"] is True
    (helper,) = _helpers(wkernel)
    # idle for 5 s (HELPER_IDLE_MS), it is told to go; the next op starts another
    wait_until(lambda: _helpers(wkernel) == [], "the idle helper to end", timeout=10.0)
    wkernel.send(op="download", rid=2, path="a.txt")
    assert wkernel.collect(until=("reply",)).events[-1][1] == b"a"
    assert _helpers(wkernel) not in ([], [helper])


def test_a_killed_file_helper_fails_its_requests_and_is_replaced(wkernel, work):
    wkernel.send(op="files", rid=1, path=".")
    assert wkernel.collect(until=("reply",)).last["ok"] is True
    (helper,) = _helpers(wkernel)
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


def _frame_code(message: dict, flags: int = 0) -> str:
    """User code that writes `message` as a frame straight to fd 3."""
    body = json.dumps(message)
    return (
        "import os, struct\n"
        f"body = {body!r}.encode()\n"
        f"os.write(3, struct.pack('>II', len(body) | {flags}, 0) + body)\n"
    )


def test_forged_reply_and_exited_from_user_code_lack_pid_1s_flag(wkernel, work):
    forged = {"ev": "reply", "rid": 1, "ok": True, "files": [], "abspath": "/etc"}
    code = _frame_code(forged) + _frame_code({"ev": "exited", "status": 0}) + "print('after')"
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


@pytest.mark.parametrize("flag", [protocol.FOR_PID1, protocol.INTERRUPT])
def test_a_flagged_frame_from_user_code_ends_the_kernel(kernel, flag):
    run = kernel.query(_frame_code({"ev": "reply", "rid": 1, "ok": True}, flag))
    assert [m["ev"] for m, _, _ in run.events] == ["exited"]
    assert run.from_pid1 == [True]
    status = run.last["status"]
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert kernel.wait() is not None


# -- batch mode (the runner) --------------------------------------------------------


def _evs(run: Run) -> list[str]:
    return [m["ev"] for m, _, _ in run.events]


def test_batch_build_then_exec(wkernel, work):
    (work / "prog.sh").write_text("echo built > out.txt\n")
    wkernel.send(
        op="batch", clean="", build="sh prog.sh; echo building", exec="cat out.txt; exit 3"
    )
    build = wkernel.collect(until=("build-finished",))
    assert build.last == {"ev": "build-finished", "exitCode": 0}
    assert build.stdout == "building\n"
    run = wkernel.collect()
    assert run.stdout == "built\n"
    assert run.last == {"ev": "finished", "exitCode": 3}
    assert wkernel.query("print('repl ok')").stdout == "repl ok\n"


def test_batch_build_failure_skips_exec(wkernel, work):
    wkernel.send(op="batch", clean="", build="echo oops >&2; exit 2", exec="touch marker; echo ran")
    build = wkernel.collect(until=("build-finished",))
    assert build.last == {"ev": "build-finished", "exitCode": 2}
    assert build.stderr == "oops\n"
    run = wkernel.collect()
    assert run.last == {"ev": "finished", "exitCode": 127}
    assert run.stderr == "build failed with exit code 2; not running the program\n"
    assert run.stdout == ""
    assert not (work / "marker").exists()


def test_batch_skipped_steps_and_signal_exit(wkernel, work):
    wkernel.send(op="batch", clean="", build="", exec="")
    run = wkernel.collect()
    assert [m for m, _, _ in run.events] == [
        {"ev": "build-finished", "exitCode": 0},
        {"ev": "finished", "exitCode": 0},
    ]
    wkernel.send(op="batch", build="", exec="kill -TERM $$")  # missing clean = skipped
    run = wkernel.collect()
    assert _evs(run) == ["build-finished", "finished"]
    assert run.exit_code == 128 + signal.SIGTERM


def test_batch_clean_finished(wkernel, work):
    (work / "junk").write_text("x")
    wkernel.send(op="batch", clean="rm junk; echo cleaned", build="pwd", exec="ls")
    run = wkernel.collect()
    assert _evs(run) == ["stdout", "clean-finished", "stdout", "build-finished", "finished"]
    events = [(m, blob) for m, blob, _ in run.events]
    assert events[0] == ({"ev": "stdout"}, b"cleaned\n")
    assert events[1][0] == {"ev": "clean-finished", "exitCode": 0}
    assert events[2][1] == f"{work}\n".encode()
    assert run.exit_code == 0
    assert not (work / "junk").exists()


def test_batch_output_is_ahead_of_its_finished_event(wkernel, work):
    wkernel.send(
        op="batch",
        clean="",
        build="seq 1 30000; echo build-err >&2",
        exec="seq 30001 60000; echo exec-err >&2",
    )
    build = wkernel.collect(until=("build-finished",))
    assert build.stdout == "".join(f"{i}\n" for i in range(1, 30001))
    assert build.stderr == "build-err\n"
    run = wkernel.collect()
    assert run.stdout == "".join(f"{i}\n" for i in range(30001, 60001))
    assert run.stderr == "exec-err\n"
    assert run.exit_code == 0


def test_batch_interrupt_ends_the_step(wkernel, work):
    wkernel.send(op="batch", clean="", build="", exec="sleep 30")
    assert wkernel.collect(until=("build-finished",)).last["exitCode"] == 0
    time.sleep(0.3)
    start = time.monotonic()
    wkernel.send(op="interrupt")
    run = wkernel.collect()
    assert run.last == {"ev": "finished", "exitCode": 130}
    assert time.monotonic() - start < 2.0
    assert wkernel.query("print('after')").stdout == "after\n"


def test_batch_second_interrupt_kills_a_step_that_ignores_sigint(wkernel, work):
    wkernel.send(op="batch", clean="", build="", exec="trap '' INT; sleep 30")
    wkernel.collect(until=("build-finished",))
    time.sleep(0.3)
    start = time.monotonic()
    wkernel.send(op="interrupt")
    time.sleep(0.3)
    wkernel.send(op="interrupt")
    assert wkernel.collect().last == {"ev": "finished", "exitCode": 130}
    assert time.monotonic() - start < 2.0


# -- completion (the runner) ------------------------------------------------------------


def _complete(kernel: Kernel, code: str, rid: int = 9) -> Run:
    kernel.send(op="complete", rid=rid, code=code, options={"line": code})
    return kernel.collect(until=("completions",))


def test_complete_builtins_and_user_names(kernel):
    run = _complete(kernel, "pri")
    assert _evs(run) == ["completions"]  # nothing else, e.g. from importing readline
    assert run.last["rid"] == 9
    assert "print(" in run.last["items"]
    assert kernel.query("my_variable_x = 1\nimport os").exit_code == 0
    assert _complete(kernel, "y = my_var").last["items"] == ["my_variable_x"]
    items = _complete(kernel, "os.pat", rid=10).last["items"]
    assert "os.path" in items
    assert _complete(kernel, "").last["items"] == []
    assert len(_complete(kernel, "_").last["items"]) <= 100


def test_complete_survives_hostile_objects(kernel):
    code = "class Evil:\n    def __dir__(self):\n        raise SystemExit(5)\nevil = Evil()"
    assert kernel.query(code).exit_code == 0
    assert _complete(kernel, "evil.x").last["items"] == []
    start = time.monotonic()
    assert _complete(kernel, "a" * 1_000_000 + " ").last["items"] == []
    assert _complete(kernel, "b" * 1_000_000).last["items"] == []
    assert time.monotonic() - start < 2.0
    assert kernel.query("print('ok')").stdout == "ok\n"


# -- exec mode -------------------------------------------------------------------


def _exec(argv: list[str], send: int | None = None) -> tuple[int, bytes]:
    """Run run_as_pid1 in a forked pid-1 stand-in; its exit code and stderr."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.dup2(w, 2)
            _become_subreaper()
            forking.run_as_pid1(argv, {"PATH": "/usr/bin:/bin"}, "/")
        finally:
            os._exit(99)
    os.close(w)
    try:
        if send is not None:
            time.sleep(0.3)
            os.kill(pid, send)
        status = _wait_pid(pid, 5.0)
        if status is None:
            for p in [*_descendants(pid), pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("run_as_pid1 did not exit")
        os.set_blocking(r, False)
        try:
            err = os.read(r, 4096)
        except BlockingIOError:
            err = b""
        return os.waitstatus_to_exitcode(status), err
    finally:
        os.close(r)


def test_exec_exit_code_propagates():
    assert _exec(["sh", "-c", "exit 7"]) == (7, b"")


def test_exec_killed_by_signal():
    assert _exec(["sh", "-c", "kill -9 $$"])[0] == 128 + 9


def test_exec_failure_is_127():
    code, err = _exec(["no-such-program-here"])
    assert code == 127
    assert err == b"sandbox-exec: no-such-program-here: No such file or directory\n"


def test_exec_forwards_sigterm():
    script = "trap 'exit 3' TERM; while :; do sleep 0.05; done"
    assert _exec(["sh", "-c", script], send=signal.SIGTERM)[0] == 3


def test_exec_sees_only_standard_fds_and_cwd():
    code, err = _exec(["sh", "-c", "pwd >&2; ls /proc/self/fd >&2"])
    assert code == 0
    # ls's own directory fd is the 3
    assert err.decode().split() == ["/", "0", "1", "2", "3"]
