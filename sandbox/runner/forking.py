"""Forking inside a kernel: how pid 1 forks the runner and becomes kernel-init
(server mode) or forks the command and stays its reaper (exec mode).

The isolation library forks a process that becomes pid 1 of the kernel's pid
namespace (sandbox.pid1), builds the root, drops privileges, then calls one of:

* `fork_runner(child_main)`, then `Runner.serve(host_fd, program)`: server
  mode. Pid 1 forks the runner, then execs kernel-init (kernel_init.c) in its
  own place, which relays between the host socket and the runner:

      host socket  <->  kernel-init  <->  runner: fd 3 (control socket, framed)
                             ^-------------  runner: fd 1, fd 2 (pipes)

  Pid 1 may fork the runner before it has a host (a spare), and before either
  has dropped privileges: child_main(3) then does the runner's own setup.
  `Runner.start(frame)` sends the runner one frame first, before any of the
  host's, to say it may go on.

  The runner sees exactly fds 0 (/dev/null), 1, 2 and 3. Python-level output
  comes as frames on fd 3; fd-level output (os.write, subprocesses, C
  extensions) comes through the pipes, and kernel-init keeps the two in order
  (see kernel_init.c and `channel`). It also does the file operations (through
  a helper running `files.serve`), the interrupt, and reports the runner's end
  with {"ev": "exited"}. Pid 1 is not Python so that an idle kernel holds one
  Python heap, not two.

* `run_as_pid1(argv, env, cwd)`: exec mode (`sandbox-exec`). Pid 1 forks the
  program, forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT to it, reaps everything, and
  exits with the program's status (128 + n if signal n killed it).

Standard library only: this runs inside the kernel.
"""

from __future__ import annotations

import _signal
import _socket
import contextlib
import ctypes
import errno
import fcntl
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NoReturn

from . import files, protocol

_FD_LIMIT = 2**31 - 1  # above any fd: os.closerange then closes "from start on"
KERNEL_INIT = "kernel-init"  # pid 1's name in server mode (argv[0] and comm)
SI_KERNEL = 0x80  # siginfo si_code of a signal sent by the kernel (e.g. a tty's ^C)
EXIT_SETUP_FAILED = 125  # pid 1 itself failed (as `docker run` uses 125)
EXIT_EXEC_FAILED = 127

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


# -- helpers -------------------------------------------------------------------


def _report_crash(prefix: str) -> None:
    with contextlib.suppress(Exception):
        os.write(2, (prefix + traceback.format_exc()).encode("utf-8", "replace"))


def close_fds_from(low: int, keep: Iterable[int] = ()) -> None:
    """Close every fd >= low except those in keep: a close_range(2) per gap, with no
    listing of /proc/self/fd (in a forked kernel, every object made is memory)."""
    start = low
    for fd in sorted(k for k in set(keep) if k >= low):
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, _FD_LIMIT)


def set_environment(wanted: dict[str, str]) -> None:
    """Make os.environ (and so the C environment) exactly `wanted`, touching only
    what differs. In a fresh fork every putenv and every entry os.environ stores
    or drops copies pages it shares with its parent: setting a kernel's dozen
    variables whole was about 70 page copies, where a zygote that holds the
    kernels' base environment (pid1.BASE_ENVIRONMENT) leaves a few to change."""
    for name in [name for name in os.environ if name not in wanted]:
        del os.environ[name]
    for name, value in wanted.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def reset_signals_for_python() -> None:
    """Signal state of a fresh Python process: undo what pid 1 (or its parent) set.

    Through _signal, the module under `signal`: signal's functions turn every
    number and handler into an enum member, and each of those lookups reads
    (and so copies, in a forked kernel) objects all over the enum machinery. A
    handler already right is left alone (Python's own table says so, without a
    syscall): in a fork of the runner, most are.
    """
    _signal.set_wakeup_fd(-1)
    wanted = {
        _signal.SIGINT: _signal.default_int_handler,
        _signal.SIGPIPE: _signal.SIG_IGN,  # as Python sets them at start-up
        _signal.SIGXFSZ: _signal.SIG_IGN,
    }
    for sig in range(1, _signal.NSIG):
        handler = wanted.get(sig, _signal.SIG_DFL)
        if sig in (_signal.SIGKILL, _signal.SIGSTOP) or _signal.getsignal(sig) == handler:
            continue
        with contextlib.suppress(OSError, ValueError):  # the C library's own (32, 33)
            _signal.signal(sig, handler)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, ())


# -- server mode -----------------------------------------------------------------


@dataclass(frozen=True)
class KernelInitProgram:
    """What pid 1 execs in server mode: kernel-init (runner/kernel_init.c, compiled
    and opened by the host) and its file helper, as fds pid 1 holds."""

    binary_fd: int
    helper_fd: int  # a zip of files.py, protocol.py and a __main__ that runs files.serve
    python: str  # the interpreter that runs the helper, as the kernel sees it


class Runner:
    """The runner as pid 1 sees it, between `fork_runner` and `serve`."""

    def __init__(self, pid: int, ctl_fd: int, out_r: int, err_r: int) -> None:
        self.pid = pid
        self.ctl_fd = ctl_fd
        self.out_r = out_r
        self.err_r = err_r

    def alive(self) -> bool:
        """False once the runner has exited (left unreaped: kernel-init reports its end)."""
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:
            return False

    def start(self, frame: bytes) -> None:
        """Send the runner its first frame, encoded (child_main reads it from fd 3
        before anything else)."""
        protocol.write_all(self.ctl_fd, frame)

    def serve(
        self,
        host_fd: int,
        program: KernelInitProgram,
        work_dir: str = files.WORK_DIR,
        status_fd: int | None = None,
    ) -> NoReturn:
        """Exec kernel-init, which relays between the host and the runner until
        either is gone. Raises OSError if it cannot be executed.

        work_dir is the root of the file operations. kernel-init writes "ok\n" to
        status_fd (if given) and closes it once it runs.
        """
        layout = {3: host_fd, 5: self.ctl_fd, 6: self.out_r, 7: self.err_r}
        layout[8] = program.helper_fd
        if status_fd is not None:
            layout[4] = status_fd
        # Move every source above the targets first, so that no dup2 overwrites one.
        moved = {t: fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for t, fd in layout.items()}
        binary = fcntl.fcntl(program.binary_fd, fcntl.F_DUPFD_CLOEXEC, 10)
        for target, fd in moved.items():
            os.dup2(fd, target)
        argv = [KERNEL_INIT, str(self.pid), program.python, work_dir]
        argv.append(str(4 if status_fd is not None else -1))
        os.execve(binary, argv, {})


# fork(2) itself. PyDLL: the calling thread keeps the GIL across the call, so the
# child's interpreter state is the parent's exactly, GIL included.
_libc_fork = ctypes.PyDLL(None, use_errno=True).fork


def lean_fork() -> int:
    """os.fork() without CPython's after-fork work in the child, when the caller
    is single-threaded (the spawner, a kernel's pid 1).

    That work is for threads the child does not have: it reinitialises locks
    other threads may have held and runs the at-fork hooks of threading and
    logging. It runs Python code in the child, and every page that code reads
    is copied: about 0.65 MiB per forked process, for nothing in one thread.
    The one hook that matters with one thread is kept: random's generator is
    reseeded, so that kernels never draw the same numbers. A caller with
    threads (a test process, say) gets os.fork() itself.
    """
    if threading.active_count() != 1:
        return os.fork()
    pid = _libc_fork()
    if pid < 0:
        errno_ = ctypes.get_errno()
        raise OSError(errno_, os.strerror(errno_))
    if pid == 0:
        generator = sys.modules.get("random")
        if generator is not None:
            generator.seed()
    return pid


def fork_runner(child_main: Callable[[int], object]) -> Runner:
    """Fork the runner, which runs child_main(3) with fds 0-3 set up (see the module's
    docstring). Sets pid 1's signals for serving: call it in pid 1 only."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    # Plain fds, not socket objects: an object would close its fd number when
    # collected, and in the runner that number may belong to a user's file. And
    # _socket's pair, not socket's, whose wrapping objects (and _signal below, not
    # signal, whose enums) are more pages that a fresh fork copies as it touches them.
    parent_sock, child_sock = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    ctl_fd, child_ctl_fd = parent_sock.detach(), child_sock.detach()

    pid = lean_fork()
    if pid == 0:
        _become_runner(out_w, err_w, child_ctl_fd, child_main)
    for fd in (out_w, err_w, child_ctl_fd):
        os.close(fd)
    # User code runs as the same uid: it must not be able to stop pid 1 with a
    # signal. (A namespace's pid 1 is already immune to those left at SIG_DFL.)
    for sig in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGPIPE):
        _signal.signal(sig, _signal.SIG_IGN)
    return Runner(pid, ctl_fd, out_r, err_r)


def _become_runner(
    out_w: int, err_w: int, ctl_fd: int, child_main: Callable[[int], object]
) -> NoReturn:
    """In the runner: its own session (and so process group), signals and fds 0-3, then
    run child_main(3)."""
    try:
        reset_signals_for_python()
        os.setsid()
        faulthandler = sys.modules.get("faulthandler")  # not imported here if not loaded
        if faulthandler is not None:
            faulthandler.disable()  # it may hold an fd that is about to be closed
        devnull = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        # Move the sources above 3 first so that no dup2 overwrites one of them.
        sources = [
            fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 4) for fd in (devnull, out_w, err_w, ctl_fd)
        ]
        for target, source in enumerate(sources):
            os.dup2(source, target, inheritable=target != 3)
        close_fds_from(4)
    except BaseException:
        _report_crash("kernel runner setup: ")
        os._exit(EXIT_SETUP_FAILED)
    try:
        child_main(3)
    except SystemExit as e:
        code = e.code
        os._exit(code & 0xFF if isinstance(code, int) else (0 if code is None else 1))
    except BaseException:
        _report_crash("")
        os._exit(1)
    os._exit(0)


# -- exec mode -------------------------------------------------------------------


def run_as_pid1(
    argv: list[str], env: dict[str, str], cwd: str, pass_fds: Iterable[int] = ()
) -> NoReturn:
    """Be pid 1 in exec mode: run argv as a child, forward signals, exit with its status.

    The child stays in pid 1's process group (no setpgid): a terminal's job
    control then treats both as one foreground job, and a ^C from the terminal
    reaches the program directly. Pid 1 forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT
    to the program, except those the kernel itself sent (si_code SI_KERNEL,
    which is how a tty's ^C arrives), because the program got those already.

    The program sees fds 0, 1, 2 and pass_fds; every other fd is closed. Its
    signal dispositions and mask are the defaults. If argv[0] (looked up in
    env["PATH"]) cannot be executed, "sandbox-exec: <argv0>: <reason>" goes to
    fd 2 and the exit status is 127.
    """
    try:
        _run_as_pid1(list(argv), dict(env), cwd, tuple(pass_fds))
    except BaseException:
        _report_crash("sandbox-exec pid 1: ")
    os._exit(EXIT_SETUP_FAILED)


def _run_as_pid1(argv: list[str], env: dict[str, str], cwd: str, pass_fds: tuple[int, ...]):
    waited = {*_FORWARDED, signal.SIGCHLD}
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # never SIG_IGN: that would auto-reap
    # Blocked signals are queued even for pid 1 of a namespace, and sigwaitinfo
    # takes them with their siginfo.
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    pid = os.fork()
    if pid == 0:
        _exec_child(argv, env, cwd, pass_fds)
    while True:
        info = signal.sigwaitinfo(waited)
        if info.si_signo == signal.SIGCHLD:
            status = _reap_main(pid)
            if status is not None:
                code = os.waitstatus_to_exitcode(status)
                os._exit(128 - code if code < 0 else code)
        elif info.si_code != SI_KERNEL:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, info.si_signo)


def _reap_main(main_pid: int) -> int | None:
    return reap_exited().get(main_pid)


def reap_exited() -> dict[int, int]:
    """Collect every exited child without blocking: {pid: wait status}.

    Pid 1 of a kernel and the spawner (a subreaper) both inherit orphans they
    never started, so they reap everything and pick out the pids they know.
    """
    exited = {}
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return exited
        if pid == 0:
            return exited
        exited[pid] = status


def _exec_child(argv: list[str], env: dict[str, str], cwd: str, pass_fds: tuple[int, ...]):
    name = argv[0] if argv else ""
    try:
        for sig in (*_FORWARDED, signal.SIGCHLD, signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        close_fds_from(3, pass_fds)
        for fd in pass_fds:
            os.set_inheritable(fd, True)
    except BaseException:
        _report_crash("sandbox-exec: ")
        os._exit(EXIT_EXEC_FAILED)
    if not name:
        _child_error("", OSError(errno.ENOENT, "empty command"))
    try:
        os.chdir(cwd)
    except OSError as e:
        _child_error(f"cd {cwd}", e)
    try:
        os.execvpe(name, argv, env)
    except OSError as e:
        _child_error(name, e)
    except BaseException:
        _report_crash("sandbox-exec: ")
    os._exit(EXIT_EXEC_FAILED)


def _child_error(what: str, e: OSError) -> NoReturn:
    with contextlib.suppress(OSError):
        reason = e.strerror or str(e)
        where = f"{what}: " if what else ""
        os.write(2, f"sandbox-exec: {where}{reason}\n".encode("utf-8", "replace"))
    os._exit(EXIT_EXEC_FAILED)
