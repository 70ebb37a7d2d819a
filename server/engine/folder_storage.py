"""Virtual folders' contents: persistent file systems that belong to an access key.

Their records live in the store (store.FolderRecords). Each
folder's contents live in an ext4 image, `<data dir>/folders/<id>.img`, of a fixed
size and inode count (`sandbox.folder_images`): kernels that mount a folder write
into the image and stop at ENOSPC there, so they cannot fill the host's disk, and
the image's size is the folder's reservation on it. The file is named by id, never
by the user's name for it, so a name can never become a path.

Kernel code can plant anything in a folder it mounts (symlinks to host files,
FIFOs). The host never opens a path inside a folder: usage is statvfs of the
image's file system plus a walk that opens directories only, beneath the folder and
through no symlink; a delete removes the image file. Every other file operation
runs inside a throw-away kernel that mounts the folder (see folders.py).

Blocking calls (mkfs, the usage walk, deletes) are for a worker thread, never the
event loop: the store is safe to share between threads.

Folders made before images (plain directories `<id>/`) keep working as they did,
without a quota; the server warns about them at start. Their usage is the same
budgeted walk, and a delete moves the directory into `.trash/`, which `rm -rf
--one-file-system` empties (no recursion limit, follows no symlink).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import subprocess
import threading
from collections.abc import Collection
from dataclasses import dataclass

from sandbox import folder_images
from sandbox.folder_images import LoopDevice
from sandbox.kernel_uids import FOLDER_UID, LEGACY_FOLDER_UID

from .store import Folder, FolderRecords

log = logging.getLogger("sandbox.server")

IMAGE_SUFFIX = ".img"
TRASH = ".trash"
WALK_BUDGET = 200_000  # entries a usage walk looks at; an image's inode quota is lower
REMOVE_TIMEOUT = 600.0  # seconds for `rm -rf` of one old directory folder


@dataclass(frozen=True)
class Usage:
    files: int
    bytes: int


class FolderBusy(RuntimeError):
    """A folder operation holds the folder: it cannot be deleted now."""


@dataclass
class _Held:
    device: LoopDevice
    holders: int  # kernel starts and folder operations in progress


class FolderStorage:
    """The folders' images and their loop devices; thread-safe."""

    def __init__(self, records: FolderRecords, root: str) -> None:
        self.records = records
        self.root = root
        self.trash = os.path.join(root, TRASH)
        os.makedirs(self.trash, mode=0o700, exist_ok=True)
        os.chmod(root, 0o700)  # images are root's alone: kernels reach them by device
        self._devices: dict[str, _Held] = {}
        self._devices_lock = threading.Lock()  # and attaches: one loop device per image
        old = [e.name for e in os.scandir(root) if e.is_dir(follow_symlinks=False)]
        old = [name for name in old if name != TRASH]
        if old:
            log.warning(
                "%d folder(s) in %s are plain directories from before folder images: they "
                "work as before but have no byte or inode quota; copy their files into a "
                "new folder to give them one (%s)", len(old), root, ", ".join(sorted(old)[:10]),
            )  # fmt: skip
        # a delete that a crash interrupted left its files here
        threading.Thread(target=self.sweep_trash, name="folder-trash", daemon=True).start()

    def image(self, folder: Folder) -> str:
        return os.path.join(self.root, folder.id + IMAGE_SUFFIX)

    def owner(self, folder: Folder) -> int:
        """Who owns the folder's files on disk, which kernels mount as their own uid
        (sandbox.idmapped): FOLDER_UID in an image; a plain directory from before
        images has the files of the single uid every kernel had then."""
        return FOLDER_UID if self._directory(folder) is None else LEGACY_FOLDER_UID

    def _directory(self, folder: Folder) -> str | None:
        """The folder's plain directory, if it is one from before images."""
        path = os.path.join(self.root, folder.id)
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(os.lstat(path).st_mode):
                return path
        return None

    # -- the folders -----------------------------------------------------------

    def create(self, access_key: str, name: str, size: int, inodes: int) -> Folder:
        """A new empty folder of `size` bytes and `inodes` files (blocking: mkfs);
        store.Duplicate if the key has one of that name, OSError if the image cannot
        be made (ENOSPC: the host's disk has no room for it)."""
        folder = self.records.add(access_key, name)
        try:
            folder_images.create_image(self.image(folder), size, inodes)
        except BaseException:
            self.records.remove(folder.id)
            raise
        return folder

    def reserved_bytes(self, access_key: str) -> int:
        """What the key's folders hold on the host's disk: each image's size (its
        reservation), an old directory folder's counted usage (blocking)."""
        total = 0
        for folder in self.records.list(access_key):
            try:
                total += os.stat(self.image(folder)).st_size
            except FileNotFoundError:
                total += self.usage(folder).bytes
        return total

    # -- devices ---------------------------------------------------------------

    def acquire(self, folder: Folder) -> str:
        """What a kernel mounts for the folder: its image's loop device, attached and
        held until `release` and `release_idle` (blocking: an ioctl or two). An old
        directory folder is its directory."""
        directory = self._directory(folder)
        if directory is not None:
            return directory
        with self._devices_lock:
            held = self._devices.get(folder.id)
            if held is None:
                held = self._devices[folder.id] = _Held(LoopDevice.attach(self.image(folder)), 0)
            held.holders += 1
            return held.device.path

    def release(self, folder: Folder) -> None:
        """One holder less; the device stays until `release_idle` finds it unused."""
        with self._devices_lock:
            held = self._devices.get(folder.id)
            if held is not None:
                held.holders -= 1

    def release_idle(self, mounted: Collection[str]) -> list[LoopDevice]:
        """Forget the devices of folders that nothing holds and no live kernel (ids in
        `mounted`) mounts, and return them for the caller to close (closing may wait
        for the device to detach). Called on the event loop, where the registry's view
        of live kernels cannot change under it."""
        idle = []
        with self._devices_lock:
            for folder_id, held in list(self._devices.items()):
                if held.holders == 0 and folder_id not in mounted:
                    idle.append(self._devices.pop(folder_id).device)
        return idle

    def attached(self) -> list[str]:
        """Ids of the folders whose device is held now."""
        with self._devices_lock:
            return list(self._devices)

    # -- contents --------------------------------------------------------------

    def usage(self, folder: Folder) -> Usage:
        """Files and bytes in a folder (blocking): statvfs of its file system, and a
        budgeted walk for the file count (see folder_images.LoopDevice.measure)."""
        directory = self._directory(folder)
        if directory is not None:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                files, size, _complete = folder_images.count_files(fd, WALK_BUDGET, sizes=True)
            finally:
                os.close(fd)
            return Usage(files, size)
        self.acquire(folder)
        try:
            with self._devices_lock:
                device = self._devices[folder.id].device
            measured = device.measure(WALK_BUDGET)
        finally:
            self.release(folder)
        return Usage(measured.files, measured.bytes)

    def delete(self, folder: Folder) -> None:
        """Remove a folder that no kernel mounts (blocking). Its files go first, the
        row last: the image (or old directory) is moved into the trash, which is
        emptied now and at every start, so no crash loses track of its bytes.
        FolderBusy while a folder operation holds it."""
        with self._devices_lock:
            held = self._devices.get(folder.id)
            if held is not None and held.holders:
                raise FolderBusy(folder.name)
            if held is not None:
                del self._devices[folder.id]
        if held is not None:
            held.device.close()
        source = self._directory(folder) or self.image(folder)
        trashed = os.path.join(self.trash, os.path.basename(source))
        with contextlib.suppress(FileNotFoundError):
            os.rename(source, trashed)
        self.records.remove(folder.id)
        _remove(trashed)

    def sweep_trash(self) -> None:
        """Remove whatever is in the trash (interrupted deletes)."""
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.trash):
                _remove(entry.path)

    def close(self) -> None:
        with self._devices_lock:
            held, self._devices = list(self._devices.values()), {}
        for h in held:
            h.device.close()


def _remove(path: str) -> None:
    """Unlink an image; an old directory folder goes with `rm -rf`, which walks any
    depth without recursion, follows no symlink and stays on its file system."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
            return
    except FileNotFoundError:
        return
    try:
        subprocess.run(
            ["rm", "-rf", "--one-file-system", "--", path],
            capture_output=True, timeout=REMOVE_TIMEOUT, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("folder trash: could not remove %s (%s); retried at next start", path, e)
