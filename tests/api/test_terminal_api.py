"""The terminal (spec §7.1) against a real server over a real WebSocket: a shell on a
pty inside the kernel, its window size, its exit and the next shell, two shells at
once, what closing it ends, restart, the kernel's limits on what runs in it, and
every refusal and bad message."""

from __future__ import annotations

import base64
import json
import time

import psutil
import pytest
from helpers.api_server import start_server, stop_server
from helpers.kernel_remains import KernelRemains
from helpers.problems import problem
from websockets.exceptions import ConnectionClosed, InvalidStatus

TIMEOUT = 30


def pty_path(kid: str, noun: str = "kernel") -> str:
    return f"/v2/stream/{noun}/{kid}/pty"


class Screen:
    """A terminal client: types, and reads the pty's bytes until it sees something."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.seen = b""

    def type(self, text: str) -> None:
        chars = base64.b64encode(text.encode()).decode()
        self.ws.send(json.dumps({"type": "stdin", "chars": chars}))

    def resize(self, rows: int, cols: int) -> None:
        self.ws.send(json.dumps({"type": "resize", "rows": rows, "cols": cols}))

    def wait_for(self, marker: str, timeout: float = TIMEOUT) -> str:
        """Everything read up to and including `marker` (which is consumed)."""
        deadline = time.monotonic() + timeout
        while marker.encode() not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{marker!r} never came: {self.seen[-2000:]!r}"
            message = json.loads(self.ws.recv(timeout=left))
            assert message["type"] == "out", message
            self.seen += base64.b64decode(message["data"])
        head, _, self.seen = self.seen.partition(marker.encode())
        return (head + marker.encode()).decode(errors="replace")

    def run(self, command: str, timeout: float = TIMEOUT) -> str:
        """Run a shell command; what it printed (the markers keep the echo out)."""
        self.type(f"echo '<'BEGIN'>'; {command}; echo '<'END'>'\n")
        self.wait_for("<BEGIN>")
        return self.wait_for("<END>", timeout)[: -len("<END>")].strip()


def closed_with(ws) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            ws.recv(timeout=TIMEOUT)
    assert info.value.rcvd is not None, "no close frame"
    return info.value.rcvd.code, info.value.rcvd.reason


@pytest.fixture
def kid(api):
    kernel_id = api.create().json()["kernelId"]
    yield kernel_id
    api.request("DELETE", f"/v2/kernel/{kernel_id}")


def query_output(api, kid: str, code: str) -> str:
    results = api.run(kid, code)
    assert results[-1]["status"] == "finished", results
    return "".join(c[1] for r in results for c in r["console"])


def test_a_shell_runs_commands_in_the_kernel(api, kid):
    with api.stream(pty_path(kid)) as ws:
        screen = Screen(ws)
        assert screen.run("echo $((6 * 7))") == "42"
        assert screen.run("pwd; id -un; hostname") == "/home/work\r\nwork\r\nsandbox"
        assert screen.run("test -t 0 && echo tty") == "tty"
        assert screen.run("echo $TERM") == "xterm-256color"


def test_resize_reaches_stty_and_programs_that_ask_for_the_size(api, kid):
    with api.stream(pty_path(kid)) as ws:
        screen = Screen(ws)
        assert screen.run("stty size") == "24 80"
        screen.resize(33, 111)
        assert screen.run("stty size") == "33 111"
        size = "python3 -c 'import os; print(*os.get_terminal_size())'"
        assert screen.run(size) == "111 33"
        # a full-screen program redraws on SIGWINCH: it sees the new size ("ar""med":
        # the echo of the typed line does not match)
        screen.type("""bash -c 'trap "echo winch \\$(stty size)" WINCH; echo ar""med; """
                    """sleep 5 & wait'\n""")  # fmt: skip
        screen.wait_for("armed")
        screen.resize(40, 100)
        screen.wait_for("winch 40 100")


def test_full_screen_programs_draw_to_the_window(api, kid):
    # each program's line ends with a marker echoed once it quits: what is typed
    # while it runs is its own, and a program that quits may flush it
    with api.stream(pty_path(kid)) as ws:
        screen = Screen(ws)
        screen.resize(20, 100)
        screen.type("seq 1000 | less; echo '<'LESS'>'\n")
        page = screen.wait_for("\r\n19")  # a page is the window's rows less the prompt's
        page += screen.wait_for(":")
        assert "\x1b[?1049h" in page, page  # the alternate screen: a full-screen program
        assert "\r\n20\r\n" not in page, page
        screen.type("q")
        screen.wait_for("<LESS>")
        screen.type("top -d 0.3; echo '<'TOP'>'\n")
        screen.wait_for("load average")
        screen.resize(30, 120)
        screen.wait_for("load average")  # redrawn
        screen.type("q")
        screen.wait_for("<TOP>")
        assert screen.run("echo done") == "done"


def test_exit_gives_a_new_shell_and_two_terminals_are_two_shells(api, kid):
    with api.stream(pty_path(kid)) as first, api.stream(pty_path(kid)) as second:
        one, two = Screen(first), Screen(second)
        pid_one, pid_two = one.run("echo $$"), two.run("echo $$")
        assert pid_one != pid_two
        one.type("exit 3\n")
        one.wait_for("[the shell exited (3); a new one started]")
        new_pid = one.run("echo $$")
        assert new_pid not in (pid_one, pid_two)
        assert two.run("echo $$") == pid_two  # the other shell is untouched
        # they share /home/work with each other and with query runs
        one.run("echo from-the-terminal > shared.txt")
        assert two.run("cat shared.txt") == "from-the-terminal"
        assert query_output(api, kid, "print(open('shared.txt').read())") == "from-the-terminal\n\n"
        query_output(api, kid, "open('from-query.txt', 'w').write('q')")
        assert one.run("cat from-query.txt") == "q"


def test_closing_the_socket_ends_the_shells_processes_not_the_kernel(api, kid):
    with api.stream(pty_path(kid)) as ws:
        screen = Screen(ws)
        # the orphaned sleep execs a moment after its subshell returns: look until it has
        pids = screen.run(
            "sleep 1000 & echo $!; (sleep 1001 &) ; "
            "for i in $(seq 200); do pgrep -f '^sleep 1001' && break; sleep 0.05; done"
        )
        pids = [word for word in pids.split() if word.isdigit()]  # not bash's "[1]"
        assert len(set(pids)) == 2, pids
        screen.type("sleep 1002\n")
        time.sleep(0.3)
    code = (
        f"import os\nfor pid in {sorted(set(pids))!r}:\n    print(os.path.exists('/proc/' + pid))"
    )
    deadline = time.monotonic() + 10
    while (out := query_output(api, kid, code)) != "False\nFalse\n" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert out == "False\nFalse\n"
    ps = query_output(api, kid, "import subprocess\nprint(subprocess.getoutput('ps ax'))")
    assert "sleep 100" not in ps


def test_restart_gives_a_shell_in_the_restarted_kernel(api, kid):
    with api.stream(pty_path(kid)) as ws:
        screen = Screen(ws)
        query_output(api, kid, "x = 1\nopen('kept.txt', 'w').write('kept')")
        ws.send(json.dumps({"type": "restart"}))
        assert screen.run("cat kept.txt") == "kept"
    out = query_output(api, kid, "print('x' in globals())")
    assert out == "False\n"  # the interpreter was restarted, the files kept


def test_ping_keeps_the_kernel_alive(api):
    kid = api.create(limits={"idleTimeout": 1500}).json()["kernelId"]
    with api.stream(pty_path(kid)) as ws:
        for _ in range(8):
            ws.send(json.dumps({"type": "ping"}))
            time.sleep(0.4)
        assert Screen(ws).run("echo alive") == "alive"
    # left alone, it idles out (a GET would count as use: look once, after a while)
    time.sleep(3)
    title = problem(api.request("GET", f"/v2/kernel/{kid}"), 404, "kernel-not-found")
    assert "idle timeout" in title


def test_python_kernels_offer_their_interpreter_as_the_shell(api, kid):
    with api.stream(pty_path(kid) + "?shell=python") as ws:
        screen = Screen(ws)
        screen.wait_for(">>> ")
        screen.type("print(6 * 7)\n")
        screen.wait_for("42")


# -- the kernel's limits hold in the terminal ---------------------------------------


def test_a_busy_program_is_stopped_after_the_exec_timeout_of_cpu_time(api):
    kid = api.create(limits={"execTimeout": 2000}).json()["kernelId"]
    with api.stream(pty_path(kid)) as ws:
        screen = Screen(ws)
        out = screen.run("python3 -c 'while True: pass'; echo rc=$?")
        assert out.endswith("rc=152"), out  # 128 + SIGXCPU: RLIMIT_CPU at the exec timeout
        assert screen.run("echo still-here") == "still-here"  # the idle shell lives on
    api.request("DELETE", f"/v2/kernel/{kid}")


def test_cpu_used_in_a_terminal_counts_against_the_kernels_credit(api):
    kid = api.create(limits={"maxCpuCredit": 2000, "execTimeout": 60000}).json()["kernelId"]
    with api.stream(pty_path(kid)) as ws:
        Screen(ws).type("python3 -c 'while True: pass'\n")
        message = json.loads(ws.recv(timeout=TIMEOUT))
        while message["type"] == "out":
            message = json.loads(ws.recv(timeout=TIMEOUT))
        assert message["type"] == "error" and "CPU credit" in message["data"], message
        assert closed_with(ws)[0] == 1000
    problem(api.request("GET", f"/v2/kernel/{kid}"), 404, "kernel-not-found")


TIOCSTI = """import fcntl, termios
try:
    fcntl.ioctl(0, termios.TIOCSTI, b"x")
except OSError as e:
    print("denied", e.errno)
"""


def test_tiocsti_is_still_denied_in_a_terminal(api, kid):
    query_output(api, kid, f"open('tiocsti.py', 'w').write({TIOCSTI!r})")
    with api.stream(pty_path(kid)) as ws:
        assert Screen(ws).run("python3 tiocsti.py") == "denied 1"


def test_a_flood_nobody_reads_is_held_in_bounds(api_server, api, kid):
    server = psutil.Process(api_server.pid)
    with api.stream(pty_path(kid), max_queue=1) as ws:
        screen = Screen(ws)
        before = server.memory_info().rss
        screen.type("head -c 40000000 /dev/zero | tr '\\0' x; echo; echo '<'DONE'>'\n")
        time.sleep(3)  # nobody reads: the kernel is paused once its bounds are reached
        grown = server.memory_info().rss - before
        assert grown < 64 * 1024 * 1024, f"the server grew by {grown} bytes"
        screen.wait_for("<DONE>", timeout=120)  # and every byte still comes
    assert query_output(api, kid, "print('after')") == "after\n"


def test_leftovers_are_gone_with_the_kernel(api_server, api):
    kid = api.create().json()["kernelId"]
    remains = KernelRemains(api_server, kid)
    with api.stream(pty_path(kid)) as ws:
        Screen(ws).run("sleep 1000 & true")
        assert api.request("DELETE", f"/v2/kernel/{kid}").status_code == 204
        message = json.loads(ws.recv(timeout=TIMEOUT))
        while message["type"] == "out":
            message = json.loads(ws.recv(timeout=TIMEOUT))
        assert message == {"type": "error", "data": "the kernel is gone: destroyed by the client"}
    remains.assert_gone()


# -- who may open one -----------------------------------------------------------------


def refused(api, path: str, **options) -> tuple[int, dict]:
    with pytest.raises(InvalidStatus) as info:
        api.stream(path, **options)
    response = info.value.response
    return response.status_code, json.loads(bytes(response.body))


def test_unsigned_from_loopback_is_let_in_as_sorna_client_098_connects(api, kid):
    with api.stream(pty_path(kid), signed=False) as ws:
        assert Screen(ws).run("echo unsigned") == "unsigned"
    status, body = refused(api, pty_path("no-such-kernel"), signed=False)
    assert status == 404 and body["type"].endswith("/kernel-not-found")


def test_signed_terminals_are_scoped_to_their_key(api_server, api, kid):
    other = api_server.client(**api_server.new_key())
    status, body = refused(other, pty_path(kid))
    assert status == 404 and body["type"].endswith("/kernel-not-found")
    wrong = api_server.client(access_key=api.access_key, secret_key="y" * 40)
    status, body = refused(wrong, pty_path(kid))
    assert status == 401 and body["type"].endswith("/auth-failed")


def test_unsigned_terminals_can_be_turned_off(tmp_path):
    config = '[v2]\nunsigned_terminal = "off"\n[limits]\nmax_terminals_per_kernel = 1\n'
    proc, server = start_server(str(tmp_path / "data"), config=config)
    try:
        api = server.client()
        kid = api.create().json()["kernelId"]
        status, body = refused(api, pty_path(kid), signed=False)
        assert status == 401 and body["type"].endswith("/auth-failed")
        with api.stream(pty_path(kid)) as ws:  # signed still works; a second is one too many
            Screen(ws).run("true")
            with api.stream(pty_path(kid)) as extra:
                message = json.loads(extra.recv(timeout=TIMEOUT))
                assert message["type"] == "error" and "at most 1 terminals" in message["data"]
                assert closed_with(extra)[0] == 1008
    finally:
        stop_server(proc)


# -- bad messages ---------------------------------------------------------------------

BAD = [
    ("not json", 1007, "a message must be a JSON object"),
    ('"stdin"', 1008, "a message must be a JSON object"),
    ('{"type": "typewriter"}', 1008, "unknown message type 'typewriter'"),
    ('{"chars": "aGk="}', 1008, "unknown message type 'None'"),
    ('{"type": "stdin", "chars": "!!!not base64"}', 1007, "stdin: chars is not valid base64"),
    ('{"type": "stdin", "chars": 5}', 1008, "stdin: chars must be a base64 string"),
    ('{"type": "resize", "rows": 0, "cols": 80}', 1008, "resize: rows must be an integer"),
    ('{"type": "resize", "rows": 24, "cols": "80"}', 1008, "resize: cols must be an integer"),
    ('{"type": "resize", "rows": 24, "cols": 100000}', 1008, "resize: cols must be an integer"),
]


@pytest.mark.parametrize("text, code, reason", BAD)
def test_a_bad_message_closes_the_terminal_not_the_kernel(api, kid, text, code, reason):
    with api.stream(pty_path(kid)) as ws:
        ws.send(text)
        while (message := json.loads(ws.recv(timeout=TIMEOUT)))["type"] == "out":
            pass
        assert message["type"] == "error" and message["data"].startswith(reason)
        close = closed_with(ws)
        assert close[0] == code and close[1].startswith(reason)
    assert query_output(api, kid, "print('fine')") == "fine\n"


def test_binary_messages_and_an_unknown_shell_are_refused(api, kid):
    with api.stream(pty_path(kid)) as ws:
        ws.send(b"\x03")
        assert closed_with(ws)[0] == 1003
    with api.stream(pty_path(kid) + "?shell=zsh") as ws:
        assert closed_with(ws) == (1008, "shell: one of bash, python")
    c_kernel = api.create("c").json()["kernelId"]
    try:
        with api.stream(pty_path(c_kernel) + "?shell=python") as ws:
            assert closed_with(ws)[0] == 1008
    finally:
        api.request("DELETE", f"/v2/kernel/{c_kernel}")


def test_a_forged_terminal_frame_from_user_code_never_reaches_a_terminal(api, kid):
    forge = (
        "import json, os, struct\n"
        "for ev in ({'ev': 'pty-out', 'tid': 1}, {'ev': 'pty-exit', 'tid': 1, 'status': 0}):\n"
        "    body = json.dumps(ev).encode()\n"
        "    os.write(3, struct.pack('>II', len(body), 6) + body + b'FORGED')\n"
    )
    with api.stream(pty_path(kid)) as ws:
        screen = Screen(ws)
        assert screen.run("echo before") == "before"
        api.run(kid, forge)
        assert screen.run("echo after") == "after"
        assert b"FORGED" not in screen.seen
