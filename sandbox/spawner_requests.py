"""The spawner's requests: what a server may ask of it, and the answers.

Requests carry a "tag" that their reply echoes: spawns are answered when their
kernel has started, destroys when their kernel's pid 1 has been reaped, and
other requests meanwhile, so replies may come out of order. A reply that carries
fds says how many ("fds": n).
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
Errors: {"ok": false, "kind": "bad-request"|"not-found"|"start-failed"|"undead",
         "error": str} ("undead": a destroyed kernel's process would not die)

Its first message on a connection, before any request: {"ok": true, "ready": true,
"pid": int, "protocol": spawner_protocol.VERSION, "kernels": n} (or "ready": false and "error").
"""

from __future__ import annotations

import os
import socket

from . import cgroups, kernel_start, spawner_protocol
from .runner import protocol
from .spawner_kernels import Ending, Spawner, Starting
from .spec import KernelSpec, SpecError, validate_kernel_id


def reply(conn: socket.socket, tag: object, message: dict, fds: list[int] = ()) -> None:
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


def handle(spawner: Spawner, conn: socket.socket, request: dict) -> Starting | Ending | None:
    """Answer one request, or begin a spawn or a destroy and return it (answered by
    `finish` or `finish_destroy`, once its kernel has started or died)."""
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
            reply(conn, tag, {"ok": True, "layout": spawner.cgroups.layout.value, **info})
            return None
        if op == "adopt":
            adopt(spawner, conn, tag, request.get("offset", 0))
            return None
        if op == "cpu":
            reply(conn, tag, {"ok": True, "usec": spawner.cpu_usage()})
            return None
        kernel_id = validate_kernel_id(request.get("id"))
        if kernel_id not in spawner.kernels:
            error = f"no kernel {kernel_id}"
            reply(conn, tag, {"ok": False, "kind": "not-found", "error": error})
        elif op == "destroy":  # answered once it is dead (finish_destroy)
            ending = spawner.begin_destroy(kernel_id, bool(request.get("keep_work")))
            ending.tag, ending.reply_to = tag, conn
            return ending
        elif op == "stats":
            reply(conn, tag, {"ok": True, **spawner.stats(kernel_id)})
        elif op == "limit":
            limits = request.get("limits") or {}
            try:
                spawner.set_limits(kernel_id, cgroups.CgroupLimits(**limits))
            except (TypeError, ValueError, cgroups.CgroupError) as e:
                reply(conn, tag, {"ok": False, "kind": "bad-request", "error": str(e)})
            else:
                reply(conn, tag, {"ok": True})
        else:
            error = f"unknown op {op!r}"
            reply(conn, tag, {"ok": False, "kind": "bad-request", "error": error})
    except SpecError as e:
        reply(conn, tag, {"ok": False, "kind": "bad-request", "error": str(e)})
    except kernel_start.KernelStartError as e:
        reply(conn, tag, {"ok": False, "kind": "start-failed", "error": str(e)})
    return None


def finish(
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
            reply(conn, starting.tag, {"ok": False, "kind": "start-failed", "error": str(e)})
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
        reply(conn, starting.tag, {"ok": True, "pid": pid}, [host_end.fileno()])
        return True
    with host_end:
        reply(conn, starting.tag, {"ok": True, "pid": pid}, [host_end.fileno()])
    return True


def finish_destroy(spawner: Spawner, conn: socket.socket | None, ending: Ending) -> None:
    """Free a kernel whose pid 1 has been reaped (or would not die by its deadline),
    and answer its destroy if the connection that asked is still `conn`."""
    status, hits = spawner.finish_destroy(ending)
    if conn is None or ending.reply_to is not conn:
        return
    if ending.kernel_id in spawner.undead:
        error = f"a process of kernel {ending.kernel_id} would not die; it is freed once it does"
        reply(conn, ending.tag, {"ok": False, "kind": "undead", "error": error})
    else:
        reply(conn, ending.tag, {"ok": True, "status": status, "pids_limit_hits": hits})


def adopt(spawner: Spawner, conn: socket.socket, tag: object, offset: object) -> None:
    """Hand a new server up to ADOPT_BATCH kernels from `offset` (in id order): their
    ids and pids, and a copy of the host's end of each one's socket, in that order."""
    if not isinstance(offset, int) or offset < 0:
        reply(conn, tag, {"ok": False, "kind": "bad-request", "error": "offset: an int >= 0"})
        return
    ids = sorted(k for k, kernel in spawner.kernels.items() if kernel.host is not None)
    batch = ids[offset : offset + spawner_protocol.ADOPT_BATCH]
    kernels = [{"id": k, "pid": spawner.kernels[k].pid} for k in batch]
    fds = [spawner.kernels[k].host.fileno() for k in batch]  # type: ignore[union-attr]
    more = offset + len(batch) < len(ids)
    reply(conn, tag, {"ok": True, "kernels": kernels, "more": more}, fds)


def preimported(request: dict) -> bool:
    """The kind of kernel a spawn request asks for (KernelSpec.preimported)."""
    spec = request.get("spec")
    return not isinstance(spec, dict) or spec.get("preimported") is not False
