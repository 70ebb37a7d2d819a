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
  {"op": "adopt", "offset": n} -> {"ok": true, "kernels": [{"id", "pid"}, ...],
                                   "more": bool} + their host sockets, in that order
  {"op": "shutdown"} -> {"ok": true, "exits": bool}, then every kernel is destroyed
      and it exits (a service, started without FD, stays for the next server)
Errors: {"ok": false, "kind": "bad-request"|"not-found"|"start-failed", "error": str}

Its first message on a connection, before any request: {"ok": true, "ready": true,
"pid": int, "protocol": spawner_protocol.VERSION, "kernels": n} (or "ready": false and "error").

Kernels outliving the server (`--listen PATH --keep-for S`, see serve): the
spawner then keeps a copy of each kernel's host socket, and waits S seconds on
the unix socket PATH for the next server, which checks the protocol and adopts
the kernels. Without them, the connection's end is the kernels' end.
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
import struct
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
    spawner_protocol,
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
        if op == "adopt":
            _adopt(spawner, conn, tag, request.get("offset", 0))
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


def _finish(
    spawner: Spawner,
    conn: socket.socket | None,
    starting: Starting,
    timed_out: bool,
    keep: bool,
) -> bool:
    """Answer a spawn whose pid 1 has reported (or not, by its deadline); False when it
    began again from a new spare and is still starting. With no `conn` (its server
    has gone) a kernel that started is destroyed; with `keep`, the spawner keeps a
    copy of the host's end of its socket (see serve)."""
    try:
        started = spawner.finish_spawn(starting, timed_out)
    except kernel_start.KernelStartError as e:
        if conn is not None:
            _reply(conn, starting.tag, {"ok": False, "kind": "start-failed", "error": str(e)})
        return True
    if started is None:
        return False
    pid, host_end = started
    if conn is None:
        host_end.close()
        spawner.destroy(starting.kernel_id, keep_work=False)
        return True
    if keep:
        spawner.kernels[starting.kernel_id].host = host_end
        _reply(conn, starting.tag, {"ok": True, "pid": pid}, [host_end.fileno()])
        return True
    with host_end:
        _reply(conn, starting.tag, {"ok": True, "pid": pid}, [host_end.fileno()])
    return True


def _adopt(spawner: Spawner, conn: socket.socket, tag: object, offset: object) -> None:
    """Hand a new server up to ADOPT_BATCH kernels from `offset` (in id order): their
    ids and pids, and a copy of the host's end of each one's socket, in that order."""
    if not isinstance(offset, int) or offset < 0:
        _reply(conn, tag, {"ok": False, "kind": "bad-request", "error": "offset: an int >= 0"})
        return
    ids = sorted(k for k, kernel in spawner.kernels.items() if kernel.host is not None)
    batch = ids[offset : offset + spawner_protocol.ADOPT_BATCH]
    kernels = [{"id": k, "pid": spawner.kernels[k].pid} for k in batch]
    fds = [spawner.kernels[k].host.fileno() for k in batch]  # type: ignore[union-attr]
    more = offset + len(batch) < len(ids)
    _reply(conn, tag, {"ok": True, "kernels": kernels, "more": more}, fds)


def serve(
    conn: socket.socket | None,
    spawner: Spawner,
    listener: socket.socket | None = None,
    keep_for: float = 0.0,
) -> None:
    """Answer requests until the server closes its end, then clean up everything.

    A spawn is begun at once and answered when its pid 1 reports on its status pipe
    (a few milliseconds, spent in the new kernel's processes): the spawner serves
    other requests meanwhile, so kernel starts overlap on the host's CPUs.

    With a `listener`, kernels outlive their server: when its connection closes
    without a "shutdown" request (the server stopped for a restart, or died), the
    spawner keeps every kernel and the host's end of its socket for `keep_for`
    seconds, and a new server that connects to `listener` adopts them.

    With no `conn` the spawner is a service of its own (systemd's
    sandbox-spawner.service): it waits for servers as long as it runs, and ends
    the kernels of a server that did not come back within `keep_for` seconds."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    starts: dict[int, Starting] = {}  # by their status pipe
    keep = listener is not None and keep_for > 0
    standalone = conn is None
    try:
        current = conn
        while True:
            if current is not None:
                with current:
                    stopped = _serve_connection(
                        current, spawner, starts, wake_r, keep, standalone, listener
                    )
                current = None
                if stopped and not standalone:
                    return
                if stopped:  # a service: its kernels end, it waits for the next server
                    spawner.end_kernels()
                    current = _next_server(listener, spawner, starts, wake_r, None)
                    continue
                if not keep:
                    return
                _say(f"the server has gone; keeping {len(spawner.kernels)} kernels "
                     f"{keep_for:g} s for the next")  # fmt: skip
                current = _next_server(listener, spawner, starts, wake_r, keep_for)
            if current is None and not standalone:
                return
            if current is None:  # a service: end the kernels, wait for the next server
                spawner.end_kernels()
                current = _next_server(listener, spawner, starts, wake_r, None)
    finally:
        spawner.shutdown()


def _say(message: str) -> None:
    print(f"spawner: {message}", file=sys.stderr, flush=True)


def _serve_connection(
    conn: socket.socket,
    spawner: Spawner,
    starts: dict[int, Starting],
    wake_r: int,
    keep: bool,
    standalone: bool = False,
    listener: socket.socket | None = None,
) -> bool:
    """Serve one server connection until it closes; True if the server asked for a
    shutdown, False if it closed (or broke) its end. The reply to a shutdown says
    whether we exit: a service (`standalone`) ends its kernels but stays. A second
    server that connects to `listener` meanwhile is told we are busy."""
    reader = protocol.FrameReader()
    try:
        while True:
            if starts:  # spares are forked when nothing starts (see refill_timeout)
                first = min(s.pending.deadline for s in starts.values())
                timeout = max(0.0, first - time.monotonic())
            else:
                timeout = spawner.refill_timeout()
            watched = [conn, wake_r, *starts] + ([listener] if listener is not None else [])
            ready, _, _ = select.select(watched, [], [], timeout)
            if not ready and not starts:
                spawner.refill_spares()
                continue
            if listener is not None and listener in ready:
                _turn_away(listener)
            _poll_starts(spawner, starts, ready, wake_r, conn, keep)
            if conn not in ready:
                continue
            data = conn.recv(65536)
            if not data:
                return False
            reader.feed(data)
            for request, _blob, _raw in reader.frames():
                spawner.reap()
                if request.get("op") == "shutdown":
                    _reply(conn, request.get("tag"), {"ok": True, "exits": not standalone})
                    return True
                if request.get("op") == "spawn" and not spawner.has_spare(_preimported(request)):
                    # Forked here rather than the kernel without a spare: a fork in
                    # the middle of a request leaves the child the spawner's stack and
                    # transient objects of that moment, which the spawner then rewrites
                    # (0.35 MiB more per kernel), and it starts slower too.
                    spawner.refill_spares()
                starting = _handle(spawner, conn, request)
                if starting is not None:
                    starts[starting.pending.fileno()] = starting
    except ConnectionError as e:  # ECONNRESET, EPIPE: the server died mid-request
        _say(f"the server's connection broke: {e}")
        return False


def _poll_starts(
    spawner: Spawner,
    starts: dict[int, Starting],
    ready: list,
    wake_r: int,
    conn: socket.socket | None,
    keep: bool,
) -> None:
    """Reap what exited and answer the spawns that are done (or past their deadline).
    With no `conn`, a kernel that started has nobody to go to: it is destroyed."""
    if wake_r in ready:
        with contextlib.suppress(BlockingIOError):
            os.read(wake_r, 4096)
        spawner.reap()
    now = time.monotonic()
    for fd, starting in list(starts.items()):
        ended = fd in ready and starting.pending.read()
        if ended or now >= starting.pending.deadline:
            del starts[fd]
            if not _finish(spawner, conn, starting, not ended, keep):
                starts[starting.pending.fileno()] = starting


def _next_server(
    listener: socket.socket | None,
    spawner: Spawner,
    starts: dict[int, Starting],
    wake_r: int,
    keep_for: float | None,
) -> socket.socket | None:
    """Wait up to `keep_for` seconds (None: for ever) for a server to connect; its
    connection, greeted as the first one is, or None."""
    deadline = None if keep_for is None else time.monotonic() + keep_for
    while deadline is None or (left := deadline - time.monotonic()) > 0:
        timeout = None if deadline is None else left
        ready, _, _ = select.select([listener, wake_r, *starts], [], [], timeout)
        _poll_starts(spawner, starts, ready, wake_r, None, True)
        if listener in ready:
            with contextlib.suppress(BlockingIOError):
                conn, _addr = listener.accept()
                conn.setblocking(True)
                try:
                    if _peer_uid(conn) != os.geteuid():  # the socket is 0600; still
                        raise PermissionError("a connection from another user")
                    _greet(conn, spawner)
                except OSError as e:
                    _say(f"a connection turned away: {e}")
                    conn.close()
                    continue
                _say(f"a server connected; {len(spawner.kernels)} kernels to adopt")
                return conn
    _say("no server came back: ending its kernels")
    return None


def _peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end (SO_PEERCRED: pid, uid, gid)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def _turn_away(listener: socket.socket) -> None:
    """A server connected while we serve another (two servers on one data
    directory): it is told so, and must not start a spawner of its own there."""
    with contextlib.suppress(OSError):
        conn, _addr = listener.accept()
        with conn:
            conn.setblocking(True)
            conn.settimeout(1.0)
            error = "busy: it serves another server on this data directory"
            _reply(conn, None, {"ok": False, "ready": False, "busy": True, "error": error})


def _greet(conn: socket.socket, spawner: Spawner) -> None:
    """The spawner's first message on a connection: ready, its protocol, and how many
    kernels it has for the server to adopt."""
    hello = {"ok": True, "ready": True, "pid": os.getpid(), "protocol": spawner_protocol.VERSION}
    _reply(conn, None, {**hello, "kernels": len(spawner.kernels)})


def _preimported(request: dict) -> bool:
    """The kind of kernel a spawn request asks for (KernelSpec.preimported)."""
    spec = request.get("spec")
    return not isinstance(spec, dict) or spec.get("preimported") is not False


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


def _listen(path: str) -> socket.socket:
    """The unix socket the next server connects to, readable by root alone. One left
    by a spawner that died is replaced (the server connects before it starts us)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        with spawner_protocol.reachable(path) as address:
            listener.bind(address)
    finally:
        os.umask(old_umask)
    listener.listen(4)
    listener.setblocking(False)
    return listener


def _not_ready(conn: socket.socket | None, error: str) -> None:
    if conn is not None:
        _reply(conn, None, {"ok": False, "ready": False, "error": error})
    else:
        _say(f"cannot start: {error}")


def _notify_ready(path: str) -> None:
    """Tell systemd (Type=notify) that servers may connect now: sd_notify's READY=1,
    one datagram to `path`, its $NOTIFY_SOCKET (a leading @: an abstract socket)."""
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"READY=1", address)


def _unlisten(listener: socket.socket, path: str, bound: int) -> None:
    """Close the listener and remove its path (inode `bound` when we bound it),
    unless another spawner has bound that path since."""
    with contextlib.suppress(OSError):
        if os.stat(path).st_ino == bound:
            os.unlink(path)
    listener.close()


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
        listener = _listen(args.listen) if args.listen else None  # after the zygotes
        bound = os.stat(args.listen).st_ino if listener is not None else 0
        if conn is not None:
            _greet(conn, spawner)
        else:
            _notify_ready(notify)
        try:
            serve(conn, spawner, listener, args.keep_for)
        finally:
            if listener is not None:
                _unlisten(listener, args.listen, bound)
    finally:
        with contextlib.suppress(OSError):
            syscalls.umount(scratch)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
