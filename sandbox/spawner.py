"""The spawner: a single-threaded, pre-warmed process that forks kernels on request.

The server never forks (forking a threaded asyncio process is unsafe, and exec'ing
a fresh interpreter per kernel costs 10-60 ms). It starts one spawner at boot,
which imports the runner, builds the seccomp filter and reads the root skeleton
once, then starts a kernel per request in about a millisecond.

The spawner knows every kernel, so no kernel is forked from it: before its first
request it forks the zygotes (sandbox.zygote: one before the pre-import, one
after; sandbox.spawner_kernels says which kernels come from which), which know
none, and every kernel starts from a spare a zygote forked (sandbox.spare), ahead
of demand or, when none is ready, at the request.

The spawner runs in its own private mount namespace, so the per-kernel
`/home/work` tmpfs mounts it makes never appear in the host's mount table and
vanish with it. It talks to the server over one connected unix socket with the
frames of `sandbox.runner.protocol`; a kernel's socket is handed to the server
with SCM_RIGHTS; no kernel ever holds another kernel's socket. When the server's
connection closes, the spawner kills every kernel and exits, unless kernels
outlive their server (below).

This module is the process: its arguments, its mount namespace and scratch
directory, and its start. What it holds and how it starts and ends kernels is
sandbox.spawner_kernels; its requests and their answers are
sandbox.spawner_requests; how it serves a server, and waits for the next when
kernels outlive their server (`--listen PATH --keep-for S`), is
sandbox.spawner_connections.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import re
import shutil
import signal
import socket
import sys

from . import (
    cgroups,
    environment,
    kernel_init_build,
    kernel_start,
    kernel_uids,
    mounts,
    oom_score,
    pid_namespace,
    preimport,
    spawner_connections,
    spawner_requests,
    syscalls,
)
from .runner import python_repl
from .settings import SandboxSettings
from .spawner_kernels import HANDOVER_ROOT, WORK_ROOT, Spawner


class _StderrOrNothing:
    """sys.stderr that drops what it cannot write: a spawner that keeps kernels
    outlives its server, whose end of our stderr may be gone, and an EPIPE must not
    end the kernels."""

    def __init__(self, stream: object) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)  # type: ignore[attr-defined]
        except (OSError, ValueError):
            return len(text)

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def _not_ready(conn: socket.socket | None, error: str) -> None:
    if conn is not None:
        spawner_requests.reply(conn, None, {"ok": False, "ready": False, "error": error})
    else:
        spawner_connections.say(f"cannot start: {error}")


def _notify_ready(path: str) -> None:
    """Tell systemd (Type=notify) that servers may connect now: sd_notify's READY=1,
    one datagram to `path`, its $NOTIFY_SOCKET (a leading @: an abstract socket)."""
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"READY=1", address)


SCRATCH_PREFIX = "sandbox-spawner-"


def _sweep_stale_scratch(root: str) -> None:
    """Remove the scratch directories of spawners that were killed: their tmpfs
    lived in their own mount namespace, so here each is an empty directory."""
    pattern = re.compile(rf"^{SCRATCH_PREFIX}(\d+)-")
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            m = pattern.match(entry.name)
            if m and not os.path.exists(f"/proc/{m.group(1)}"):
                with contextlib.suppress(OSError):
                    os.rmdir(entry.path)


def main() -> None:
    """Entry point of the spawner process: `python -m sandbox.spawner FD [--spares N]
    [--start-timeout S] [--uids FIRST:COUNT] [--cgroup-layout L] [--preimport M]`, FD connected to
    the server; N spares kept ready (default: [sandbox] spare_processes), S seconds before a kernel
    start is given up on, the kernels' uids (sandbox.kernel_uids), the cgroup
    layout forced (v2, hybrid, v1, none) or auto, detected (sandbox.cgroups); M the
    modules python3 kernels start with (sandbox.preimport)."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.spawner")
    parser.add_argument("fd", type=int, nargs="?", help="none: a service (needs --listen)")
    parser.add_argument("--spares", type=int, default=SandboxSettings().spare_processes)
    parser.add_argument("--start-timeout", type=float, default=kernel_start.START_TIMEOUT)
    uids = kernel_uids.UidRange.parse
    parser.add_argument("--uids", type=uids, default=kernel_uids.DEFAULT_RANGE)
    layouts = ["auto", *(layout.value for layout in cgroups.Layout)]
    parser.add_argument("--cgroup-layout", choices=layouts, default="auto")
    from_env = environment.preimport_from_environment()
    default_preimport = SandboxSettings().preimport if from_env is None else from_env
    parser.add_argument("--preimport", default=default_preimport)
    parser.add_argument("--listen", help="a unix socket for the next server (see serve)")
    parser.add_argument("--keep-for", type=float, default=0.0)
    args = parser.parse_args()
    if args.fd is None and not (args.listen and args.keep_for > 0):
        parser.error("without FD (a service), --listen and --keep-for are needed")
    if args.listen:
        sys.stderr = _StderrOrNothing(sys.stderr)  # type: ignore[assignment]
    conn = None if args.fd is None else socket.socket(fileno=args.fd)
    notify = os.environ.pop("NOTIFY_SOCKET", "")  # not for the zygotes to inherit
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when we stop
    pid_namespace.become_subreaper()
    oom_score.set_own(oom_score.SERVICE)  # a kernel goes first (sandbox.oom_score)
    syscalls.unshare(syscalls.CLONE_NEWNS)
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    # Every kernel is a fork of this process: what every python3 kernel does first
    # (the system site's .pth files) is done here once, before the modules a kernel
    # must forget are listed (kernel_inputs.Environment, host_modules).
    python_repl.kernel_sys_path()
    tmp = environment.tmpdir_from_environment()
    _sweep_stale_scratch(tmp)
    scratch = os.path.join(tmp, f"{SCRATCH_PREFIX}{os.getpid()}-{os.urandom(6).hex()}")
    os.mkdir(scratch, 0o700)
    syscalls.mount(
        "tmpfs", scratch, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, "size=64m,mode=700"
    )
    try:
        os.mkdir(f"{scratch}/{WORK_ROOT}", 0o755)
        mounts.make_handover_root(f"{scratch}/{HANDOVER_ROOT}")
        try:
            manager = cgroups.detect(None if args.cgroup_layout == "auto" else args.cgroup_layout)
            spawner = Spawner(manager, scratch, args.spares, args.start_timeout, args.uids)
        except kernel_init_build.BuildError as e:  # the host lacks a C compiler or libc.a
            _not_ready(conn, str(e))
            return
        # Objects that exist now are moved out of the collector's sight, so that a
        # collection in a kernel does not write to (and so copy) every page that
        # holds them.
        gc.freeze()
        if args.preimport.split():  # the lean zygote first (spawner_kernels says why)
            spawner.fork_zygote(preimported=False)
            try:
                preimport.preimport(args.preimport)
            except preimport.PreimportError as e:
                _not_ready(conn, str(e))
                spawner.shutdown()
                return
            gc.freeze()
        spawner.fork_zygote(preimported=True, env=spawner.env.after_imports())
        spawner.refill_spares()
        listener = (
            spawner_connections.listen(args.listen) if args.listen else None
        )  # after the zygotes
        bound = os.stat(args.listen).st_ino if listener is not None else 0
        if conn is not None:
            spawner_connections.greet(conn, spawner)
        else:
            _notify_ready(notify)
        try:
            spawner_connections.serve(conn, spawner, listener, args.keep_for)
        finally:
            if listener is not None:
                spawner_connections.unlisten(listener, args.listen, bound)
    finally:
        with contextlib.suppress(OSError):
            syscalls.umount(scratch)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
