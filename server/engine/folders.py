"""Virtual folders as a key sees them: create within its quotas, list, describe,
delete, and work on their files; and their loop devices held while they are used.

File operations on a folder's contents are never done by the host on paths that
kernel code may have shaped: each one starts a small throw-away kernel with the
folder bound at /home/work/folder, and its pid 1 does the work
(`sandbox.runner.files`: walked fd by fd, no symlink followed, FIFOs never opened
for blocking I/O), as the kernels' user, in a mount namespace where no host file
exists. That costs a kernel start (milliseconds) per operation, and each such
kernel counts against the key's concurrency and the server's max_kernels while it
lives, as a create does: otherwise a burst of slow folder operations would hold
kernels beyond any limit.

A kernel start holds the devices of the folders it mounts until the kernel is in
the registry; from then on the registry's `mounting` keeps them. A sweeper on the
event loop (where the registry's view cannot change under it) lets go of devices
that nothing holds and no live kernel mounts; a device detaches itself once its
last mount is gone, so after a folder's last user neither a mount nor a loop
device is left.

What blocks (mkfs, usage, deletes) runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from sandbox.folder_images import LoopDevice
from sandbox.kernel import Kernel, KernelGone
from sandbox.spawner_client import SpawnerClient, SpawnerError
from sandbox.spec import WORK_DIR, Bind, MiB

from . import kernel_files
from .errors import (
    ExecutionFailed,
    FolderExists,
    FolderNotFound,
    InvalidRequest,
    KernelStartFailed,
    NoCapacity,
    QuotaExceeded,
)
from .folder_storage import FolderBusy, FolderStorage
from .registry import Registry, start_error
from .settings import EngineSettings
from .store import Duplicate, Folder, FolderRecords, Keypair

# v3's rule (spec §7.4), at most 64 characters
NAME_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9._-]{0,62}[a-zA-Z0-9])?$")
INSIDE = "folder"  # where a folder kernel mounts the folder, under /home/work
PREFIX = INSIDE + "/"
SWEEP_SECONDS = 0.5
# A folder kernel runs no user code: the file helper needs little.
FOLDER_KERNEL = {"pids": 8, "work_bytes": 1 * MiB, "tmp_bytes": 1 * MiB, "preimported": False}
FOLDER_KERNEL_MEMORY = 64 * MiB
# what the file helper says when a write meets the folder's byte or inode quota
FULL = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))


@dataclass(frozen=True)
class FolderInfo:
    folder: Folder
    files: int
    bytes: int


class Folders:
    """The folders of every key, and the devices of those in use."""

    def __init__(
        self,
        settings: EngineSettings,
        records: FolderRecords,
        storage: FolderStorage,
        registry: Registry,
        spawner: SpawnerClient,
    ) -> None:
        self.settings = settings
        self.records = records
        self.storage = storage
        self.registry = registry
        self.spawner = spawner
        self._sweeper: asyncio.Task | None = None

    # -- the folders -----------------------------------------------------------

    def get(self, access_key: str, name_or_id: str) -> Folder:
        folder = self.records.get(access_key, name_or_id)
        if folder is None:
            raise FolderNotFound(f"no folder named {name_or_id!r}")
        return folder

    def list(self, access_key: str) -> list[Folder]:
        return self.records.list(access_key)

    async def create(self, access_key: str, name: object) -> Folder:
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise InvalidRequest(
                "name: 1-64 letters, digits, '.', '_' or '-', starting and ending with "
                "a letter or digit"
            )
        limits = self.settings.folders
        if len(self.records.list(access_key)) >= limits.max_folders_per_key:
            raise QuotaExceeded(f"at most {limits.max_folders_per_key} folders per key")
        # the key's folders are their images' sizes: what they can hold, not what they do
        used = await asyncio.to_thread(self.storage.reserved_bytes, access_key)
        if used + limits.folder_bytes > limits.max_folder_bytes_per_key:
            raise QuotaExceeded(
                f"folders of this key may hold {limits.max_folder_bytes_per_key} bytes; "
                f"{used} are reserved and a folder takes {limits.folder_bytes}"
            )
        try:
            return await asyncio.to_thread(
                self.storage.create, access_key, name, limits.folder_bytes, limits.folder_inodes
            )
        except Duplicate:
            raise FolderExists(f"{name!r}") from None
        except OSError as e:
            raise NoCapacity(f"no room for a folder of {limits.folder_bytes} bytes: {e}") from e

    async def describe(self, folder: Folder) -> FolderInfo:
        try:
            usage = await asyncio.to_thread(self.storage.usage, folder)
        except FileNotFoundError as e:  # its image was removed behind the server's back
            detail = f"folder {folder.name!r}: its files are gone from the data directory ({e})"
            raise FolderNotFound(f"{detail}; delete it") from e
        finally:
            self._sweep_soon()  # the measure attached its image; nothing else may let go
        return FolderInfo(folder, usage.files, usage.bytes)

    async def delete(self, folder: Folder) -> None:
        users = self.registry.mounting(folder.id)
        if users:
            raise InvalidRequest(
                f"folder {folder.name!r} is mounted by {len(users)} kernel(s) "
                f"({', '.join(users)}); destroy them first"
            )
        await self.let_go()  # the devices of kernels that are gone
        try:
            await asyncio.to_thread(self.storage.delete, folder)
        except FolderBusy:
            raise InvalidRequest(
                f"folder {folder.name!r} is in use by a folder operation"
            ) from None

    # -- their files -----------------------------------------------------------

    async def upload(self, owner: Keypair, folder: Folder, files: list[tuple[str, bytes]]) -> None:
        async with self._kernel(owner, folder) as kernel:
            for path, data in files:
                await self._write(kernel, folder, "upload", data, path=PREFIX + path)

    async def mkdir(self, owner: Keypair, folder: Folder, path: str) -> None:
        async with self._kernel(owner, folder) as kernel:
            await self._write(kernel, folder, "mkdir", path=PREFIX + path)

    async def list_files(self, owner: Keypair, folder: Folder, path: str) -> list:
        async with self._kernel(owner, folder) as kernel:
            listing = await kernel_files.list_files(kernel, PREFIX + path)
        return listing["files"]

    async def download(
        self, owner: Keypair, folder: Folder, paths: list[str]
    ) -> list[tuple[str, bytes]]:
        async with self._kernel(owner, folder) as kernel:
            contents = await kernel_files.download(kernel, [PREFIX + p for p in paths])
        return [(path, content) for path, (_inside, content) in zip(paths, contents, strict=True)]

    async def delete_files(
        self, owner: Keypair, folder: Folder, paths: list[str], recursive: bool
    ) -> None:
        async with self._kernel(owner, folder) as kernel:
            for path in paths:
                await kernel_files.ask(kernel, "delete", path=PREFIX + path, recursive=recursive)

    async def _write(
        self, kernel: Kernel, folder: Folder, op: str, blob: bytes = b"", **fields: object
    ) -> None:
        """A writing file op in a folder kernel; a full folder is QuotaExceeded."""
        try:
            await kernel_files.ask(kernel, op, blob, **fields)
        except InvalidRequest as e:
            if any(text in e.detail for text in FULL):
                raise QuotaExceeded(f"folder {folder.name!r} is full: {e.detail}") from e
            raise

    @contextlib.asynccontextmanager
    async def _kernel(self, owner: Keypair, folder: Folder) -> AsyncIterator[Kernel]:
        """A kernel that mounts `folder` read-write at /home/work/folder, for one
        operation, counted against the key's concurrency and max_kernels while it lives."""
        kernel_id = "folder-" + secrets.token_hex(8)
        async with (
            self.registry.counted(owner.access_key, owner.concurrency_limit),
            self.holding([folder]) as sources,
        ):
            bind = Bind(sources[folder.id], f"{WORK_DIR}/{INSIDE}", False, self.owner(folder))
            spec = self.settings.sandbox.kernel_spec(FOLDER_KERNEL_MEMORY, (bind,), **FOLDER_KERNEL)
            try:
                pid, sock = await self.spawner.spawn(kernel_id, spec)
            except SpawnerError as e:
                raise start_error(e, "folder access: ") from e
            try:
                registry = self.registry
                kernel = await Kernel.connect(kernel_id, pid, sock, registry.bounds, registry.held)
                try:
                    await kernel.wait_ready()
                    yield kernel
                except KernelGone as e:
                    raise ExecutionFailed(f"folder access: {e}") from e
                finally:
                    await kernel.close()
            finally:
                with contextlib.suppress(SpawnerError):
                    await self.spawner.destroy(kernel_id)

    # -- devices in use ----------------------------------------------------------

    def owner(self, folder: Folder) -> int:
        """The uid that owns the folder's files on disk (see FolderStorage.owner)."""
        return self.storage.owner(folder)

    @contextlib.asynccontextmanager
    async def holding(self, folders: Sequence[Folder]) -> AsyncIterator[dict[str, str]]:
        """{folder id: what a kernel mounts for it} while the block runs."""
        sources: dict[str, str] = {}
        try:
            for folder in folders:
                try:
                    sources[folder.id] = await asyncio.to_thread(self.storage.acquire, folder)
                except OSError as e:  # its image went missing, no loop device is free, ...
                    raise KernelStartFailed(f"folder {folder.name!r}: {e}") from e
            yield sources
        finally:
            for folder in folders:
                if folder.id in sources:
                    self.storage.release(folder)
            self._sweep_soon()

    def _sweep_soon(self) -> None:
        """Have the sweeper close devices once idle, unless it runs already: after
        every use of a folder's device (a kernel's start, a measure)."""
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep())

    async def _sweep(self) -> None:
        """Let go of idle devices until none is held."""
        try:
            while self.storage.attached():
                await asyncio.sleep(SWEEP_SECONDS)
                await self.let_go()
        finally:
            self._sweeper = None

    async def let_go(self) -> None:
        """Close the devices of folders that nothing holds and no live kernel mounts."""
        attached = self.storage.attached()
        mounted = {folder_id for folder_id in attached if self.registry.mounting(folder_id)}
        idle = self.storage.release_idle(mounted)
        if idle:
            await asyncio.to_thread(_close, idle)


def _close(devices: list[LoopDevice]) -> None:
    for device in devices:
        device.close()
