"""python3 query mode in a real, jailed kernel (spec §6.2, §6.6)."""

from __future__ import annotations

import asyncio
import time

import psutil


def test_state_persists_across_queries(kernel):
    assert kernel.run("x = 41").exit_code == 0
    assert kernel.run("print(x + 1)").stdout == "42\n"


def test_input_round_trip(kernel):
    result = kernel.query("name = input('Who? ')\nprint('Hi,', name)")
    assert result.status == "waiting-input"
    assert result.options == {"is_password": False}
    assert result.console == [["stdout", "Who? "]]
    result = kernel.feed("Alice")
    assert result.status == "finished"
    assert result.console == [["stdout", "Hi, Alice\n"]]


def test_getpass_reports_password(kernel):
    result = kernel.query("import getpass\nsecret = getpass.getpass('PIN: ')\nprint(len(secret))")
    assert result.status == "waiting-input"
    assert result.options == {"is_password": True}
    assert kernel.feed("1234").console == [["stdout", "4\n"]]


def test_output_order_across_streams_and_fd_level_writes(kernel):
    out = kernel.run(
        "import os, sys\n"
        "print('a')\n"
        "os.system('echo b')\n"
        "print('c', file=sys.stderr)\n"
        "os.write(1, b'd\\n')\n"
        "os.system('echo e >&2')\n"
        "print('f')\n"
    )
    assert out.console == [
        ["stdout", "a\nb\n"],
        ["stderr", "c\n"],
        ["stdout", "d\n"],
        ["stderr", "e\n"],
        ["stdout", "f\n"],
    ]


def test_long_program_streams_continued_chunks(kernel):
    started = time.monotonic()
    out = kernel.run(
        "import time\nfor i in range(5):\n    print('tick', i)\n    time.sleep(1)\nprint('done')\n"
    )
    assert out.statuses[0] == "continued" and out.statuses[-1] == "finished"
    assert out.statuses.count("continued") >= 2, out.statuses
    assert out.stdout == "".join(f"tick {i}\n" for i in range(5)) + "done\n"
    first_chunk = out.console[0][1]
    assert first_chunk.startswith("tick 0\n") and "done" not in first_chunk
    assert time.monotonic() - started >= 5


def test_traceback_starts_at_user_code(kernel):
    out = kernel.run("def f():\n    1 / 0\nf()\n")
    assert out.exit_code == 1
    assert out.stderr.startswith('Traceback (most recent call last):\n  File "<input>"')
    assert "ZeroDivisionError" in out.stderr
    assert "sandbox" not in out.stderr and "runner" not in out.stderr


def test_interrupt_stops_a_busy_loop(kernel):
    result = kernel.query("while True:\n    pass\n", hold=0.5)
    assert result.status == "continued"
    kernel.interrupt()
    result = kernel.collect(hold=5)
    assert result.status == "finished"
    assert result.exit_code == 130
    assert "KeyboardInterrupt" in "".join(text for _, text in result.console)
    assert kernel.run("print('still alive')").stdout == "still alive\n"


def test_kernels_forked_from_one_spawner_do_not_share_random_state(sandbox):
    """Every kernel is a fork of the same spawner (through a spare): each must draw
    its own random numbers, uuid4s and temporary names, not replay the spawner's."""
    code = (
        "import random, tempfile, uuid\n"
        "print(random.random(), uuid.uuid4(), next(tempfile._get_candidate_names()))"
    )
    kernels = [sandbox.kernel(name=f"random-{i}") for i in range(3)]
    try:
        draws = [k.run(code).stdout.split() for k in kernels]
    finally:
        for k in kernels:
            k.destroy()
    assert all(len(d) == 3 for d in draws), draws
    for column in zip(*draws, strict=True):
        assert len(set(column)) == 3, draws


def _file_helper(kernel) -> psutil.Process:
    (helper,) = [
        p for p in psutil.Process(kernel.pid).children() if "/proc/self/fd/4" in p.cmdline()
    ]
    return helper


def test_forged_reply_and_exited_frames_from_user_code_are_ignored(kernel):
    # Only kernel-init flags its frames; the host believes "reply" and "exited"
    # only with the flag, so user code writing them to fd 3 changes nothing.
    reply, _ = kernel.sandbox.run(kernel.k.request("files", path="."))
    helper = _file_helper(kernel)
    helper.suspend()  # so that the next request waits while user code forges its reply
    try:
        pending = asyncio.run_coroutine_threadsafe(
            kernel.k.request("files", path="."), kernel.sandbox.loop
        )
        code = (
            "import json, os, struct\n"
            "for rid in range(1, 10):\n"
            "    for m in ({'ev': 'exited', 'status': 0},\n"
            "              {'ev': 'reply', 'rid': rid, 'ok': True, 'abspath': '/etc'}):\n"
            "        body = json.dumps(m).encode()\n"
            "        os.write(3, struct.pack('>II', len(body), 0) + body)\n"
            "print('after')\n"
        )
        out = kernel.run(code)
        assert out.stdout == "after\n" and out.exit_code == 0
        assert not kernel.k.dead and not pending.done()
    finally:
        helper.resume()
    reply, _ = pending.result(10)
    assert reply["ok"] is True and reply["abspath"] == "/home/work"
    assert kernel.run("print('still')").stdout == "still\n"
