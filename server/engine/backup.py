"""Backups of a data directory, taken while the server runs, and their restore.

What a server keeps is its store (keys, the faces' keys, folder records, the web
page's sessions) and its folders' images; the rest of a data directory is a cache
(Jobe's files) or made again at start. A backup is a directory:

    backup.json        what it holds (FORMAT, when, the folders and their sizes)
    sandbox.sqlite     the store, from SQLite's online backup API: one moment of it
    folders/<id>.img   each folder's ext4 image, copied while frozen

A folder a kernel is writing into is copied consistently by freezing its file
system (FIFREEZE through a mount of the same loop device, the superblock the
kernels' mounts share): the kernels' writes wait during the copy, and the image
is copied with its journal committed, as if cleanly unmounted. The copies are
sparse: a folder's unwritten reservation costs the backup nothing; a restore
allocates it again. The store is copied first and the images after it, so a
folder made during the backup is not in it, and one deleted during it is taken
out of the copied store. Old plain-directory folders (from before images) are
copied with `cp -a`, without a freeze.

A freeze outlives a process killed in the middle of a copy (SIGKILL); a later
backup takes the data directory's lock and thaws what it finds frozen.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from sandbox import folder_images
from sandbox.folder_images import LoopDevice

from .folder_storage import IMAGE_SUFFIX
from .store import DATABASE_NAME
from .store_backends import open_store

FORMAT = 1
MANIFEST = "backup.json"
FOLDERS = "folders"
LOCK = "backup.lock"
COPY_TIMEOUT = 3600.0  # seconds for `cp -a` of one old directory folder


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why."""


@dataclass(frozen=True)
class Summary:
    keys: int
    folders: int
    bytes: int  # what the folders' copies hold on disk


def backup(data_dir: str, target: str) -> Summary:
    """Copy the data directory's store and folders into the new directory `target`
    (or an empty one); on failure nothing of it is left."""
    database = os.path.join(data_dir, DATABASE_NAME)
    if not os.path.exists(database):
        raise BackupError(f"no store at {database}")
    try:
        os.makedirs(target, mode=0o700)
    except FileExistsError:
        if not os.path.isdir(target) or os.listdir(target):
            raise BackupError(f"{target} exists and is not an empty directory") from None
        os.chmod(target, 0o700)
    try:
        return _backup(data_dir, target)
    except BaseException:
        for entry in os.listdir(target):
            _remove(os.path.join(target, entry))
        raise


def _backup(data_dir: str, target: str) -> Summary:
    os.mkdir(os.path.join(target, FOLDERS), 0o700)
    with _exclusive(data_dir):
        live = open_store(data_dir)
        try:
            live.copy_to(os.path.join(target, DATABASE_NAME))
        finally:
            live.close()
        copied = open_store(target)
        try:
            folders, written = [], 0
            for folder in copied.folders.all():
                size = _copy_folder(data_dir, target, folder.id)
                if size is None:  # deleted since the store was copied
                    copied.folders.remove(folder.id)
                    continue
                written += size
                folders.append({"id": folder.id, "key": folder.access_key, "name": folder.name})
            keys = len(copied.keys.list())
        finally:
            copied.close()
    manifest = {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "source": os.path.abspath(data_dir),
        "keys": keys,
        "folders": folders,
    }
    with open(os.path.join(target, MANIFEST), "x") as f:
        json.dump(manifest, f, indent=2)
    return Summary(keys, len(folders), written)


def restore(source: str, data_dir: str) -> Summary:
    """Fill a new data directory from the backup `source`: its store, and its folders'
    images with their full size allocated again (ENOSPC if the disk has no room)."""
    manifest = _manifest(source)
    if os.path.exists(os.path.join(data_dir, DATABASE_NAME)):
        raise BackupError(f"{data_dir} holds a store already: restore into a new data directory")
    images = os.path.join(data_dir, FOLDERS)
    os.makedirs(images, mode=0o700, exist_ok=True)
    made: list[str] = []
    try:
        written = _restore_folders(source, manifest["folders"], images, made)
    except BaseException:
        for path in made:  # so that the restore can be tried again
            _remove(path)
        raise
    database = os.path.join(data_dir, DATABASE_NAME)
    shutil.copyfile(os.path.join(source, DATABASE_NAME), database)
    os.chmod(database, 0o600)
    open_store(data_dir).close()  # it opens: the tables are there
    return Summary(manifest["keys"], len(manifest["folders"]), written)


def _restore_folders(source: str, folders: list[dict], images: str, made: list[str]) -> int:
    written = 0
    for folder in folders:
        copy = os.path.join(source, FOLDERS, folder["id"] + IMAGE_SUFFIX)
        if not os.path.exists(copy):  # an old directory folder
            made.append(os.path.join(images, folder["id"]))
            written += _copy_tree(os.path.join(source, FOLDERS, folder["id"]), images)
            continue
        path = os.path.join(images, folder["id"] + IMAGE_SUFFIX)
        written += folder_images.copy_sparse(copy, path)
        made.append(path)
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.posix_fallocate(fd, 0, os.fstat(fd).st_size)  # the reservation, again
        finally:
            os.close(fd)
    return written


def _manifest(source: str) -> dict:
    """The backup's manifest, checked against what the directory holds."""
    try:
        with open(os.path.join(source, MANIFEST)) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise BackupError(f"{source} is not a backup (no {MANIFEST})") from None
    except (OSError, ValueError) as e:
        raise BackupError(f"{source}/{MANIFEST}: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{source}/{MANIFEST}: not a backup of format {FORMAT}")
    folders = manifest.get("folders")
    if not isinstance(folders, list) or not all(
        isinstance(f, dict) and isinstance(f.get("id"), str) and f["id"].isalnum() for f in folders
    ):
        raise BackupError(f"{source}/{MANIFEST}: a bad folder list")
    if not os.path.isfile(os.path.join(source, DATABASE_NAME)):
        raise BackupError(f"{source} has no {DATABASE_NAME}")
    for folder in folders:
        base = os.path.join(source, FOLDERS, folder["id"])
        if not (os.path.isfile(base + IMAGE_SUFFIX) or os.path.isdir(base)):
            raise BackupError(f"{source}: folder {folder['id']} is missing")
    return manifest


def _copy_folder(data_dir: str, target: str, folder_id: str) -> int | None:
    """Copy one folder into the backup; its bytes, None if it is gone."""
    image = os.path.join(data_dir, FOLDERS, folder_id + IMAGE_SUFFIX)
    copy = os.path.join(target, FOLDERS, folder_id + IMAGE_SUFFIX)
    try:
        device = LoopDevice.attach(image)
    except FileNotFoundError:
        directory = os.path.join(data_dir, FOLDERS, folder_id)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(os.lstat(directory).st_mode):
                return _copy_tree(directory, os.path.join(target, FOLDERS))
        return None
    try:
        # The data directory's lock is ours: a freeze found now was left by a
        # backup that was killed, and is thawed before this one's.
        with device.frozen(thaw_first=True):
            return folder_images.copy_sparse(image, copy)
    finally:
        device.close()


def _copy_tree(directory: str, into: str) -> int:
    """An old directory folder, copied as it is (symlinks as symlinks)."""
    try:
        subprocess.run(
            ["cp", "-a", "--one-file-system", "--", directory, into],
            capture_output=True, text=True, timeout=COPY_TIMEOUT, check=True,
        )  # fmt: skip
    except subprocess.CalledProcessError as e:
        raise BackupError(f"copying {directory}: {e.stderr.strip()[:300]}") from None
    copied = os.path.join(into, os.path.basename(directory))
    return sum(
        os.lstat(os.path.join(root, name)).st_blocks * 512
        for root, _dirs, files in os.walk(copied)
        for name in files
    )


@contextlib.contextmanager
def _exclusive(data_dir: str) -> Iterator[None]:
    """One backup of a data directory at a time."""
    fd = os.open(os.path.join(data_dir, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(f"another backup of {data_dir} is running") from None
        yield
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    """What a failed backup or restore wrote: a file, or a directory with its tree."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
