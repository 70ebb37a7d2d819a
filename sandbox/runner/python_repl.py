"""The python3 kernel's persistent REPL.

One namespace lives as long as the kernel: a real module named "__main__",
installed as sys.modules["__main__"], so variables, imports, and pickling or
multiprocessing of user classes work across queries. Each query is compiled in
'exec' mode with the file name "<input>" (so, as in the v2 kernels, the value
of a last expression is not echoed) and its source is registered in linecache,
so tracebacks quote the lines.

Console: sys.stdout and sys.stderr are text writers that send each write() as
one "stdout"/"stderr" event, at once (nothing is buffered across calls, and
every event is out before "finished"). Their fileno() is 1 or 2, the pipes pid 1
relays, so a subprocess handed sys.stdout writes there. input(),
getpass.getpass() and sys.stdin send the prompt as stdout, then "waiting-input"
with is_password, and block until the host's "input" op. print() to a
console makes one write() of the whole line instead of one per piece (each
console write waits for pid 1, see `channel`); to other files it is the builtin.

Exit codes (the "exitCode" of "finished"):

* 0 when the code ran to the end;
* 1 on an uncaught exception, including a SyntaxError. The v2 REPL answered 0
  even then (its finished message carried no code at all); 1 is what
  `python3 file.py` gives, and an API client can tell a failed run from a good
  one without parsing stderr;
* SystemExit(n): n; None gives 0; any other value is printed to stderr and
  gives 1. The REPL keeps running: exit() ends the query, not the kernel;
* 130 when the run was interrupted (KeyboardInterrupt), as a shell reports
  SIGINT.

Rich output (runner/media.py): `display(obj)` is a builtin that sends an html
or image item, and matplotlib's backend sends figures on show(); the figures
left open when a query ends are sent then, before "finished".

Uncaught exceptions are printed to stderr with the runner's own frames removed,
so the traceback starts at the user's "<input>".

The rest of the interpreter is made to look like the system python3's REPL:
sys.argv is [""], sys.path is "" plus the system interpreter's own entries
(the runner is forked from a host process that may run in a virtualenv), and
the console streams cannot be closed (exit() closes sys.stdin, and here it
ends a query, not the kernel). A process forked by user code writes its console
output to fd 1/2 and gets EOFError from input(); if it falls off the end of
the query it exits instead of returning to the REPL.

Standard library only: this runs inside the kernel.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import getpass
import linecache
import os
import site
import sys
import traceback
import types

from . import media
from .channel import Channel, InterruptGate
from .python_console import ConsoleReader, ConsoleWriter

FILENAME = "<input>"
# In every kernel's root (sandbox/rootfs/) and its PYTHONPATH: the matplotlib backend.
KERNEL_PYTHONPATH = "/opt/sandbox/python"
EXIT_INTERRUPTED = 130
MAX_COMPLETIONS = 100

_HERE = os.path.dirname(os.path.abspath(__file__))
_RUNNER_PREFIXES = tuple({_HERE + os.sep, os.path.realpath(_HERE) + os.sep})

# The stream objects this process had before the REPL replaced them. They are
# kept alive on purpose: in a forked kernel their fds were closed, and letting
# one be garbage-collected would close whatever file now has that number.
_replaced: list[object] = []
# what the REPL replaces, as the interpreter had it (restore_interpreter)
_ORIGINALS = {"input": builtins.input, "print": builtins.print, "getpass": getpass.getpass}


def _completion_text(code: str) -> str:
    """What completion completes: the dotted name at the end of code ("os.pa")."""
    start = len(code)
    while start and (code[start - 1] in "_." or code[start - 1].isalnum()):
        start -= 1
    return code[start:]


def _is_runner_file(filename: str) -> bool:
    return filename.startswith(_RUNNER_PREFIXES)


def _trim(te: traceback.TracebackException | None, seen: set[int]) -> None:
    """Drop the runner's frames from a traceback and from its chained ones."""
    if te is None or id(te) in seen:
        return
    seen.add(id(te))
    kept = [frame for frame in te.stack if not _is_runner_file(frame.filename)]
    te.stack = traceback.StackSummary.from_list(kept)
    _trim(te.__cause__, seen)
    _trim(te.__context__, seen)
    for sub in getattr(te, "exceptions", None) or ():
        _trim(sub, seen)


def format_user_exception(exc: BaseException) -> str:
    """The traceback of an exception from user code, starting at "<input>"."""
    try:
        te = traceback.TracebackException(type(exc), exc, exc.__traceback__, compact=True)
        _trim(te, set())
        return "".join(te.format())
    except Exception:  # a hostile exception object must not kill the REPL
        return f"{type(exc).__name__}\n"


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


@functools.cache
def kernel_sys_path() -> tuple[str, ...]:
    """sys.path as the system interpreter's REPL has it, made once per process.

    The runner is forked from a host process that may run in a virtualenv, from
    a script directory, with the project on its path: user code must see none
    of that. Kept: "" (the working directory), the entries under the system
    interpreter's prefix, and its site directories, whose .pth files are
    processed here (their import lines run in this process, as at a python3
    start). The spawner calls this before it forks kernels, so that those lines
    and their imports run once, not in every kernel (about 0.6 MiB each). The
    caller's own sys.path is left as it was.
    """
    system = {sys.base_prefix, sys.base_exec_prefix}
    venv = {sys.prefix, sys.exec_prefix} - system
    kept = [""]
    for entry in sys.path:
        full = os.path.abspath(entry) if entry else ""
        if not full or full in kept:
            continue
        if any(_under(full, root) for root in system) and not any(
            _under(full, root) for root in venv
        ):
            kept.append(full)
    saved = sys.path[:]
    try:
        sys.path[:] = kept
        for directory in site.getsitepackages([sys.base_prefix]):
            if directory not in sys.path and os.path.isdir(directory):
                site.addsitedir(directory)
        return tuple(sys.path)
    finally:
        sys.path[:] = saved


def _clean_sys_path() -> None:
    """The kernel's sys.path, as `python3` started in it would have it: "", the
    PYTHONPATH entry, the system's entries, and the user's site-packages if a
    folder is mounted there (~/.local/lib/python3.X/site-packages)."""
    sys.path[:] = kernel_sys_path()
    sys.path.insert(1, KERNEL_PYTHONPATH)
    sys.prefix, sys.exec_prefix = sys.base_prefix, sys.base_exec_prefix
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    user_site = os.path.expanduser(f"~/.local/lib/{version}/site-packages")
    if os.path.isdir(user_site):
        site.addsitedir(user_site)  # its .pth files too
        sys.path.remove(user_site)
        packages = [i for i, entry in enumerate(sys.path) if entry.endswith("-packages")]
        # after the standard library, ahead of the system's packages, as python3 has it
        sys.path.insert(packages[0] if packages else len(sys.path), user_site)


def restore_interpreter() -> None:
    """Undo what the REPL installed in builtins and getpass (input, print, display,
    getpass), for a process forked from the runner to run a program as a fresh
    interpreter would (runner/python_program.py); it makes its own sys.std*."""
    builtins.input = _ORIGINALS["input"]
    builtins.print = _ORIGINALS["print"]
    getpass.getpass = _ORIGINALS["getpass"]
    builtins.__dict__.pop("display", None)


class PythonRepl:
    """The persistent namespace and the console plumbing around it."""

    def __init__(self, channel: Channel, gate: InterruptGate) -> None:
        self._channel = channel
        self._gate = gate
        self._pid = os.getpid()
        self.stdout = ConsoleWriter(channel, "stdout", 1)
        self.stderr = ConsoleWriter(channel, "stderr", 2)
        self.stdin = ConsoleReader(channel)
        self.module = types.ModuleType("__main__")
        self.module.__dict__["__builtins__"] = builtins
        self._install()

    @property
    def namespace(self) -> dict:
        return self.module.__dict__

    def _install(self) -> None:
        _replaced.extend(
            [sys.stdin, sys.stdout, sys.stderr, sys.__stdin__, sys.__stdout__, sys.__stderr__]
        )
        sys.stdin = sys.__stdin__ = self.stdin
        sys.stdout = sys.__stdout__ = self.stdout
        sys.stderr = sys.__stderr__ = self.stderr
        _replaced.append(sys.modules.get("__main__"))
        sys.modules["__main__"] = self.module
        sys.argv = [""]
        _clean_sys_path()

        console_in, console_out = self.stdin, self.stdout

        def input(prompt: object = "") -> str:
            stdin, stdout = sys.stdin, sys.stdout
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            text = str(prompt)
            if text:
                stdout.write(text)
            stdout.flush()
            if stdin is console_in:
                line = console_in.readline(-1, is_password=False)
            else:
                line = stdin.readline()
            if not line:
                raise EOFError("EOF when reading a line")
            return line[:-1] if line.endswith("\n") else line

        def getpass_(prompt: str = "Password: ", stream: object = None) -> str:
            if prompt:
                console_out.write(prompt)
            line = console_in.readline(-1, is_password=True)
            if not line:
                raise EOFError
            return line[:-1] if line.endswith("\n") else line

        original_print = builtins.print
        consoles = (self.stdout, self.stderr)

        def print(
            *args: object,
            sep: str | None = " ",
            end: str | None = "\n",
            file: object = None,
            flush: bool = False,
        ) -> None:
            # print() calls write() once per piece, and every console write waits
            # for pid 1 (see channel): on a console, join the pieces into one write.
            target = sys.stdout if file is None else file
            if not any(target is console for console in consoles):
                return original_print(*args, sep=sep, end=end, file=file, flush=flush)
            if sep is None:
                sep = " "
            elif not isinstance(sep, str):
                raise TypeError(f"sep must be None or a string, not {type(sep).__name__}")
            if end is None:
                end = "\n"
            elif not isinstance(end, str):
                raise TypeError(f"end must be None or a string, not {type(end).__name__}")
            target.write(sep.join([str(arg) for arg in args]) + end)
            if flush:
                target.flush()

        input.__doc__ = builtins.input.__doc__
        print.__doc__ = original_print.__doc__
        media.attach(self._channel)
        builtins.display = media.display  # type: ignore[attr-defined]
        getpass_.__name__ = getpass_.__qualname__ = "getpass"
        getpass_.__doc__ = getpass.getpass.__doc__
        builtins.input = input
        builtins.print = print
        getpass.getpass = getpass_

    def run(self, source: str) -> int:
        """Run one query in the namespace; return its exit code."""
        lines = source.splitlines(keepends=True)
        linecache.cache[FILENAME] = (len(source), None, lines, FILENAME)
        try:
            code = compile(source, FILENAME, "exec", dont_inherit=True)
        except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as e:
            self._report(e)
            return self._end(1)
        rc = 0
        try:
            try:
                self._gate.armed = True
                try:
                    exec(code, self.module.__dict__)
                finally:
                    media.flush_figures()  # the figures left open, as Jupyter shows them
            finally:
                self._gate.armed = False
        except SystemExit as e:
            rc = self._exit_code(e)
        except KeyboardInterrupt as e:
            self._report(e)
            rc = EXIT_INTERRUPTED
        except BaseException as e:
            self._report(e)
            rc = 1
        return self._end(rc)

    def complete(self, code: object, limit: int = MAX_COMPLETIONS) -> list[str]:
        """Completions of the name at the end of code, from the REPL's namespace.

        As rlcompleter gives them (callables end with "("), without duplicates,
        at most `limit`. Completing "obj.attr" evaluates "obj" (rlcompleter
        does): that may run user code (__getattr__), so it runs interruptible,
        and any exception, or an interrupt, gives no completions.
        """
        if not isinstance(code, str):
            return []
        text = _completion_text(code)
        if not text:
            return []
        items: list[str] = []
        try:
            import rlcompleter

            completer = rlcompleter.Completer(self.module.__dict__)
            try:
                self._gate.armed = True
                matches = (
                    completer.attr_matches(text) if "." in text else completer.global_matches(text)
                )
            finally:
                self._gate.armed = False
            for item in matches:
                if isinstance(item, str) and item not in items:
                    items.append(item)
                    if len(items) >= limit:
                        break
        except BaseException:  # user code may raise anything, SystemExit included
            items = []
        self._end(0)  # in a process forked by user code, that process ends here
        return items

    def _end(self, rc: int) -> int:
        if os.getpid() != self._pid:
            # User code forked (os.fork) and this is the child coming back to
            # the REPL: end it here, as a script's child ends at the last line.
            os._exit(rc & 0xFF)
        return rc

    def _report(self, exc: BaseException) -> None:
        sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, exc.__traceback__
        text = format_user_exception(exc)
        self._channel.console("stderr", text.encode("utf-8", "backslashreplace"))

    def _exit_code(self, exc: SystemExit) -> int:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return int(code)
        try:
            text = f"{code}\n"
        except Exception:
            text = "<SystemExit code could not be printed>\n"
        self._channel.console("stderr", text.encode("utf-8", "backslashreplace"))
        return 1
