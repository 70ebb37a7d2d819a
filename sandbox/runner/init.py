"""Pid 1 of a kernel: the reaper, and in server mode the relay to the host.

The isolation library forks a process that becomes pid 1 of the kernel's pid
namespace, builds the root, drops privileges, then calls one of:

* `fork_runner(child_main)`, then `Runner.serve(host_fd)`: server mode. Pid 1
  ("B") forks the runner ("C") and relays between the host socket and C:

      host socket  <->  B  <->  C: fd 3 (control socket, framed)
                         ^-----  C: fd 1, fd 2 (pipes; only B reads them)

  B may fork C before it has a host (a spare), and before either has dropped
  privileges: child_main(3) then does C's own setup. `Runner.start(message)`
  sends C one frame first, before any of the host's, to say it may go on.

  C sees exactly fds 0 (/dev/null), 1, 2 and 3. Python-level output comes as
  frames on fd 3; fd-level output (os.write, subprocesses, C extensions) comes
  through the pipes. To keep the two in order, B drains both pipes before it
  forwards each frame from C, and acknowledges each frame ({"op": "ack"}); C's
  writes wait for that ack (see `channel`), so nothing C writes to a pipe after
  a frame can be drained ahead of it.

  File operations ("upload", "files", "download") are done by B itself, as
  the kernel's user in its mount namespace (see `files`): B answers them with
  {"ev": "reply"} even while C runs user code. Since C is untrusted, B drops
  any "reply" frame that comes from C, so user code cannot forge one.

  C is untrusted: user code can write anything to fd 3. A malformed or
  oversized frame, or C closing fd 3, is a protocol violation: B kills C's
  process group and the kernel ends with {"ev": "exited"} once C is reaped.
  When C exits, B forwards what is left, sends {"ev": "exited", "status":
  <wait status>} and exits; the pid namespace takes everything else down. When
  the host socket closes, B exits at once.

* `exec_as_init(argv, env, cwd)`: exec mode (`sandbox-exec`). Pid 1 forks the
  program, forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT to it, reaps everything, and
  exits with the program's status (128 + n if signal n killed it).

Standard library only: this runs inside the kernel.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import select
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import NoReturn

from . import files, protocol

READ_CHUNK = 64 * 1024
# One drain of a pipe reads at most this much: a full pipe (at most 1 MiB,
# Linux's default pipe-max-size) plus a chunk, so a background process that
# floods a pipe cannot keep pid 1 in the drain loop forever.
DRAIN_LIMIT = 1024 * 1024 + READ_CHUNK
ACK = protocol.encode({"op": "ack"})
SI_KERNEL = 0x80  # siginfo si_code of a signal sent by the kernel (e.g. a tty's ^C)
EXIT_SETUP_FAILED = 125  # pid 1 itself failed (as `docker run` uses 125)
EXIT_EXEC_FAILED = 127

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


# -- helpers -------------------------------------------------------------------


def _report_crash(prefix: str) -> None:
    with contextlib.suppress(Exception):
        os.write(2, (prefix + traceback.format_exc()).encode("utf-8", "replace"))


def close_fds_from(low: int, keep: Iterable[int] = ()) -> None:
    """Close every fd >= low except those in keep."""
    try:
        high = max((int(name) for name in os.listdir("/proc/self/fd")), default=low)
    except OSError:
        high = max(os.sysconf("SC_OPEN_MAX"), 1024)
    start = low
    for fd in sorted(k for k in set(keep) if k >= low):
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, high + 1)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _noop(signum: int, frame: object) -> None:
    """SIGCHLD handler: its only job is to make Python write to the wakeup fd."""


def _reset_signals_for_python() -> None:
    """Signal state of a fresh Python process: undo what pid 1 (or its parent) set."""
    signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        if sig == signal.SIGINT:
            handler: object = signal.default_int_handler
        elif sig in (signal.SIGPIPE, signal.SIGXFSZ):
            handler = signal.SIG_IGN  # as Python sets them at start-up
        else:
            handler = signal.SIG_DFL
        with contextlib.suppress(OSError, ValueError):
            if signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


# -- server mode -----------------------------------------------------------------


class Runner:
    """C as pid 1 sees it, between `fork_runner` and `serve`."""

    def __init__(self, pid: int, ctl_fd: int, out_r: int, err_r: int, wake_r: int) -> None:
        self.pid = pid
        self.ctl_fd = ctl_fd
        self.out_r = out_r
        self.err_r = err_r
        self.wake_r = wake_r

    def alive(self) -> bool:
        """False once C has exited (left unreaped: `serve` reports its end)."""
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:
            return False

    def start(self, message: dict) -> None:
        """Send C its first frame (child_main reads it from fd 3 before anything else)."""
        protocol.write_all(self.ctl_fd, protocol.encode(message))

    def serve(self, host_fd: int, work_dir: str = files.WORK_DIR) -> NoReturn:
        """Relay between the host and C until either is gone; then exit.

        work_dir is the root of the file operations pid 1 does itself (`files`).
        """
        try:
            _Relay(
                host_fd, self.pid, self.ctl_fd, self.out_r, self.err_r, self.wake_r, work_dir
            ).run()
        except BaseException:
            _report_crash("kernel init: ")
        os._exit(EXIT_SETUP_FAILED)


def fork_runner(child_main: Callable[[int], object]) -> Runner:
    """Fork C, which runs child_main(3) with fds 0-3 set up (see the module's
    docstring). Sets pid 1's signals for serving: call it in pid 1 only."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    # Plain fds, not socket objects: an object would close its fd number when
    # collected, and in the runner that number may belong to a user's file.
    ctl_fd, child_ctl_fd = parent_sock.detach(), child_sock.detach()
    wake_r, wake_w = os.pipe()
    for fd in (wake_r, wake_w):
        os.set_blocking(fd, False)

    # User code runs as the same uid: it must not be able to stop the relay with
    # a signal. (A namespace's pid 1 is already immune to those left at SIG_DFL.)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, _noop)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})

    pid = os.fork()
    if pid == 0:
        _become_runner(out_w, err_w, child_ctl_fd, child_main)
    for fd in (out_w, err_w, child_ctl_fd):
        os.close(fd)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)  # also done by the child; whichever runs first wins
    return Runner(pid, ctl_fd, out_r, err_r, wake_r)


def _become_runner(
    out_w: int, err_w: int, ctl_fd: int, child_main: Callable[[int], object]
) -> NoReturn:
    """In C: set up fds 0-3 and signals, then run child_main(3)."""
    try:
        _reset_signals_for_python()
        os.setpgid(0, 0)
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


class _RunnerFrames:
    """Splits the runner's byte stream into raw frames and checks each one.

    Like protocol.FrameReader, but it returns the raw bytes only, and does
    not decode the JSON of the two frames that make up most of the traffic.
    Frames the runner may not send (DROPPED_EVENTS: pid 1's own replies) are
    dropped here, unacknowledged: only user code writing to fd 3 makes them.
    """

    DROPPED_EVENTS = frozenset({"reply"})

    _COMMON = frozenset(
        protocol.encode({"ev": ev})[protocol.HEADER.size :] for ev in ("stdout", "stderr")
    )

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def frames(self) -> list[bytes]:
        out = []
        buf = self._buf
        size = protocol.HEADER.size
        while len(buf) >= size:
            jlen, blen = protocol.HEADER.unpack_from(buf)
            if jlen > protocol.MAX_JSON or blen > protocol.MAX_BLOB:
                raise protocol.ProtocolError(f"frame too large ({jlen} + {blen} bytes)")
            total = size + jlen + blen
            if len(buf) < total:
                break
            body = bytes(buf[size : size + jlen])
            if body not in self._COMMON:
                try:
                    message = json.loads(body)
                except (UnicodeDecodeError, ValueError) as e:
                    raise protocol.ProtocolError(f"frame is not JSON: {e}") from None
                if not isinstance(message, dict):
                    raise protocol.ProtocolError("frame is not a JSON object")
                ev = message.get("ev")
                if isinstance(ev, str) and ev in self.DROPPED_EVENTS:
                    del buf[:total]
                    continue
            out.append(bytes(buf[:total]))
            del buf[:total]
        return out


class _Relay:
    """B's event loop in server mode."""

    def __init__(
        self,
        host_fd: int,
        c_pid: int,
        ctl_fd: int,
        out_r: int,
        err_r: int,
        wake_r: int,
        work_dir: str = files.WORK_DIR,
    ):
        self.host_fd = host_fd
        self.work_dir = work_dir
        self.c_pid = c_pid
        self.ctl_fd = ctl_fd
        self.pipes = {out_r: "stdout", err_r: "stderr"}
        self.wake_r = wake_r
        self.c_status: int | None = None
        self.c_reading = True  # False after a protocol violation or EOF on fd 3
        self.c_out = bytearray()  # frames waiting to be written to C
        self.c_events = 0
        self.host_frames = protocol.FrameReader()
        self.c_frames = _RunnerFrames()
        self.poll = select.poll()
        self.pipe_poll = select.poll()  # to ask "anything in the pipes?" in one syscall
        self.child_exited = True  # reap at the start, then after each SIGCHLD

    def run(self) -> NoReturn:
        os.set_blocking(self.host_fd, True)  # writes to the host may block: back-pressure
        os.set_blocking(self.ctl_fd, False)
        for fd in self.pipes:
            os.set_blocking(fd, False)
            self.poll.register(fd, select.POLLIN)
            self.pipe_poll.register(fd, select.POLLIN)
        self.poll.register(self.wake_r, select.POLLIN)
        self.poll.register(self.host_fd, select.POLLIN)
        self._update_ctl()
        while True:
            if self.child_exited:
                self.child_exited = False
                self.reap()
                if self.c_status is not None:
                    self.finish()
            for fd, events in self.poll.poll():
                if fd == self.wake_r:
                    self.drain_wakeups()
                elif fd == self.ctl_fd:
                    if events & select.POLLOUT:
                        self.flush_c()
                    if events & (select.POLLIN | select.POLLHUP | select.POLLERR):
                        self.read_c()
                elif fd in self.pipes:
                    self.read_pipe(fd, READ_CHUNK)
                elif fd == self.host_fd:
                    self.read_host()

    # -- children

    def reap(self) -> None:
        status = reap_exited().get(self.c_pid)
        if status is not None:
            self.c_status = status

    def drain_wakeups(self) -> None:
        self.child_exited = True  # SIGCHLD is the only signal with a handler here
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_r, 256):
                pass

    def finish(self) -> NoReturn:
        """C is gone: forward what it left behind, report its status, exit."""
        if self.c_reading:
            for _ in range(64):  # bounded: a grandchild may still hold fd 3 and spam it
                if not self.read_c(final=True):
                    break
        self.drain_pipes_to_host()
        self.to_host(protocol.encode({"ev": "exited", "status": self.c_status}))
        _killpg(self.c_pid, signal.SIGKILL)
        os._exit(0)

    def violation(self) -> None:
        """C broke the protocol (or closed fd 3): end it; exited follows on reaping."""
        _killpg(self.c_pid, signal.SIGKILL)
        self.c_reading = False
        self.c_out.clear()
        self._update_ctl()

    # -- C -> host

    def read_c(self, final: bool = False) -> bool:
        """Take what C sent; forward each frame after the pipe data before it.

        Returns False when there was nothing more to read.
        """
        try:
            data = os.read(self.ctl_fd, 4 * READ_CHUNK)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            if not final:
                self.violation()
            self.c_reading = False
            return False
        self.c_frames.feed(data)
        try:
            frames = self.c_frames.frames()
        except protocol.ProtocolError:
            if not final:
                self.violation()
            self.c_reading = False
            return False
        if not frames:
            return True
        out: list[bytes] = []
        for raw in frames:
            self.drain_pipes(out)
            out.append(raw)
            self.c_out += ACK
        self.flush_c()  # let C go on while the host write below may block
        self.to_host(b"".join(out))
        return True

    # -- pipes -> host

    def read_pipe(self, fd: int, limit: int, out: list[bytes] | None = None) -> int:
        """Read up to `limit` bytes from one pipe as events; return bytes read."""
        total = 0
        stream = self.pipes[fd]
        while total < limit:
            try:
                data = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self.poll.unregister(fd)
                self.pipe_poll.unregister(fd)
                del self.pipes[fd]
                os.close(fd)
                break
            total += len(data)
            frame = protocol.encode({"ev": stream}, data)
            if out is None:
                self.to_host(frame)
            else:
                out.append(frame)
        return total

    def drain_pipes(self, out: list[bytes]) -> None:
        for fd, _events in self.pipe_poll.poll(0):
            if fd in self.pipes:
                self.read_pipe(fd, DRAIN_LIMIT, out)

    def drain_pipes_to_host(self) -> None:
        out: list[bytes] = []
        self.drain_pipes(out)
        if out:
            self.to_host(b"".join(out))

    def to_host(self, data: bytes) -> None:
        try:
            protocol.write_all(self.host_fd, data)
        except OSError:
            self.host_gone()

    def host_gone(self) -> NoReturn:
        _killpg(self.c_pid, signal.SIGKILL)
        os._exit(0)

    # -- host -> C

    def read_host(self) -> None:
        try:
            data = os.read(self.host_fd, 4 * READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.host_gone()
        if not data:
            self.host_gone()
        self.host_frames.feed(data)
        try:
            frames = self.host_frames.frames()
        except protocol.ProtocolError:
            self.host_gone()
        for message, blob, raw in frames:
            op = message.get("op")
            if op == "interrupt":
                _killpg(self.c_pid, signal.SIGINT)
            elif op == "ack":
                continue  # only pid 1 acknowledges
            elif isinstance(op, str) and op in files.OPS:
                self.file_op(message, blob)
            elif self.c_reading:
                self.c_out += raw
        self.flush_c()

    def file_op(self, message: dict, blob: bytes) -> None:
        """Do a file operation here, whatever C is doing, and reply to the host."""
        try:
            reply, reply_blob = files.handle(message, blob, self.work_dir)
        except Exception as e:  # files.handle catches its own; this is the last resort
            reply = {"ev": "reply", "rid": message.get("rid"), "ok": False, "error": repr(e)}
            reply_blob = b""
        self.to_host(protocol.encode(reply, reply_blob))

    def flush_c(self) -> None:
        while self.c_out:
            try:
                n = os.write(self.ctl_fd, self.c_out)
            except BlockingIOError:
                break
            except OSError:  # C closed its end or died; reaping will tell
                self.c_out.clear()
                break
            del self.c_out[:n]
        self._update_ctl()

    def _update_ctl(self) -> None:
        events = (select.POLLIN if self.c_reading else 0) | (select.POLLOUT if self.c_out else 0)
        if events == self.c_events:
            return
        if events:
            self.poll.register(self.ctl_fd, events)  # registers or modifies
        else:
            self.poll.unregister(self.ctl_fd)
        self.c_events = events


# -- exec mode -------------------------------------------------------------------


def exec_as_init(
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
        _exec_as_init(list(argv), dict(env), cwd, tuple(pass_fds))
    except BaseException:
        _report_crash("sandbox-exec init: ")
    os._exit(EXIT_SETUP_FAILED)


def _exec_as_init(argv: list[str], env: dict[str, str], cwd: str, pass_fds: tuple[int, ...]):
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
