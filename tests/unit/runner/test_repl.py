"""The python3 REPL in the runner, and its completions, driven by a stand-in host
(helpers.runner_host)."""

from __future__ import annotations

import os
import time

import pytest
from helpers.harness import alive
from helpers.runner_host import (
    Kernel,
    Run,
    descendants,
    event_kinds,
)

pytestmark = pytest.mark.timeout(10)


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
    sleepers = [p for p in descendants(kernel.pid) if alive(p)]
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


# -- completion (the runner) ------------------------------------------------------------


def _complete(kernel: Kernel, code: str, rid: int = 9) -> Run:
    kernel.send(op="complete", rid=rid, code=code, options={"line": code})
    return kernel.collect(until=("completions",))


def test_complete_builtins_and_user_names(kernel):
    run = _complete(kernel, "pri")
    assert event_kinds(run) == ["completions"]  # nothing else, e.g. from importing readline
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
