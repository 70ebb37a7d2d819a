"""A job's last step run in the runner's own place (Kernel.run_job(last=True)):
the runner becomes the program, and pid 1 (runner/job_watch.h) cuts its output,
keeps its wall time and reports its status and CPU time. The same answers as a
step in a fork (test_jobs.py), and the kernel ends with the step."""

from __future__ import annotations

import signal

import pytest

from sandbox.kernel_connection import KernelGone

MiB = 1024 * 1024


def last_step(kernel, command: str, stdin: bytes = b"", **limits):
    options = {"cpu": 5, "wall": 10, "output": MiB, **limits}
    return kernel.sandbox.run(kernel.k.run_job(command, stdin, last=True, **options))


def test_output_input_and_exit_status_and_then_the_kernel_ends(kernel):
    step = last_step(kernel, "cat; printf 'err\\377' >&2; exit 3", b"line1\nline2")
    assert step.stdout == b"line1\nline2" and step.stderr == b"err\xff", step
    assert step.exit_code == 3 and step.signal is None and not step.timed_out
    assert step.truncated == (False, False) and step.wall_ms >= 0 and step.cpu_ms >= 0
    with pytest.raises(KernelGone):
        kernel.sandbox.run(kernel.k.run_job("true", b"", cpu=1, wall=1, output=10))


def test_an_earlier_step_leaves_the_runner_to_the_last(kernel):
    first = kernel.sandbox.run(
        kernel.k.run_job("echo built > out.txt", b"", cpu=5, wall=10, output=MiB)
    )
    assert first.exit_code == 0
    assert last_step(kernel, "cat out.txt").stdout == b"built\n"


def test_a_python_step_is_the_runner_itself_with_nothing_of_the_kernel_open(kernel):
    program = (
        "import os, sys\nprint(os.getppid(), sorted(os.listdir('/proc/self/fd')))\n"
        "print(input(), sys.argv, __name__)\nsys.stderr.write('err\\n')\nraise SystemExit(4)\n"
    )
    step = last_step(
        kernel, "exec python3 -BE prog.py a", b"typed\n", files=[("prog.py", program.encode())],
        python={"mode": "run", "path": "prog.py", "args": ["a"]},
    )  # fmt: skip
    # its parent is pid 1; fd 3 is listdir's own: the control socket is closed
    expected = b"1 ['0', '1', '2', '3']\ntyped ['prog.py', 'a'] __main__\n"
    assert (step.stdout, step.stderr, step.exit_code) == (expected, b"err\n", 4), step


def test_a_signal_is_reported(kernel):
    step = last_step(kernel, "kill -SEGV $$")
    assert step.signal == signal.SIGSEGV and step.exit_code is None


def test_cpu_time_ends_a_busy_program_and_counts_only_its_own(kernel):
    """RLIMIT_CPU counts the runner's own time too, in whole seconds: the program
    gets its 2 s (less the runner's few ms), not a third second."""
    step = last_step(kernel, "exec python3 -c 'while True: pass'", cpu=2, wall=10)
    assert step.signal in (signal.SIGXCPU, signal.SIGKILL), step
    assert not step.timed_out and 1700 <= step.cpu_ms < 2500, step


def test_wall_time_ends_a_sleeping_program(kernel):
    step = last_step(kernel, "sleep 100 & sleep 100", wall=0.5)
    assert step.timed_out and step.signal == signal.SIGKILL, step


def test_a_flood_is_cut_but_read_to_the_end(kernel):
    step = last_step(kernel, "yes | head -c 3000000; echo done >&2", output=1000)
    assert step.stdout == b"y\n" * 500 and step.truncated == (True, False), step
    assert step.stderr == b"done\n" and step.exit_code == 0


def test_a_flood_stops_the_program_with_stop_at_output(kernel):
    step = last_step(kernel, "yes", output=1000, stop_at_output=True)
    assert step.stdout == b"y\n" * 500 and step.truncated == (True, False), step
    assert step.signal == signal.SIGKILL and not step.timed_out


def test_large_stdin_comes_whole(kernel):
    data = bytes(range(256)) * 20000  # 5 MB: more than any pipe holds
    step = last_step(kernel, "cat", data, output=len(data))
    assert step.stdout == data


def test_a_check_that_fails_answers_for_the_step_which_does_not_run(kernel):
    step = last_step(
        kernel, "echo ran", files=[("s.py", b"print(1\n")], check="s.py",
        python={"mode": "run", "path": "s.py", "args": []},
    )  # fmt: skip
    assert step.failed_check and step.exit_code == 1 and step.stdout == b"", step
    assert b"SyntaxError" in step.stderr and b"s.py" in step.stderr
    real = kernel.sandbox.run(
        kernel.k.run_job("python3 -m py_compile s.py", b"", cpu=5, wall=10, output=MiB)
    )
    assert step.stderr == real.stderr  # what python3 -m py_compile says


def test_a_check_that_passes_lets_the_step_run(kernel):
    step = last_step(
        kernel, "exec python3 -BE s.py", files=[("s.py", b"print(6 * 7)\n")], check="s.py",
        python={"mode": "run", "path": "s.py", "args": []},
    )  # fmt: skip
    assert not step.failed_check and step.stdout == b"42\n" and step.exit_code == 0, step
