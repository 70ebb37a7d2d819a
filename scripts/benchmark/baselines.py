"""The baselines outside the server: bare python3, the same in bubblewrap, the C
build of the batch figure on the host, and idle interpreters' memory."""

from __future__ import annotations

import os
import subprocess
import time

import psutil

from .figures import BARE_GCC, BARE_PYTHON, BWRAP, IDLE_PSS, IDLE_USS, Figure, MiB, ms_since

PYTHON_PASS = ["/usr/bin/python3", "-c", "pass"]
IDLE_PYTHON = ["/usr/bin/python3", "-c", "import sys; print(flush=True); sys.stdin.read()"]
BWRAP_ARGS = [
    "bwrap", "--unshare-all", "--new-session", "--die-with-parent", "--cap-drop", "ALL",
    "--uid", "1000", "--gid", "1000",
    "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
    "--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
    "--tmpfs", "/home/work", "--chdir", "/home/work",
]  # fmt: skip
HELLO_C = b'#include <stdio.h>\nint main(void) { puts("hello world"); return 0; }\n'
GCC = ["gcc", "-Wall", "-o", "main", "main.c", "-lm", "-lrt", "-pthread", "-ldl"]  # as build "*"


def time_commands(commands: list[list[str]], runs: int, cwd: str | None = None) -> list[float]:
    """Milliseconds to run `commands` one after the other, `runs` times."""
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        for argv in commands:
            subprocess.run(
                argv, check=True, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
            )
        samples.append(ms_since(t))
    return samples


def command_baselines(runs: int, tmp: str) -> list[Figure]:
    """Bare python3, the same in bwrap, and the C build of the batch figure on the host."""
    time_commands([PYTHON_PASS], 2)  # warm the page cache
    with open(os.path.join(tmp, "main.c"), "wb") as f:
        f.write(HELLO_C)
    return [
        Figure(BARE_PYTHON, time_commands([PYTHON_PASS], runs)),
        Figure(BWRAP, time_commands([BWRAP_ARGS + PYTHON_PASS], runs), baseline=BARE_PYTHON),
        Figure(BARE_GCC, time_commands([GCC, ["./main"]], runs, cwd=tmp)),
    ]


def idle_python_memory(count: int) -> list[Figure]:
    """USS and PSS (MiB) of `count` bare python3 interpreters idling at once."""
    procs = [
        subprocess.Popen(IDLE_PYTHON, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for _ in range(count)
    ]
    try:
        for proc in procs:
            proc.stdout.readline()  # started
        infos = [psutil.Process(proc.pid).memory_full_info() for proc in procs]
    finally:
        for proc in procs:
            proc.communicate()
    return [
        Figure(IDLE_USS, [i.uss / MiB for i in infos], unit="MiB"),
        Figure(IDLE_PSS, [i.pss / MiB for i in infos], unit="MiB"),
    ]
