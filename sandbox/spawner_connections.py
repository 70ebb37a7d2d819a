"""The spawner's connections: serving one server, and waiting for the next.

Without `--listen`, the spawner serves the one connection it was started with,
and the connection's end is the kernels' end. With `--listen PATH --keep-for S`,
kernels outlive their server: the spawner keeps a copy of each kernel's host
socket, and when the server's connection closes without a "shutdown" request it
waits S seconds on the unix socket PATH for the next server, which checks the
protocol (sandbox.spawner_protocol) in the greeting and adopts the kernels. A
second server that connects while one is served is told "busy"; a connection
from another uid is turned away before a word is said.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time

from . import fd_wait, spawner_protocol, spawner_requests
from .runner import protocol
from .spawner_kernels import Spawner, Starting


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
            if current is None:
                if not standalone:
                    return
                # a service: the last server's kernels end, and it waits for the next
                spawner.end_kernels()
                current = _next_server(listener, spawner, starts, wake_r, None)
                continue
            with current:
                stopped = _serve_connection(
                    current, spawner, starts, wake_r, keep, standalone, listener
                )
            current = None
            if stopped or not keep:  # a full stop, or kernels that end with their server
                continue
            say(f"the server has gone; keeping {len(spawner.kernels)} kernels "
                f"{keep_for:g} s for the next")  # fmt: skip
            current = _next_server(listener, spawner, starts, wake_r, keep_for)
    finally:
        spawner.shutdown()


def say(message: str) -> None:
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
            # spares are forked when nothing starts and no request came for a while
            refill = None if starts else spawner.refill_timeout()
            due = _due(spawner, starts)
            timeout = _earliest(due, refill)
            watched = [conn, wake_r, *starts] + ([listener] if listener is not None else [])
            ready = fd_wait.readable(watched, timeout)
            if not ready and refill is not None and (due is None or refill <= due):
                spawner.refill_spares()
            if listener is not None and listener in ready:
                _turn_away(listener)
            _poll_pending(spawner, starts, ready, wake_r, conn, keep)
            if conn not in ready:
                continue
            data = conn.recv(65536)
            if not data:
                return False
            reader.feed(data)
            for request, _blob, _raw in reader.frames():
                spawner.reap()
                if request.get("op") == "shutdown":
                    spawner_requests.reply(
                        conn, request.get("tag"), {"ok": True, "exits": not standalone}
                    )
                    return True
                if request.get("op") == "spawn" and not spawner.has_spare(
                    spawner_requests.preimported(request)
                ):
                    # Forked here rather than the kernel without a spare: a fork in
                    # the middle of a request leaves the child the spawner's stack and
                    # transient objects of that moment, which the spawner then rewrites
                    # (0.35 MiB more per kernel), and it starts slower too.
                    spawner.refill_spares()
                begun = spawner_requests.handle(spawner, conn, request)
                if isinstance(begun, Starting):  # an Ending waits in spawner.ending
                    starts[begun.pending.fileno()] = begun
    except ConnectionError as e:  # ECONNRESET, EPIPE: the server died mid-request
        say(f"the server's connection broke: {e}")
        return False


def _due(spawner: Spawner, starts: dict[int, Starting]) -> float | None:
    """Seconds until the first start or destroy under way is due (0 for a destroy
    whose kernel is already dead); None if none is under way."""
    due = [s.pending.deadline for s in starts.values()]
    due += [e.deadline if e.kernel.status is None else 0.0 for e in spawner.ending.values()]
    return max(0.0, min(due) - time.monotonic()) if due else None


def _earliest(*timeouts: float | None) -> float | None:
    """The shortest of the timeouts that are set; None (no limit) if none is."""
    return min((t for t in timeouts if t is not None), default=None)


def _poll_pending(
    spawner: Spawner,
    starts: dict[int, Starting],
    ready: list,
    wake_r: int,
    conn: socket.socket | None,
    keep: bool,
) -> None:
    """Reap what exited and answer the spawns that are done (or past their deadline)
    and the destroys whose kernel is dead (or would not die by its deadline).
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
            if not spawner_requests.finish(spawner, conn, starting, not ended, keep):
                starts[starting.pending.fileno()] = starting
    for ending in [e for e in spawner.ending.values() if e.done]:
        spawner_requests.finish_destroy(spawner, conn, ending)


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
        timeout = _earliest(None if deadline is None else left, _due(spawner, starts))
        ready = fd_wait.readable([listener, wake_r, *starts], timeout)
        _poll_pending(spawner, starts, ready, wake_r, None, True)
        if listener in ready:
            with contextlib.suppress(BlockingIOError):
                conn, _addr = listener.accept()
                conn.setblocking(True)
                try:
                    if _peer_uid(conn) != os.geteuid():  # the socket is 0600; still
                        raise PermissionError("a connection from another user")
                    greet(conn, spawner)
                except OSError as e:
                    say(f"a connection turned away: {e}")
                    conn.close()
                    continue
                say(f"a server connected; {len(spawner.kernels)} kernels to adopt")
                return conn
    say("no server came back: ending its kernels")
    return None


def _peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end (SO_PEERCRED: pid, uid, gid)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, spawner_protocol.UCRED.size)
    return spawner_protocol.UCRED.unpack(creds)[1]


def _turn_away(listener: socket.socket) -> None:
    """A server connected while we serve another (two servers on one data
    directory): it is told so, and must not start a spawner of its own there."""
    with contextlib.suppress(OSError):
        conn, _addr = listener.accept()
        with conn:
            conn.setblocking(True)
            conn.settimeout(1.0)
            error = "busy: it serves another server on this data directory"
            spawner_requests.reply(
                conn, None, {"ok": False, "ready": False, "busy": True, "error": error}
            )


def greet(conn: socket.socket, spawner: Spawner) -> None:
    """The spawner's first message on a connection: ready, its protocol, and how many
    kernels it has for the server to adopt."""
    hello = {"ok": True, "ready": True, "pid": os.getpid(), "protocol": spawner_protocol.VERSION}
    spawner_requests.reply(conn, None, {**hello, "kernels": len(spawner.kernels)})


def listen(path: str) -> socket.socket:
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


def unlisten(listener: socket.socket, path: str, bound: int) -> None:
    """Close the listener and remove its path (inode `bound` when we bound it),
    unless another spawner has bound that path since."""
    with contextlib.suppress(OSError):
        if os.stat(path).st_ino == bound:
            os.unlink(path)
    listener.close()
