"""Folder images: an ext4 file system in a file, reached through a loop device.

A virtual folder is an image file of a fixed size with a fixed number of inodes,
so what kernels write into it stops at ENOSPC inside the kernel and the host's
disk never holds more than the image. Kernels mount the loop device (see
`mounts.mount_block_device`): their mountinfo shows `/dev/loopN`, not a host path.

One image must only ever be behind one loop device: two loop devices are two
block devices, so two mounts would be two ext4 instances writing one file and
would corrupt it. Mounts of one loop device share one superblock, however many
mount namespaces they are in. So `attach` reuses the loop device that already
serves an image, and the caller serialises attaches (FolderStore's lock).

Loop devices are configured with autoclear: the device detaches itself when the
last holder (our fd, a mount) goes, so a crash leaves none behind.

This module knows Linux, not HTTP: sizes in bytes, errors as OSError.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import fcntl
import os
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .kernel_uids import FOLDER_UID

# <linux/loop.h>
LOOP_CONFIGURE = 0x4C0A
LOOP_GET_STATUS64 = 0x4C05
LOOP_CTL_GET_FREE = 0x4C82
LO_FLAGS_AUTOCLEAR = 4
_LOOP_INFO64 = struct.Struct("=QQQQQIIII64s64s32s2Q")  # struct loop_info64, 232 bytes
_LOOP_CONFIG = struct.Struct("=II232s8Q")  # struct loop_config

# <linux/fs.h>: freeze and thaw a mounted file system
FIFREEZE, FITHAW = 0xC0045877, 0xC0045878
COPY_CHUNK = 64 * 2**20  # bytes per copy_file_range call
# <linux/mount.h>; x86_64 system call numbers (the only architecture kernels run on)
_SYS_FSOPEN, _SYS_FSCONFIG, _SYS_FSMOUNT, _SYS_OPENAT2 = 430, 431, 432, 437
FSOPEN_CLOEXEC = 1
FSCONFIG_SET_STRING, FSCONFIG_CMD_CREATE = 1, 6
FSMOUNT_CLOEXEC = 1
MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC = 2, 4, 8
# <linux/openat2.h>: RESOLVE_NO_XDEV | NO_MAGICLINKS | NO_SYMLINKS | BENEATH
_RESOLVE_STRICT = 0x01 | 0x02 | 0x04 | 0x08

MKFS_TIMEOUT = 60.0  # seconds; mkfs of an image of a few hundred MiB takes well under 1 s
ATTACH_TRIES = 20  # LOOP_CTL_GET_FREE races other users of loop devices
BYTES_PER_INODE = 4096
MIN_INODES = 16

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(number: int, *args: object) -> int:
    result = _libc.syscall(ctypes.c_long(number), *args)
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


@dataclass(frozen=True)
class ImageUsage:
    files: int  # entries that are not directories (counted up to the walk's budget)
    bytes: int  # blocks in use, as statvfs says
    complete: bool  # False when the walk stopped at its budget: `files` is a lower bound


def create_image(path: str, size: int, inodes: int) -> None:
    """A new ext4 image at `path`, `size` bytes allocated on the host disk (so the
    folder's bytes are reserved, not promised), at most `inodes` files (and at most
    one per BYTES_PER_INODE: inode tables are 256 bytes an inode), owned by the
    kernels' user. OSError (ENOSPC when the host disk has no room); nothing is left
    behind on failure."""
    inodes = max(MIN_INODES, min(inodes, size // BYTES_PER_INODE))
    partial = path + ".new"
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)
        # nodiscard: mkfs would punch the allocation back out of the file
        _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-N", str(inodes), "-E",
              f"nodiscard,root_owner={FOLDER_UID}:{FOLDER_UID}", partial])  # fmt: skip
        # kernels and listings should find an empty folder, not ext4's lost+found
        _run(["debugfs", "-w", "-R", "rmdir lost+found", partial])
        os.rename(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def _run(argv: list[str]) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=MKFS_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise OSError(f"{argv[0]} took more than {MKFS_TIMEOUT} s") from e
    if done.returncode != 0:
        raise OSError(f"{argv[0]} failed: {(done.stderr or done.stdout).strip()[:500]}")


class LoopDevice:
    """An image attached to a loop device, held open (and so attached) until close."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def attach(cls, image: str) -> LoopDevice:
        """The loop device serving `image`: the one that already does (a kernel may
        still hold it), else a new one with autoclear. The caller serialises attaches."""
        target = os.stat(image)
        # Another process (sandbox-admin backup, beside the server) may attach the
        # same image at the same moment: the lock makes the second one find the
        # first one's device. A separate open file: the device keeps its own.
        lock_fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            return cls._attach_locked(image, target)
        finally:
            os.close(lock_fd)

    @classmethod
    def _attach_locked(cls, image: str, target: os.stat_result) -> LoopDevice:
        for _ in range(ATTACH_TRIES):
            for device in loops_backing(image):
                held = _open_if_backing(device, target)
                if held is not None:
                    return held
            with open("/dev/loop-control", "rb", buffering=0) as control:
                number = fcntl.ioctl(control.fileno(), LOOP_CTL_GET_FREE)
            device = f"/dev/loop{number}"
            fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
            image_fd = os.open(image, os.O_RDWR | os.O_CLOEXEC)
            try:
                info = bytearray(_LOOP_INFO64.size)
                struct.pack_into("=I", info, 52, LO_FLAGS_AUTOCLEAR)  # lo_flags
                name = image.encode()[:63]
                info[56 : 56 + len(name)] = name  # lo_file_name, for losetup's eyes
                config = _LOOP_CONFIG.pack(image_fd, 0, bytes(info), *([0] * 8))
                fcntl.ioctl(fd, LOOP_CONFIGURE, config)
            except OSError:
                os.close(fd)
                time.sleep(0.01)  # another process took that device first
                continue
            finally:
                os.close(image_fd)
            return cls(device, fd)
        raise OSError(f"no free loop device for {image}")

    def close(self) -> None:
        """Let go; the device detaches once no mount holds it either."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def measure(self, budget: int) -> ImageUsage:
        """The file system's usage, from statvfs of a mount that exists only as an
        fd (fsmount: in no mount namespace, gone on close, the same superblock as the
        kernels' mounts). Files are counted by a walk of at most `budget` entries that
        opens only directories and follows no symlink (`count_files`)."""
        mount_fd = _detached_mount(self.path)
        try:
            vfs = os.fstatvfs(mount_fd)
            files, _size, complete = count_files(mount_fd, budget)
        finally:
            os.close(mount_fd)
        return ImageUsage(files, (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize, complete)

    @contextlib.contextmanager
    def frozen(self, thaw_first: bool = False) -> Iterator[None]:
        """The file system held still: every write from kernels that mount it waits
        until the block ends, and what was written before is on the image, journal
        committed (FIFREEZE; the image reads as cleanly unmounted). `thaw_first`
        lets go of a freeze a killed process left behind (the caller knows no other
        holds one). OSError EBUSY if another freeze holds it."""
        mount_fd = _detached_mount(self.path)
        try:
            root = _open_beneath(mount_fd, ".")
            try:
                if thaw_first:
                    with contextlib.suppress(OSError):
                        fcntl.ioctl(root, FITHAW, 0)
                fcntl.ioctl(root, FIFREEZE, 0)
                try:
                    yield
                finally:
                    fcntl.ioctl(root, FITHAW, 0)
            finally:
                os.close(root)
        finally:
            os.close(mount_fd)


def copy_sparse(source: str, target: str) -> int:
    """Copy the file `source` into a new file `target` (mode 0600), its holes (and
    ext4's allocated but never written extents) left as holes; the bytes written."""
    written = 0
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(src).st_size
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            offset = 0
            while offset < size:
                try:
                    start = os.lseek(src, offset, os.SEEK_DATA)
                except OSError as e:
                    if e.errno == errno.ENXIO:  # nothing but a hole after offset
                        break
                    raise
                end = os.lseek(src, start, os.SEEK_HOLE)
                while start < end:
                    n = os.copy_file_range(src, dst, min(end - start, COPY_CHUNK), start, start)
                    if n == 0:
                        raise OSError(f"{source} shrank while it was copied")
                    start += n
                    written += n
                offset = end
            os.ftruncate(dst, size)
            os.fsync(dst)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return written


def loops_backing(image: str) -> list[str]:
    """The loop devices whose backing file is `image` (by path, as sysfs shows it)."""
    wanted = os.path.realpath(image)
    found = []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir("/sys/block"):
            if not name.startswith("loop"):
                continue
            try:
                with open(f"/sys/block/{name}/loop/backing_file") as f:
                    backing = f.read().strip()
            except OSError:
                continue  # not attached
            if backing == wanted:
                found.append(f"/dev/{name}")
    return found


def _open_if_backing(device: str, target: os.stat_result) -> LoopDevice | None:
    """Hold `device` if it still serves the image `target` (it may be detaching)."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        raw = fcntl.ioctl(fd, LOOP_GET_STATUS64, bytes(_LOOP_INFO64.size))
        lo_device, lo_inode = struct.unpack_from("=QQ", raw)
        if (os.major(lo_device), os.minor(lo_device), lo_inode) == (
            os.major(target.st_dev),
            os.minor(target.st_dev),
            target.st_ino,
        ):
            return LoopDevice(device, fd)
    except OSError:
        pass
    os.close(fd)
    return None


def _detached_mount(device: str) -> int:
    fs_fd = _syscall(_SYS_FSOPEN, b"ext4", FSOPEN_CLOEXEC)
    try:
        _syscall(_SYS_FSCONFIG, fs_fd, FSCONFIG_SET_STRING, b"source", device.encode(), 0)
        _syscall(_SYS_FSCONFIG, fs_fd, FSCONFIG_CMD_CREATE, None, None, 0)
        flags = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC
        return _syscall(_SYS_FSMOUNT, fs_fd, FSMOUNT_CLOEXEC, flags)
    finally:
        os.close(fs_fd)


def count_files(dir_fd: int, budget: int, sizes: bool = False) -> tuple[int, int, bool]:
    """(non-directories, their bytes if `sizes`, whether the walk was complete) under
    the directory `dir_fd`. Breadth first, one fd open at a time, each directory
    opened with openat2 beneath `dir_fd`, on its file system and through no symlink,
    so nothing a kernel planted (a symlink to a host path, a FIFO) is ever followed or
    opened; entry types come from the directory, sizes from lstat. At most `budget`
    entries are looked at."""
    files = size = seen = 0
    pending = collections.deque(["."])
    while pending:
        relative = pending.popleft()
        try:
            fd = _open_beneath(dir_fd, relative)
        except OSError:
            continue  # swapped for a symlink, removed, or a path too long: not counted
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    seen += 1
                    if seen > budget:
                        return files, size, False
                    with contextlib.suppress(OSError):  # kernels write while we count
                        if sizes:
                            size += entry.stat(follow_symlinks=False).st_blocks * 512
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(f"{relative}/{entry.name}")
                        else:
                            files += 1
        finally:
            os.close(fd)
    return files, size, True


def _open_beneath(dir_fd: int, path: str) -> int:
    how = struct.pack("=QQQ", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, 0, _RESOLVE_STRICT)
    return _syscall(_SYS_OPENAT2, dir_fd, path.encode(), how, len(how))
