"""Job steps (runner/job.py, Kernel.run_job) in a real kernel: a program run once
under limits of its own, its output as the bytes it wrote, cut per stream."""

from __future__ import annotations

import signal

import pytest

MiB = 1024 * 1024


def job(kernel, command: str, stdin: bytes = b"", **limits):
    options = {"cpu": 5, "wall": 10, "output": MiB, **limits}
    return kernel.sandbox.run(kernel.k.run_job(command, stdin, **options))


def test_output_input_and_exit_status_as_they_are(kernel):
    step = job(kernel, "cat; printf 'err\\377' >&2; exit 3", b"line1\nline2")
    assert step.stdout == b"line1\nline2" and step.stderr == b"err\xff"
    assert step.exit_code == 3 and step.signal is None and not step.timed_out
    assert step.truncated == (False, False)
    assert step.wall_ms >= 0 and step.cpu_ms >= 0


def test_a_signal_is_reported(kernel):
    step = job(kernel, "kill -SEGV $$")
    assert step.signal == signal.SIGSEGV and step.exit_code is None


def test_cpu_time_ends_a_busy_program(kernel):
    step = job(kernel, "exec python3 -c 'while True: pass'", cpu=1, wall=10)
    assert step.signal in (signal.SIGXCPU, signal.SIGKILL), step
    assert not step.timed_out and step.cpu_ms >= 900


def test_wall_time_ends_a_sleeping_program_and_what_it_started(kernel):
    step = job(kernel, "sleep 100 & sleep 100", wall=0.5)
    assert step.timed_out and step.signal == signal.SIGKILL
    assert (
        kernel.run("import subprocess; print(subprocess.getoutput('pgrep -c sleep'))").stdout
        == "0\n"
    )


def test_a_flood_is_cut_but_read_to_the_end(kernel):
    step = job(kernel, "yes | head -c 3000000; echo done >&2", output=1000)
    assert step.stdout == b"y\n" * 500 and step.truncated == (True, False)
    assert step.stderr == b"done\n" and step.exit_code == 0


def test_memory_and_file_size_limits(kernel):
    code = 'import sys\ntry:\n    b = bytearray(300 * 2**20)\nexcept MemoryError:\n    print("no")'
    step = job(kernel, f"exec python3 -c '{code}'", memory=200 * MiB)
    assert step.stdout == b"no\n", step
    step = job(kernel, "head -c 2000000 /dev/zero > big; echo $?", file_size=MiB)
    assert step.exit_code == 0 and step.stdout != b"0\n", step


def test_large_stdin_is_fed_while_output_is_read(kernel):
    data = bytes(range(256)) * 20000  # 5 MB: more than any pipe holds
    step = job(kernel, "cat", data, output=len(data))
    assert step.stdout == data


def test_bad_ops_are_refused_and_the_kernel_goes_on(kernel):
    with pytest.raises(ValueError, match="cpu and wall must be above 0"):
        job(kernel, "true", cpu=0)
    assert job(kernel, "echo fine").stdout == b"fine\n"


def test_files_come_with_the_step_and_env_replaces_the_environment(kernel):
    step = job(
        kernel, "cat a.txt sub/b.txt; env | sort", b"stdin\n",
        files=[("a.txt", b"A\n"), ("sub/b.txt", b"B\n")],
        env={"ONLY": "this", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert step.stdout == b"A\nB\nONLY=this\nPATH=/usr/bin:/bin\nPWD=/home/work\n", step
    bad = job(kernel, "echo never", files=[("../escape", b"x")])
    assert bad.exit_code == 126 and b"escape" in bad.stderr and bad.stdout == b""


def test_python_steps_run_in_a_fork_as_python3_would(kernel):
    program = (
        "import sys, os\nprint(sys.argv, sys.path[0], os.environ.get('PYTHONPATH'))\n"
        "print(input())\nprint('display' in dir(__builtins__), __name__, __file__)\n"
        "import matplotlib.pyplot as plt\nprint(plt.get_backend())\n"
        "sys.stderr.write('err\\n')\nraise SystemExit(3)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    step = job(
        kernel, "exec python3 -BE prog.py a b", b"typed\n", files=[("prog.py", program.encode())],
        env=env, python={"mode": "run", "path": "prog.py", "args": ["a", "b"]},
    )  # fmt: skip
    expected = (
        b"['prog.py', 'a', 'b'] /home/work None\ntyped\nFalse __main__ /home/work/prog.py\nagg\n"
    )
    assert (step.stdout, step.stderr, step.exit_code) == (expected, b"err\n", 3), step
    failing = job(
        kernel, "exec python3 -BE bad.py", files=[("bad.py", b"def f():\n    return 1 / 0\nf()\n")],
        python={"mode": "run", "path": "bad.py", "args": []},
    )  # fmt: skip
    assert failing.stderr.decode() == (
        'Traceback (most recent call last):\n  File "/home/work/bad.py", line 3, in <module>\n'
        '    f()\n  File "/home/work/bad.py", line 2, in f\n    return 1 / 0\n'
        "           ~~^~~\nZeroDivisionError: division by zero\n"
    ), failing.stderr
    assert failing.exit_code == 1
    syntax = job(
        kernel, "python3 -m py_compile s.py", files=[("s.py", b"print(1\n")],
        python={"mode": "compile", "path": "s.py"},
    )  # fmt: skip
    real = job(kernel, "python3 -m py_compile s.py")
    assert syntax.stderr == real.stderr and b"SyntaxError" in syntax.stderr
    assert syntax.exit_code == real.exit_code == 1


@pytest.mark.parametrize(
    "source",
    [b"print(1\n", b"x = 1\n" * 12000 + b"print(1\n", b"print(1)\n", b"x = 1\n" * 12000],
    ids=["small, error", "large, error", "small, fine", "large, fine"],
)
def test_a_compile_check_says_what_py_compile_says(kernel, source):
    """A small source is compiled in the runner itself, a large one in a fork
    (job.COMPILE_HERE_MAX): either way the status, the message and the .pyc are
    those of python3 -m py_compile, and the runner's directory is as it was."""
    step = job(
        kernel, "python3 -m py_compile s.py", files=[("s.py", source)],
        python={"mode": "compile", "path": "s.py"},
    )  # fmt: skip
    ours = job(kernel, "ls __pycache__ 2>/dev/null; rm -rf __pycache__").stdout
    real = job(kernel, "python3 -m py_compile s.py; s=$?; ls __pycache__ 2>/dev/null; exit $s")
    assert (step.exit_code, step.stderr, ours) == (real.exit_code, real.stderr, real.stdout)
    assert (b"SyntaxError" in step.stderr) == source.endswith(b"print(1\n")
    missing = job(
        kernel, "python3 -m py_compile gone.py", python={"mode": "compile", "path": "gone.py"}
    )
    assert missing.exit_code == 1 and b"gone.py" in missing.stderr
    assert job(kernel, "pwd").stdout == b"/home/work\n"


def test_a_tight_memory_limit_runs_python3_itself(kernel):
    step = job(
        kernel, "exec python3 -BE m.py",
        files=[("m.py", b"import sys\nprint(len(sys.modules) < 100)\n")],
        python={"mode": "run", "path": "m.py", "args": []}, memory=64 * MiB,
    )  # fmt: skip
    assert step.stdout == b"True\n", step  # a fresh interpreter: few modules
