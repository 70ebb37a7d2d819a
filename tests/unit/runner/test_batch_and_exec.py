"""Batch mode in the runner (build and exec steps, interrupts) and exec mode, where pid 1
runs one command."""

from __future__ import annotations

import signal
import time

import pytest
from helpers.runner_host import (
    event_kinds,
    run_exec,
)

pytestmark = pytest.mark.timeout(10)


# -- batch mode (the runner) --------------------------------------------------------


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
    assert event_kinds(run) == ["build-finished", "finished"]
    assert run.exit_code == 128 + signal.SIGTERM


def test_batch_clean_finished(wkernel, work):
    (work / "junk").write_text("x")
    wkernel.send(op="batch", clean="rm junk; echo cleaned", build="pwd", exec="ls")
    run = wkernel.collect()
    assert event_kinds(run) == ["stdout", "clean-finished", "stdout", "build-finished", "finished"]
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


def test_exec_exit_code_propagates():
    assert run_exec(["sh", "-c", "exit 7"]) == (7, b"")


def test_exec_killed_by_signal():
    assert run_exec(["sh", "-c", "kill -9 $$"])[0] == 128 + 9


def test_exec_failure_is_127():
    code, err = run_exec(["no-such-program-here"])
    assert code == 127
    assert err == b"sandbox-exec: no-such-program-here: No such file or directory\n"


def test_exec_forwards_sigterm():
    script = "trap 'exit 3' TERM; while :; do sleep 0.05; done"
    assert run_exec(["sh", "-c", script], send=signal.SIGTERM)[0] == 3


def test_exec_sees_only_standard_fds_and_cwd():
    code, err = run_exec(["sh", "-c", "pwd >&2; ls /proc/self/fd >&2"])
    assert code == 0
    # ls's own directory fd is the 3
    assert err.decode().split() == ["/", "0", "1", "2", "3"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("check", "s.py", 'job: check must be {"path": str}'),
        ("check", {"path": 3}, 'job: check must be {"path": str}'),
        ("inPlace", 1, "job: inPlace must be a boolean"),
    ],
)
def test_a_job_op_with_a_bad_check_or_in_place_is_refused(wkernel, field, value, message):
    """The job op's fields of the last step and the merged compile check are checked
    like the others: an error, and the runner serves on."""
    limits = {"cpu": 1, "wall": 1, "memory": 0, "processes": 0, "fileSize": 0, "output": 100}
    wkernel.send(op="job", command="echo no", **limits, **{field: value})
    assert wkernel.collect(until=("error", "job-finished")).last == {
        "ev": "error",
        "message": message,
    }
    wkernel.send(op="job", command="echo yes", **limits)
    answer = wkernel.collect(until=("job-finished",))
    assert answer.events[-1][1] == b"yes\n"
