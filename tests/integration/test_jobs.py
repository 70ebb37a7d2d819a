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
