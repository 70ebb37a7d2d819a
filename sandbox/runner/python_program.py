"""A python3 program run in a fork of the runner, as `python3 -BE PATH ARGS` or
`python3 -m py_compile PATH` would run it, for the one-shot faces' steps.

Why: a Jobe python3 run is a compile check and a run, two interpreters started
from nothing, 13-27 ms of CPU each, while the runner is an interpreter already
started (and, with the zygote's pre-import, with numpy and pandas loaded). A
fork of it costs about a millisecond. The host asks for this only where it is
the same as the command (runner/job.py falls back to the command when the
step's address-space limit is too tight for a fork of the runner).

What makes the fork a fresh interpreter: the REPL's builtins put back
(python_repl.restore_interpreter), new sys.std* over fds 0-2 as python3 makes
them (stdout block-buffered to a pipe, stderr line-buffered), the environment
the step gives, signals as python3 sets them, sys.argv and sys.path as for a
script (without PYTHONPATH's entry, as -E has it), no bytecode written (-B), a
fresh __main__, the runner's exit handlers dropped, matplotlib (pre-imported
with the kernel's media backend) on Agg as a fresh import would be here, and a
traceback that starts at the program's own frame. What stays: modules already
imported are in sys.modules (an import of them is instant).

Standard library only: this runs inside the kernel.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import importlib.machinery
import io
import os
import py_compile  # here, not in _compile_check: a fork then finds it imported (~1 ms)
import signal
import sys
import threading
import types
from typing import NoReturn

from . import forking
from .python_repl import KERNEL_PYTHONPATH, restore_interpreter

EXIT_FLUSH_FAILED = 120  # python3's status when flushing stdout at exit fails


def check(spec: object) -> str | None:
    """Why a "python" field of a job op is malformed, or None."""
    if not isinstance(spec, dict) or spec.get("mode") not in ("run", "compile"):
        return 'job: python must be {"mode": "run" | "compile", "path": str, "args": [str]}'
    if not isinstance(spec.get("path"), str) or not spec["path"]:
        return "job: python.path must be a non-empty string"
    args = spec.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        return "job: python.args must be a list of strings"
    return None


def main(spec: dict, env: dict[str, str] | None) -> NoReturn:
    """In the forked child, with fds 0-2 in place and its limits set: run, exit."""
    if env is not None:
        forking.set_environment(env)
    forking.reset_signals_for_python()  # as python3 starts
    restore_interpreter()
    _stdio()
    if spec["mode"] == "compile":
        code = _compile_check(spec["path"])
    else:
        code = _run(spec["path"], spec.get("args", []))
    os._exit(code)


def _stream(fd: int, mode: str, errors: str, line_buffering: bool) -> io.TextIOWrapper:
    raw = io.FileIO(fd, mode, closefd=False)
    buffered = io.BufferedReader(raw) if mode == "rb" else io.BufferedWriter(raw)
    return io.TextIOWrapper(
        buffered, encoding="utf-8", errors=errors, newline="\n", line_buffering=line_buffering
    )


def _stdio() -> None:
    sys.stdin = sys.__stdin__ = _stream(0, "rb", "strict", False)
    sys.stdout = sys.__stdout__ = _stream(1, "wb", "strict", False)
    sys.stderr = sys.__stderr__ = _stream(2, "wb", "backslashreplace", True)
    sys.displayhook = sys.__displayhook__
    sys.excepthook = sys.__excepthook__


def compile_here(path: str) -> tuple[int, bytes]:
    """`python3 -m py_compile PATH` done in the runner itself, without a fork: (its
    exit code, its stderr). Compiling runs none of the program's code, so it needs no
    process of its own; the caller keeps it to sources small enough that the
    compiler's time and memory stay small (job.COMPILE_HERE_MAX)."""
    try:
        py_compile.compile(path, doraise=True)
    except py_compile.PyCompileError as e:
        return 1, e.msg.encode("utf-8", "backslashreplace")
    except (OSError, RecursionError, MemoryError) as e:
        return 1, str(e).encode("utf-8", "backslashreplace")
    return 0, b""


def _compile_check(path: str) -> int:
    """`python3 -m py_compile PATH`: the .pyc written, or the error on stderr and 1."""
    try:
        py_compile.compile(path, doraise=True)
    except py_compile.PyCompileError as e:
        sys.stderr.write(e.msg)
        return _finish(1)
    except OSError as e:
        sys.stderr.write(str(e))
        return _finish(1)
    return _finish(0)


def _run(path: str, args: list[str]) -> int:
    full = os.path.abspath(path)
    sys.argv = [path, *args]
    sys.path[:] = [os.path.dirname(full)] + [
        p for p in sys.path if p not in ("", KERNEL_PYTHONPATH)
    ]
    sys.dont_write_bytecode = True
    _agg_backend()
    module = types.ModuleType("__main__")
    module.__file__ = full
    module.__cached__ = None  # type: ignore[attr-defined]
    module.__loader__ = importlib.machinery.SourceFileLoader("__main__", full)
    module.__builtins__ = builtins  # type: ignore[attr-defined]
    sys.modules["__main__"] = module
    atexit._clear()  # the runner's; the program's own run at its end
    try:
        with open(full, "rb") as f:
            source = f.read()
        code = compile(source, full, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as e:
        sys.excepthook(type(e), e, None)  # as python3 shows it: no traceback above it
        return _finish(1)
    except OSError as e:
        sys.stderr.write(f"python3: can't open file {full!r}: [Errno {e.errno}] {e.strerror}\n")
        return _finish(2)
    try:
        exec(code, module.__dict__)
    except SystemExit as e:
        return _finish(_exit_status(e))
    except BaseException as e:
        own = e.__traceback__  # this frame, then the program's: shown from the program's
        e.__traceback__ = own.tb_next if own is not None else None  # the hook shows this one
        sys.excepthook(type(e), e, e.__traceback__)
        if isinstance(e, KeyboardInterrupt):
            _finish(0)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)  # python3 ends by SIGINT itself
        return _finish(1)
    return _finish(0)


def _agg_backend() -> None:
    """matplotlib was pre-imported under the kernel's media backend; a program here
    gets what a fresh import would choose with no display: Agg."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    with contextlib.suppress(Exception):
        if pyplot is not None:
            pyplot.switch_backend("agg")
        elif "matplotlib" in sys.modules:
            sys.modules["matplotlib"].use("agg")


def _exit_status(e: SystemExit) -> int:
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code & 0xFF
    with contextlib.suppress(Exception):
        sys.stderr.write(f"{e.code}\n")
    return 1


def _finish(status: int) -> int:
    """What python3 does at its end: wait for threads, run exit handlers, flush."""
    with contextlib.suppress(Exception):
        threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
    except Exception:
        status = EXIT_FLUSH_FAILED
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    return status
