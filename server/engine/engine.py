"""The engine: kernels and their owners, runs, files, folders, limits and lifetimes,
behind one object that every face holds. It knows no HTTP and no API's shapes:
faces turn their protocol into these calls, and `errors` into their answers.

One `Engine` per server process. `open` starts the spawner (the root process that
makes kernels), or takes over the one the last server left with its kernels, and
the warm pool; `close` destroys every kernel, or leaves them to the next server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sandbox import spawner_protocol
from sandbox.kernel import KernelGone
from sandbox.pid1 import kernel_environment
from sandbox.run_result import RunResult
from sandbox.spawner_client import SpawnerClient, SpawnerError
from sandbox.spec import WORK_DIR, Bind
from sandbox.terminal import Terminal

from . import handover, kernel_files
from .errors import ExecutionFailed, InvalidRequest, KernelNotFound, QuotaExceeded
from .folder_storage import FolderStorage
from .folders import Folders
from .jobs import Jobs
from .kernel_records import KernelRecords
from .limits import KernelLimits
from .pool import kernel_spec
from .registry import IDLE, KernelInfo, Registry, resolve_lang
from .session import Session
from .settings import EngineSettings
from .store import Folder, Keypair, Store
from .tally import Tally

# A mount's alias: a relative path in /home/work of safe characters.
ALIAS_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
COMPLETE_SECONDS = 5.0
# The spawner's unix socket in the data directory, where it waits for the next
# server with the kernels it kept (handover.py).
SPAWNER_SOCKET = "spawner.sock"
OLD_SPAWNER_EXIT_SECONDS = 60.0  # an old spawner destroying its kernels

log = logging.getLogger("sandbox.server")
# A terminal's shell, by name: bash in every kernel; python3's own prompt in its.
SHELLS = {"bash": ["bash"], "python": ["python3"]}


@dataclass(frozen=True)
class Mount:
    """A folder to mount, by the name (or id) its owner knows it by, at
    /home/work/<alias>."""

    folder: str
    alias: str


def _outcome(result: RunResult, session: Session) -> str:
    """How a run that ended ended, for the tally."""
    if result.status == "exec-timeout":
        return "exec-timeout"
    if session.run_out_of_memory:
        return "out-of-memory"
    by_signal = {128 + signal.SIGKILL: "killed", 128 + signal.SIGINT: "interrupted"}
    return by_signal.get(result.exit_code or 0, "finished")


class Engine:
    """Everything a face may ask of the server's kernels and folders."""

    def __init__(
        self,
        settings: EngineSettings,
        store: Store,
        spawner: SpawnerClient,
        data_dir: str,
        records: KernelRecords | None = None,
    ):
        self.settings = settings
        self.store = store
        self.spawner = spawner
        self.records = records  # kernels kept across restarts; None: they are not
        self.registry = Registry(spawner, settings, records)
        self.jobs = Jobs(settings, self.registry)
        storage = FolderStorage(store.folders, os.path.join(data_dir, "folders"))
        self.folders = Folders(settings, store.folders, storage, self.registry, spawner)

    @classmethod
    async def open(cls, settings: EngineSettings, store: Store, data_dir: str) -> Engine:
        """Start the engine over a spawner (in the running event loop): the one the
        last server left with its kernels, which are adopted, if it speaks our
        protocol; else a new one (handover.py)."""
        options = spawner_options(settings, data_dir)
        keep = options["listen"] is not None
        records = KernelRecords(data_dir) if keep else None
        spawner, missing = await _last_spawner(options["listen"]) if keep else (None, "")
        if spawner is None:
            spawner = await SpawnerClient.start(**options)
        engine = cls(settings, store, spawner, data_dir, records)
        if records is not None:
            adopted = await spawner.adopt() if spawner.kernels_to_adopt else []
            await handover.adopt_all(
                engine.registry, adopted, missing or "it ended while the server was stopped"
            )
        engine.registry.start()
        return engine

    @property
    def tally(self) -> Tally:
        """What the engine has done, counted (server/engine/tally.py)."""
        return self.registry.tally

    async def close(self, keep_kernels: bool = False) -> None:
        """Stop: every kernel is destroyed; or, with `keep_kernels` and kernels kept
        across restarts ([sandbox] keep_kernels_on_restart), handed to the next
        server."""
        keep = keep_kernels and self.records is not None
        await self.jobs.ended()
        if keep:
            await self.registry.quiesce()
            await handover.suspend_all(self.registry)
        await self.registry.close()
        await self.spawner.close(keep_kernels=keep)
        self.folders.storage.close()
        if self.records is not None:
            self.records.close()

    # -- kernels -----------------------------------------------------------------

    async def get_or_create(
        self,
        owner: Keypair,
        token: str,
        lang: str,
        limits: KernelLimits,
        mounts: list[Mount],
    ) -> tuple[Session, bool]:
        """The owner's kernel for `token`, or a new one of `lang` (True) mounting
        `mounts`. The folders' devices are held until the kernel is registered as
        mounting them."""
        most = self.settings.folders.max_mounts
        if len(mounts) > most:
            raise InvalidRequest(f"mounts: at most {most} folders")
        language = resolve_lang(lang)
        planned = self._mount_plan(mounts, owner.access_key)
        async with self.folders.holding(list(planned.values())) as sources:
            binds = tuple(
                Bind(sources[folder.id], f"{WORK_DIR}/{alias}", False, self.folders.owner(folder))
                for alias, folder in planned.items()
            )
            spec = kernel_spec(self.settings, language, limits.memory_bytes, binds)
            return await self.registry.get_or_create(
                owner.access_key,
                token,
                language.name,
                spec,
                limits,
                owner.concurrency_limit,
                {alias: folder.id for alias, folder in planned.items()},
            )

    def _mount_plan(self, mounts: list[Mount], access_key: str) -> dict[str, Folder]:
        """{alias: folder} for the owner's folders; FolderNotFound, or InvalidRequest
        for a bad alias or two folders inside one another."""
        by_alias: dict[str, Folder] = {}
        for mount in mounts:
            alias = mount.alias
            entry = f"{mount.folder}:{alias}" if alias != mount.folder else alias
            parts = alias.split("/")
            if not ALIAS_RE.match(alias) or any(p in (".", "..") for p in parts):
                raise InvalidRequest(
                    f"mounts: {entry!r}: the alias must be a relative path in /home/work"
                )
            if alias in by_alias or any(
                a.startswith(alias + "/") or alias.startswith(a + "/") for a in by_alias
            ):
                raise InvalidRequest(f"mounts: {entry!r}: two folders at or inside one another")
            by_alias[alias] = self.folders.get(access_key, mount.folder)
        return by_alias

    def session(self, owner: Keypair, kernel_id: str) -> Session:
        """The owner's kernel (KernelNotFound for unknown and foreign ids alike),
        counted as used now."""
        session = self.registry.get(owner.access_key, kernel_id)
        session.touch()
        return session

    def session_by_id(self, kernel_id: str) -> Session:
        """Any owner's kernel by its id alone (KernelNotFound if unknown). The id, 128
        random bits, is then the capability: only the unsigned terminal handshake of
        sorna-client 0.9.8 is let in this way (faces/v2/streams), where the settings
        allow it."""
        session = self.registry.sessions.get(kernel_id)
        if session is None:
            raise KernelNotFound("")
        return session

    async def destroy(self, session: Session, reason: str = "destroyed by the client") -> bool:
        """False when a process of it would not die (see Registry.destroy)."""
        return await self.registry.destroy(session, reason)

    async def restart(self, session: Session) -> None:
        await self.registry.restart(session)

    async def info(self, session: Session) -> KernelInfo:
        return await self.registry.info(session)

    async def execute(
        self,
        session: Session,
        mode: str,
        code: str,
        options: dict,
        run_id: str | None,
        hold: float,
        eager: bool = False,
        gone: Callable[[], bool] | None = None,
    ) -> tuple[RunResult, str | None]:
        """One call of the run model (Session.execute); `eager` and `gone` for streams."""
        began = time.monotonic()
        try:
            result, run = await session.execute(mode, code, options, run_id, hold, eager, gone)
        except KernelGone as e:
            raise ExecutionFailed("the kernel is gone") from e
        tally = self.registry.tally
        tally.execute_seconds.observe(time.monotonic() - began)
        if result.status in ("finished", "exec-timeout"):
            outcome = _outcome(result, session)
            tally.runs[outcome] += 1
            if outcome == "out-of-memory":
                tally.limit_hits["memory"] += 1
            if session.kernel.output_limited:
                tally.limit_hits["output"] += 1
        return result, run

    async def interrupt(self, session: Session) -> None:
        """SIGINT to the run; nothing to do if the kernel was restarted under us
        after an OOM kill (the run it would interrupt is over)."""
        kernel = session.kernel
        try:
            await kernel.interrupt()
        except KernelGone as e:
            error = await session.gone_error(kernel, e)  # raises if it was destroyed
            if session.kernel is kernel:
                raise error from e

    async def complete(self, session: Session, code: str, options: dict) -> list[str]:
        """Completions from the python3 REPL; none while a run is active (it is busy)."""
        if session.state != IDLE or not session.language.completes:
            return []
        try:
            reply, _ = await session.kernel.request(
                "complete", code=code, options=options, timeout=COMPLETE_SECONDS
            )
        except KernelGone:
            return []
        items = reply.get("items")
        valid = isinstance(items, list) and all(isinstance(i, str) for i in items)
        return items if valid else []

    # -- terminals ---------------------------------------------------------------

    async def open_terminal(
        self, session: Session, rows: int = 24, cols: int = 80, shell: str = "bash"
    ) -> Terminal:
        """A shell on a pty in the kernel: its namespaces, cgroup, seccomp, uid and
        /home/work, with RLIMIT_CPU at the exec timeout (a busy program in it is
        stopped after that much CPU time; an idle shell lives on). Its CPU time is the
        kernel's, against its CPU credit. Closing it ends its processes, not the kernel."""
        if shell not in SHELLS:
            raise InvalidRequest(f"shell: one of {', '.join(SHELLS)}")
        if shell == "python" and session.language.name != "python3":
            raise InvalidRequest("shell: python is for python3 kernels")
        most = self.settings.limits.max_terminals_per_kernel
        kernel = session.kernel
        if len(kernel.terminals) >= most:
            raise QuotaExceeded(f"at most {most} terminals per kernel")
        await session.check_alive()
        env = {**kernel_environment(session.spec), "TERM": "xterm-256color"}
        cpu_seconds = -(-session.limits.exec_timeout_ms // 1000)
        session.keep_alive()
        try:
            return await kernel.open_terminal(SHELLS[shell], env, rows, cols, cpu_seconds)
        except KernelGone as e:
            raise await session.gone_error(kernel, e) from e

    # -- a kernel's files -------------------------------------------------------

    async def upload(self, session: Session, files: list[tuple[str, bytes]]) -> None:
        await kernel_files.upload(session, files)

    async def list_files(self, session: Session, path: str) -> dict:
        return await kernel_files.list_files(session.kernel, path, session)

    async def download(self, session: Session, paths: list[str]) -> list[tuple[str, bytes]]:
        return await kernel_files.download(session.kernel, paths, session)


def spawner_options(settings: EngineSettings, data_dir: str) -> dict[str, Any]:
    """How the server's spawner is started (SpawnerClient.start, spawner_argv): by the
    server, or as a service of its own (`sandbox-server --spawner-only`)."""
    sandbox = settings.sandbox
    keep = sandbox.keep_kernels_on_restart
    return {
        "spares": sandbox.spare_processes,
        "uids": sandbox.uid_range,
        "cgroup_layout": sandbox.forced_layout,
        "preimport": sandbox.preimport,
        "listen": os.path.join(data_dir, SPAWNER_SOCKET) if keep else None,
        "keep_for": sandbox.restart_wait_seconds if keep else 0.0,
    }


async def _last_spawner(path: str) -> tuple[SpawnerClient | None, str]:
    """The spawner the last server left at `path`, if it is there and speaks our
    protocol; else None, and why the last server's kernels are gone. One of another
    protocol (this server was upgraded) is stopped, its kernels with it."""
    try:
        spawner = await SpawnerClient.attach(path)
    except SpawnerError as e:  # busy: a server runs on this data directory
        message = f"another server runs on the data directory of {path}: stop it first ({e})"
        log.critical(message)
        raise RuntimeError(message) from None
    if spawner is None:
        return None, ""
    if spawner.protocol == spawner_protocol.VERSION:
        return spawner, ""
    log.warning("the last server's spawner speaks protocol %r, not %r: ending its kernels",
                spawner.protocol, spawner_protocol.VERSION)  # fmt: skip
    with contextlib.suppress(ProcessLookupError):
        os.kill(spawner.pid, signal.SIGTERM)  # it destroys its kernels and exits
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(spawner.wait_exited(), OLD_SPAWNER_EXIT_SECONDS)
    await spawner.close(keep_kernels=True)
    return None, "server upgraded: its kernels could not be kept"
