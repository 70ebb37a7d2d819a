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
with SCM_RIGHTS and the spawner keeps no copy, so no kernel ever holds another
kernel's socket. When the server's connection closes, the spawner kills every
kernel and exits.

This module is the process and its wire (the requests below); what it holds and
how it starts and ends kernels is sandbox.spawner_kernels.

Requests carry a "tag" that their reply echoes: spawns are answered when their
kernel has started, and other requests meanwhile, so replies may come out of
order. A reply that carries fds says how many ("fds": n).
  {"op": "spawn", "id": str, "spec": KernelSpec JSON, "keep_work": bool}
      -> {"ok": true, "pid": int} + the kernel's socket as SCM_RIGHTS
  {"op": "destroy", "id": str, "keep_work": bool} -> {"ok": true, "status": int|null,
                                                      "pids_limit_hits": int}
  {"op": "stats", "id": str} -> {"ok": true, "alive": bool, "pid": int,
                                  "cgroups": [its directories], ...CgroupStats}
  {"op": "info"} -> {"ok": true, "layout": str, "cgroups": {...}, "pid": int,
                     "scratch": str (in the spawner's mount namespace),
                     "spares": [pids of the spares ready now], "zygote": pid}
Errors: {"ok": false, "kind": "bad-request"|"not-found"|"start-failed", "error": str}
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import re
import select
import shutil
import signal
import socket
import sys
import time

from . import (
    cgroups,
    environment,
    kernel_init_build,
    kernel_start,
    kernel_uids,
    mounts,
    pid_namespace,
    preimport,
    syscalls,
)
from .runner import protocol, python_repl
from .settings import SandboxSettings
from .spawner_kernels import WORK_ROOT, Spawner, Starting
from .spec import KernelSpec, SpecError, validate_kernel_id


def _reply(conn: socket.socket, tag: object, message: dict, fds: list[int] = ()) -> None:
    """Answer the request that carried `tag` (echoed; replies may come out of order).
    A reply with fds says how many, so the server can pair them with it."""
    message = {**message, "tag": tag}
    if fds:
        message["fds"] = len(fds)
    data = protocol.encode(message)
    if fds:
        sent = socket.send_fds(conn, [data], fds)
        if sent < len(data):
            conn.sendall(data[sent:])
    else:
        conn.sendall(data)


def _handle(spawner: Spawner, conn: socket.socket, request: dict) -> Starting | None:
    """Answer one request, or begin a spawn and return it (answered by `_finish`)."""
    op = request.get("op")
    tag = request.get("tag")
    try:
        if op == "spawn":
            kernel_id = validate_kernel_id(request.get("id"))
            spec = KernelSpec.from_json(request.get("spec", {}))
            starting = spawner.begin_spawn(kernel_id, spec, bool(request.get("keep_work")))
            starting.tag = tag
            return starting
        if op == "info":
            info = {
                "pid": os.getpid(),
                "scratch": spawner.scratch,
                "cgroups": spawner.cgroups.describe(),
                "zygote": spawner.zygote.pid,
                "uids": str(spawner.uids.range),
            }
            info["spares"] = [spare.pid for spare in spawner.spares]
            _reply(conn, tag, {"ok": True, "layout": spawner.cgroups.layout.value, **info})
            return None
        if op == "cpu":
            _reply(conn, tag, {"ok": True, "usec": spawner.cpu_usage()})
            return None
        kernel_id = validate_kernel_id(request.get("id"))
        if kernel_id not in spawner.kernels:
            error = f"no kernel {kernel_id}"
            _reply(conn, tag, {"ok": False, "kind": "not-found", "error": error})
        elif op == "destroy":
            status, hits = spawner.destroy(kernel_id, bool(request.get("keep_work")))
            if kernel_id in spawner.undead:
                error = f"a process of kernel {kernel_id} would not die; it is freed once it does"
                _reply(conn, tag, {"ok": False, "kind": "undead", "error": error})
            else:
                _reply(conn, tag, {"ok": True, "status": status, "pids_limit_hits": hits})
        elif op == "stats":
            _reply(conn, tag, {"ok": True, **spawner.stats(kernel_id)})
        elif op == "limit":
            limits = request.get("limits") or {}
            try:
                spawner.set_limits(kernel_id, cgroups.CgroupLimits(**limits))
            except (TypeError, ValueError, cgroups.CgroupError) as e:
                _reply(conn, tag, {"ok": False, "kind": "bad-request", "error": str(e)})
            else:
                _reply(conn, tag, {"ok": True})
        else:
            error = f"unknown op {op!r}"
            _reply(conn, tag, {"ok": False, "kind": "bad-request", "error": error})
    except SpecError as e:
        _reply(conn, tag, {"ok": False, "kind": "bad-request", "error": str(e)})
    except kernel_start.KernelStartError as e:
        _reply(conn, tag, {"ok": False, "kind": "start-failed", "error": str(e)})
    return None


def _finish(spawner: Spawner, conn: socket.socket, starting: Starting, timed_out: bool) -> bool:
    """Answer a spawn whose pid 1 has reported (or not, by its deadline); False when it
    began again from a new spare and is still starting."""
    try:
        started = spawner.finish_spawn(starting, timed_out)
    except kernel_start.KernelStartError as e:
        _reply(conn, starting.tag, {"ok": False, "kind": "start-failed", "error": str(e)})
        return True
    if started is None:
        return False
    pid, host_end = started
    with host_end:
        _reply(conn, starting.tag, {"ok": True, "pid": pid}, [host_end.fileno()])
    return True


def serve(conn: socket.socket, spawner: Spawner) -> None:
    """Answer requests until the server closes its end, then clean up everything.

    A spawn is begun at once and answered when its pid 1 reports on its status pipe
    (a few milliseconds, spent in the new kernel's processes): the spawner serves
    other requests meanwhile, so kernel starts overlap on the host's CPUs."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    reader = protocol.FrameReader()
    starts: dict[int, Starting] = {}  # by their status pipe
    try:
        while True:
            if starts:  # spares are forked when nothing starts (see refill_timeout)
                first = min(s.pending.deadline for s in starts.values())
                timeout = max(0.0, first - time.monotonic())
            else:
                timeout = spawner.refill_timeout()
            ready, _, _ = select.select([conn, wake_r, *starts], [], [], timeout)
            if not ready and not starts:
                spawner.refill_spares()
                continue
            if wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
                spawner.reap()
            now = time.monotonic()
            for fd, starting in list(starts.items()):
                ended = fd in ready and starting.pending.read()
                if ended or now >= starting.pending.deadline:
                    del starts[fd]
                    if not _finish(spawner, conn, starting, timed_out=not ended):
                        starts[starting.pending.fileno()] = starting
            if conn not in ready:
                continue
            data = conn.recv(65536)
            if not data:
                return
            reader.feed(data)
            for request, _blob, _raw in reader.frames():
                spawner.reap()
                if request.get("op") == "spawn" and not spawner.has_spare(_preimported(request)):
                    # Forked here rather than the kernel without a spare: a fork in
                    # the middle of a request leaves the child the spawner's stack and
                    # transient objects of that moment, which the spawner then rewrites
                    # (0.35 MiB more per kernel), and it starts slower too.
                    spawner.refill_spares()
                starting = _handle(spawner, conn, request)
                if starting is not None:
                    starts[starting.pending.fileno()] = starting
    finally:
        spawner.shutdown()


def _preimported(request: dict) -> bool:
    """The kind of kernel a spawn request asks for (KernelSpec.preimported)."""
    spec = request.get("spec")
    return not isinstance(spec, dict) or spec.get("preimported") is not False


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
    parser.add_argument("fd", type=int)
    parser.add_argument("--spares", type=int, default=SandboxSettings().spare_processes)
    parser.add_argument("--start-timeout", type=float, default=kernel_start.START_TIMEOUT)
    uids = kernel_uids.UidRange.parse
    parser.add_argument("--uids", type=uids, default=kernel_uids.DEFAULT_RANGE)
    layouts = ["auto", *(layout.value for layout in cgroups.Layout)]
    parser.add_argument("--cgroup-layout", choices=layouts, default="auto")
    from_env = environment.preimport_from_environment()
    default_preimport = SandboxSettings().preimport if from_env is None else from_env
    parser.add_argument("--preimport", default=default_preimport)
    args = parser.parse_args()
    conn = socket.socket(fileno=args.fd)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when we stop
    pid_namespace.become_subreaper()
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
        mounts.make_work_root(f"{scratch}/{WORK_ROOT}")
        try:
            manager = cgroups.detect(None if args.cgroup_layout == "auto" else args.cgroup_layout)
            spawner = Spawner(manager, scratch, args.spares, args.start_timeout, args.uids)
        except kernel_init_build.BuildError as e:  # the host lacks a C compiler or libc.a
            _reply(conn, None, {"ok": False, "ready": False, "error": str(e)})
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
                _reply(conn, None, {"ok": False, "ready": False, "error": str(e)})
                spawner.shutdown()
                return
            gc.freeze()
        spawner.fork_zygote(preimported=True, env=spawner.env.after_imports())
        spawner.refill_spares()
        _reply(conn, None, {"ok": True, "ready": True, "pid": os.getpid()})
        serve(conn, spawner)
    finally:
        with contextlib.suppress(OSError):
            syscalls.umount(scratch)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
