"""One program run to its end under limits of its own: the step of a one-shot job.

The one-shot faces (Jobe, Piston) ask "run this with this input under these
limits, and tell me what happened": the program's stdout and stderr as the bytes
it wrote, apart, each cut at a size (the program is still read to its end, so a
program that floods runs on until its time is up, as Jobe's runguard does), its
exit status or signal, its CPU and wall time, and whether the wall time ran out.

    {"op": "job", "command": str, "cpu": s, "wall": s, "memory": bytes,
     "processes": n, "fileSize": bytes, "output": bytes}  + blob: its stdin

`command` runs as `/bin/sh -c command` in the work directory, in a session of its
own, with RLIMIT_CPU at `cpu` (SIGXCPU, then SIGKILL a second later), RLIMIT_AS
at `memory`, RLIMIT_NPROC at `processes` and RLIMIT_FSIZE at `fileSize` (0: not
set). At `wall` seconds, or at the host's interrupt, its session is killed. The
answer:

    {"ev": "job-finished", "status": wait status, "cpuMs": int, "wallMs": int,
     "timedOut": bool, "stdoutBytes": n, "truncated": [stdout?, stderr?]}
     + blob: stdout then stderr

Standard library only: this runs inside the kernel.
"""

from __future__ import annotations

import contextlib
import os
import resource
import selectors
import signal
import subprocess
import time

from .channel import Channel, InterruptGate

SHELL = "/bin/sh"
READ_SIZE = 64 * 1024
DRAIN_SECONDS = 0.5  # after the program ended, for what its leftovers still hold open
FIELDS = {
    "cpu": (int, float), "wall": (int, float), "memory": int, "processes": int,
    "fileSize": int, "output": int,
}  # fmt: skip


def _limits(cpu: float, memory: int, processes: int, file_size: int):
    def apply() -> None:  # in the child, before exec
        seconds = max(1, int(cpu + 0.999))
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))
        if memory:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if processes:
            resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
        if file_size:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))

    return apply


def _check(message: dict) -> str | None:
    if not isinstance(message.get("command"), str):
        return "job: command must be a string"
    for name, kind in FIELDS.items():
        value = message.get(name)
        if isinstance(value, bool) or not isinstance(value, kind) or value < 0:
            return f"job: {name} must be a number >= 0"
    if not message["cpu"] or not message["wall"]:
        return "job: cpu and wall must be above 0"
    return None


def _exited(pid: int) -> bool:
    """Whether it has ended, without reaping it (os.wait4 takes its status later)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_session(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def run_job(channel: Channel, gate: InterruptGate, message: dict, stdin: bytes, cwd: str) -> None:
    """Run one job op and send its "job-finished" (or an "error" for a bad op)."""
    problem = _check(message)
    if problem:
        channel.send({"ev": "error", "message": problem})
        return
    cap = message["output"]
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            [SHELL, "-c", message["command"]],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own session: killed whole at the end
            preexec_fn=_limits(
                message["cpu"], message["memory"], message["processes"], message["fileSize"]
            ),
        )
    except OSError as e:
        error = f"job: cannot run {SHELL}: {e}\n".encode()
        channel.send(
            {"ev": "job-finished", "status": 127 << 8, "cpuMs": 0, "wallMs": 0,
             "timedOut": False, "stdoutBytes": 0, "truncated": [False, False]},
            error,
        )  # fmt: skip
        return
    out_fd, err_fd, in_fd = proc.stdout.fileno(), proc.stderr.fileno(), proc.stdin.fileno()
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
            proc.stdin.close()
        gate.armed = True
        try:
            while sel.get_map():
                now = time.monotonic()
                if draining_until is None and (now >= deadline or _exited(proc.pid)):
                    timed_out = now >= deadline
                    _kill_session(proc.pid)  # and what it left running, holding the pipes
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
                            proc.stdin.close()
                        continue
                    data = os.read(key.fd, READ_SIZE)
                    if not data:
                        sel.unregister(key.fd)
                        continue
                    room = max(0, cap - len(kept[key.fd]))
                    kept[key.fd] += data[:room]
                    cut[key.fd] = cut[key.fd] or len(data) > room
        except KeyboardInterrupt:  # the host's interrupt: the job ends here
            pass
        finally:
            gate.armed = False
            _kill_session(proc.pid)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = status  # reaped here: Popen must not wait for it again
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        with contextlib.suppress(OSError):
            stream.close()
    out, err = bytes(kept[out_fd]), bytes(kept[err_fd])
    channel.send(
        {
            "ev": "job-finished",
            "status": status,
            "cpuMs": int((usage.ru_utime + usage.ru_stime) * 1000),
            "wallMs": int((time.monotonic() - start) * 1000),
            "timedOut": timed_out,
            "stdoutBytes": len(out),
            "truncated": [cut[out_fd], cut[err_fd]],
        },
        out + err,
    )
