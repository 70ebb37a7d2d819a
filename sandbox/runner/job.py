"""One program run to its end under limits of its own: the step of a one-shot job.

The one-shot faces (Jobe, Piston) ask "run this with this input under these
limits, and tell me what happened": the program's stdout and stderr as the bytes
it wrote, apart, each cut at a size (the program is still read to its end, so a
program that floods runs on until its time is up, as Jobe's runguard does), its
exit status or signal, its CPU and wall time, and whether the wall time ran out.

    {"op": "job", "command": str, "cpu": s, "wall": s, "memory": bytes,
     "processes": n, "fileSize": bytes, "output": bytes,
     "files": [[path, size], ...]?, "env": {name: value}?, "stopAtOutput": bool?,
     "python": {"mode": "run" | "compile", "path": str, "args": [str]}?}
     + blob: the files' bytes in order, then its stdin

The files are written first (relative to the work directory, as uploads are):
the job's sources come with its first step, not through pid 1's file helper,
which a fresh kernel would start for them. `command` runs as `/bin/sh -c
command` in the work directory, in a session of its own, with exactly `env` as
its environment if given (else the runner's), RLIMIT_CPU at `cpu` (SIGXCPU, then
SIGKILL a second later), RLIMIT_AS at `memory`, RLIMIT_NPROC at `processes` and
RLIMIT_FSIZE at `fileSize` (0: not set). With `python`, the same step is run in
a fork of the runner instead (runner/python_program.py), which is the same as
`command` and saves starting an interpreter, unless `memory` leaves a fork of
the runner too little room: then `command` runs. A compile check of a small
source runs in the runner itself (COMPILE_HERE_MAX). At `wall` seconds, or at the
host's interrupt, its session is killed; with `stopAtOutput`, also as soon as
either stream passes `output` (Piston's rule; Jobe's is to read on). The answer:

    {"ev": "job-finished", "status": wait status, "cpuMs": int, "wallMs": int,
     "timedOut": bool, "stdoutBytes": n,
     "truncated": [stdout?, stderr?]}
     + blob: stdout then stderr

A file that cannot be written ends the step before it starts, with status 126
and the reason on stderr.

With `"check": {"path": str}`, the python3 source at that path is compile-checked
in the runner first, as `python3 -m py_compile` would (the one-shot faces ask for
this for a source small enough, COMPILE_HERE_MAX, and save a step's round trip):
if it does not compile, the answer is that check's, flagged `"check": true`, and
the step does not run.

With `"inPlace": true` (a job's last step, after the host set pid 1's watch up:
runner/job_watch.h) the step runs in the runner's own place, not in a fork: the
runner sends {"ev": "job-handover", "cpuMs": the CPU time used so far}, closes
its control socket and becomes the program, and pid 1 cuts the output, keeps the
wall time and answers for it with "exited" (its stdout and stderr come first, as
console events). The kernel serves nothing after it.

Standard library only: this runs inside the kernel.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import selectors
import signal
import time
from collections.abc import Callable
from typing import NoReturn

from . import files, python_program
from .channel import Channel, InterruptGate
from .forking import lean_fork

SHELL = "/bin/sh"
READ_SIZE = 64 * 1024
DRAIN_SECONDS = 0.5  # after the program ended, for what its leftovers still hold open
FORK_HEADROOM = 64 * 1024 * 1024  # address space a fork of the runner needs beyond its own
# A python3 compile check of a source up to this size runs in the runner itself: the
# compiler then takes milliseconds and a few MiB, which the step's limits need not
# bound, and a fork of the runner would cost more than the compile (a third of a
# Jobe python3 run's CPU went to forking and ending processes).
COMPILE_HERE_MAX = 64 * 1024
EXIT_NOT_STARTED = 126
# In place, the runner's own CPU time (tens of ms) counts against RLIMIT_CPU, which
# is whole seconds: rather than a second more, the program may get up to this
# much less than its `cpu` rounded up.
CPU_SLACK = 0.25
FIELDS = {
    "cpu": (int, float), "wall": (int, float), "memory": int, "processes": int,
    "fileSize": int, "output": int,
}  # fmt: skip


def _limits(message: dict, spent: float = 0.0) -> None:
    """Set the step's limits (in the child, before it runs anything). `spent`: the
    CPU seconds this process has used already (in place: the runner's own), which
    RLIMIT_CPU counts too. The limit is whole seconds: the program gets `cpu`
    rounded up, less at most CPU_SLACK of that (a fork starts from nothing)."""
    seconds = max(1, math.ceil(message["cpu"] + spent - (CPU_SLACK if spent else 0)))
    resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))
    for name, limit in (
        ("memory", resource.RLIMIT_AS),
        ("processes", resource.RLIMIT_NPROC),
        ("fileSize", resource.RLIMIT_FSIZE),
    ):
        if message[name]:
            resource.setrlimit(limit, (message[name], message[name]))


def _check(message: dict, blob: bytes) -> str | None:
    if not isinstance(message.get("command"), str):
        return "job: command must be a string"
    for name, kind in FIELDS.items():
        value = message.get(name)
        if isinstance(value, bool) or not isinstance(value, kind) or value < 0:
            return f"job: {name} must be a number >= 0"
    if not message["cpu"] or not message["wall"]:
        return "job: cpu and wall must be above 0"
    listed = message.get("files", [])
    if not isinstance(listed, list) or not all(
        isinstance(f, list) and len(f) == 2 and isinstance(f[0], str)
        and isinstance(f[1], int) and not isinstance(f[1], bool) and f[1] >= 0
        for f in listed
    ):  # fmt: skip
        return "job: files must be [[path, size], ...]"
    if sum(size for _, size in listed) > len(blob):
        return "job: the files' sizes pass the end of the blob"
    env = message.get("env")
    if env is not None and not (
        isinstance(env, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
        and all(k and "=" not in k and "\0" not in k + v for k, v in env.items())
    ):
        return "job: env must be {name: value} of strings"
    for flag in ("stopAtOutput", "inPlace"):
        if not isinstance(message.get(flag, False), bool):
            return f"job: {flag} must be a boolean"
    check = message.get("check")
    if check is not None and not (isinstance(check, dict) and isinstance(check.get("path"), str)):
        return 'job: check must be {"path": str}'
    if "python" in message:
        return python_program.check(message["python"])
    return None


def _exited(pid: int) -> bool:
    """Whether it has ended, without reaping it (os.wait4 takes its status later)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_session(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _own_address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _python_way(message: dict) -> dict | None:
    """The step's "python" field, unless its address-space limit leaves a copy of
    the runner too little room: then python3 itself is started (by `command`)."""
    python = message.get("python")
    if python and message["memory"] and message["memory"] < _own_address_space() + FORK_HEADROOM:
        return None
    return python


def _become_program(
    message: dict, python: dict | None, cwd: str, prepare: Callable[[], None], spent: float = 0.0
) -> NoReturn:
    """`prepare` (which leaves fds 0-2 in place and nothing else open), then turn
    this process into the step's program under its limits. Never returns: if any
    of it fails, the reason goes to stderr and the process exits with 127."""
    try:
        prepare()
        os.chdir(cwd)
        _limits(message, spent)
        if python:
            python_program.main(python, message.get("env"))
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # ignored by Python, not by programs
            signal.signal(sig, signal.SIG_DFL)
        env = message.get("env")
        if env is None:
            os.execv(SHELL, [SHELL, "-c", message["command"]])
        os.execve(SHELL, [SHELL, "-c", message["command"]], env)
    except BaseException as e:
        with contextlib.suppress(BaseException):
            os.write(2, f"job: cannot run {SHELL}: {e}\n".encode())
    finally:
        os._exit(127)


def _start(message: dict, cwd: str) -> tuple[int, int, int, int]:
    """Fork the step's process: (pid, its stdin's, stdout's and stderr's fds here)."""
    python = _python_way(message)
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    stderr_r, stderr_w = os.pipe()
    pid = lean_fork()
    if pid == 0:  # the child: nothing here may return

        def fds_in_place() -> None:
            os.setsid()
            for fd, target in ((stdin_r, 0), (stdout_w, 1), (stderr_w, 2)):
                os.dup2(fd, target)
            os.closerange(3, 1 << 20)  # the control socket above all

        _become_program(message, python, cwd, fds_in_place)
    for fd in (stdin_r, stdout_w, stderr_w):
        os.close(fd)
    return pid, stdin_w, stdout_r, stderr_r


def _hand_over(channel: Channel, message: dict, stdin: bytes, cwd: str) -> bool:
    """Run the step in this process's place: the job's last step, which pid 1
    watches (runner/job_watch.h) because the host set a watch up before the op.

    The CPU time used so far (the runner's, and its earlier steps') goes to the host
    first, in "job-handover", for it to take off pid 1's figure; then closing the
    control socket hands the runner over, and it becomes the program. Its stdin is
    a memfd holding the input, as Jobe gives it a file. Returns False, having done
    nothing, if that memfd cannot be made (the step then runs in a fork)."""
    python = _python_way(message)
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    spent = own.ru_utime + own.ru_stime
    before = spent + children.ru_utime + children.ru_stime
    try:
        stdin_fd = os.memfd_create("stdin", 0)
    except OSError:
        return False
    try:
        with open(stdin_fd, "wb", closefd=False) as f:
            f.write(stdin)
        os.lseek(stdin_fd, 0, os.SEEK_SET)
        os.dup2(stdin_fd, 0)
    except OSError:
        return False
    finally:
        os.close(stdin_fd)
    channel.send({"ev": "job-handover", "cpuMs": int(before * 1000)})

    def control_socket_closed() -> None:
        channel.hand_over()
        os.closerange(3, 1 << 20)

    _become_program(message, python, cwd, control_socket_closed, spent)


def _write_files(message: dict, blob: bytes, cwd: str) -> tuple[bytes, str | None]:
    """Write the op's files; (the blob's rest: stdin, why a file failed or None)."""
    at = 0
    for path, size in message.get("files", []):
        try:
            files.upload(path, blob[at : at + size], cwd)
        except files.FileOpError as e:
            return b"", f"job: {e}\n"
        at += size
    return blob[at:], None


def _finished(channel: Channel, status: int, reply: dict, out: bytes, err: bytes) -> None:
    channel.send_idle(
        {"ev": "job-finished", "status": status, **reply, "stdoutBytes": len(out)}, out + err
    )


def _compiles_here(message: dict, cwd: str) -> bool:
    python = message.get("python")
    if not python or python["mode"] != "compile":
        return False
    try:
        return os.stat(os.path.join(cwd, python["path"])).st_size <= COMPILE_HERE_MAX
    except OSError:
        return False  # the fork reports it as py_compile would


def _compile_here(channel: Channel, path: str, cwd: str, check: bool = False) -> bool:
    """Compile-check `path` here and answer for it; with `check` (a step's "check"),
    answer only if it failed, flagged as the check's. Whether it compiled."""
    start, cpu = time.monotonic(), time.thread_time()
    here = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chdir(cwd)  # the path as the fork has it, so that messages name it the same
        code, err = python_program.compile_here(path)
    finally:
        os.fchdir(here)
        os.close(here)
    if check and code == 0:
        return True
    reply = {
        "cpuMs": int((time.thread_time() - cpu) * 1000),
        "wallMs": int((time.monotonic() - start) * 1000),
        "timedOut": False,
        "truncated": [False, False],
    }
    if check:
        reply["check"] = True
    _finished(channel, code << 8, reply, b"", err)
    return code == 0


def run_job(channel: Channel, gate: InterruptGate, message: dict, blob: bytes, cwd: str) -> None:
    """Run one job op and send its "job-finished" (or an "error" for a bad op)."""
    problem = _check(message, blob)
    if problem:
        channel.send_idle({"ev": "error", "message": problem})
        return
    stdin, failure = _write_files(message, blob, cwd)
    nothing = {
        "cpuMs": 0, "wallMs": 0, "timedOut": False, "truncated": [False, False]
    }  # fmt: skip
    if failure:
        _finished(channel, EXIT_NOT_STARTED << 8, nothing, b"", failure.encode())
        return
    if _compiles_here(message, cwd):
        _compile_here(channel, message["python"]["path"], cwd)
        return
    if message.get("check") and not _compile_here(channel, message["check"]["path"], cwd, True):
        return
    if message.get("inPlace") and _hand_over(channel, message, stdin, cwd):
        return  # not reached: the runner became the program
    cap, stop_at_output = message["output"], message.get("stopAtOutput", False)
    start = time.monotonic()
    try:
        pid, in_fd, out_fd, err_fd = _start(message, cwd)
    except OSError as e:
        _finished(
            channel, EXIT_NOT_STARTED << 8, nothing, b"", f"job: cannot start: {e}\n".encode()
        )
        return
    kept = {out_fd: bytearray(), err_fd: bytearray()}
    cut = {out_fd: False, err_fd: False}
    timed_out = False
    deadline = start + message["wall"]
    draining_until: float | None = None  # once it ended: what is left in the pipes
    with selectors.DefaultSelector() as sel:
        for fd in kept:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        pending = memoryview(stdin)
        if pending:
            os.set_blocking(in_fd, False)
            sel.register(in_fd, selectors.EVENT_WRITE)
        else:
            os.close(in_fd)
            in_fd = -1
        gate.armed = True
        try:
            while sel.get_map():
                now = time.monotonic()
                if draining_until is None and (now >= deadline or _exited(pid)):
                    timed_out = now >= deadline
                    _kill_session(pid)  # and what it left running, holding the pipes
                    draining_until = now + DRAIN_SECONDS
                elif draining_until is not None and now >= draining_until:
                    break
                until = deadline if draining_until is None else draining_until
                for key, _ in sel.select(max(0.0, min(until - now, 0.05))):
                    if key.fd == in_fd:
                        try:
                            pending = pending[os.write(in_fd, pending[:READ_SIZE]) :]
                        except BlockingIOError:
                            continue
                        except BrokenPipeError:  # it stopped reading: the rest is moot
                            pending = pending[:0]
                        if not pending:
                            sel.unregister(in_fd)
                            os.close(in_fd)
                            in_fd = -1
                        continue
                    data = os.read(key.fd, READ_SIZE)
                    if not data:
                        sel.unregister(key.fd)
                        continue
                    room = max(0, cap - len(kept[key.fd]))
                    kept[key.fd] += data[:room]
                    cut[key.fd] = cut[key.fd] or len(data) > room
                    if cut[key.fd] and stop_at_output and draining_until is None:
                        _kill_session(pid)
                        draining_until = time.monotonic() + DRAIN_SECONDS
        except KeyboardInterrupt:  # the host's interrupt: the job ends here
            pass
        finally:
            gate.armed = False
            _kill_session(pid)
    _, status, usage = os.wait4(pid, 0)
    for fd in (in_fd, out_fd, err_fd):
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
    reply = {
        "cpuMs": int((usage.ru_utime + usage.ru_stime) * 1000),
        "wallMs": int((time.monotonic() - start) * 1000),
        "timedOut": timed_out,
        "truncated": [cut[out_fd], cut[err_fd]],
    }
    _finished(channel, status, reply, bytes(kept[out_fd]), bytes(kept[err_fd]))
