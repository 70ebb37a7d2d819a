"""The hand-over of kernels between a server that stops and the next one (the
records and how a session is rebuilt from one: kept_kernels.py)."""

from __future__ import annotations

import contextlib
import logging
import socket

from sandbox.kernel import Kernel
from sandbox.kernel_snapshot import Snapshot
from sandbox.spawner_client import SpawnerError

from .kept_kernels import KeptSession
from .registry import Registry

log = logging.getLogger("sandbox.server")


async def suspend_all(registry: Registry) -> None:
    """Hand every session to the next server: each kernel's connection is given up at
    a frame boundary and its record written with what it held. A kernel with folders
    mounted is not kept (its folders' loop devices are this server's to detach):
    it is destroyed, as is one whose stream would not come to a boundary."""
    kept = 0
    for session in list(registry.sessions.values()):
        if session.mounts:
            await registry.destroy(session, "server restart: kernels with folders mounted end")
            continue
        if session.watcher is not None:
            session.watcher.cancel()
        snapshot = await session.kernel.suspend()
        if snapshot is None:
            await registry.destroy(session, "server restart: its output could not be paused")
            continue
        registry.record(session, snapshot)
        registry.leave(session)
        kept += 1
    log.info("kernels kept for the next server", extra={"event": "kept", "count": kept})


async def adopt_all(
    registry: Registry, adopted: list[tuple[str, int, socket.socket]], missing: str
) -> None:
    """Rebuild the sessions of the kernels the spawner kept, from their records; a
    kernel without a record (a pooled one) is destroyed, and a record without a
    kernel is a session that ended while no server ran: `missing` says why, to its
    owner's next call."""
    records = registry.records
    rows = records.all() if records is not None else {}
    for kernel_id, pid, sock in adopted:
        row = rows.pop(kernel_id, None)
        try:
            kept = KeptSession.parse(row) if row is not None else None
        except (ValueError, KeyError, TypeError) as e:
            log.warning("kernel %s: its record does not parse (%s): destroying it", kernel_id, e)
            kept = None
        if kept is None:
            sock.close()
            with contextlib.suppress(SpawnerError):
                await registry.spawner.destroy(kernel_id)
            continue
        kernel = await Kernel.resume(
            kernel_id, pid, sock, registry.bounds, registry.held, kept.snapshot or Snapshot()
        )
        registry.add(kept.session(kernel_id, kernel, registry.spawner))
    for kernel_id, row in rows.items():
        access_key = row.get("accessKey") if isinstance(row, dict) else None
        if isinstance(access_key, str):
            registry.obituaries[kernel_id] = (access_key, missing)
        if records is not None:
            records.remove(kernel_id)
    log.info("kernels adopted from the last server", extra={
        "event": "adopted", "count": len(registry.sessions), "lost": len(rows),
    })  # fmt: skip
