"""Idmapped mounts: a folder's files, owned by one uid on disk, are the kernel's own.

Every kernel runs as a uid of its own (sandbox.kernel_uids), but a virtual
folder outlives kernels and is shared by them: its files belong to FOLDER_UID
on disk. A kernel's pid 1 mounts each folder through an idmapping (Linux 5.12+,
mount_setattr(MOUNT_ATTR_IDMAP)) that shows FOLDER_UID as the kernel's uid and
stores what the kernel's uid writes as FOLDER_UID: the kernel owns its folders'
files, and the next kernel, with another uid, owns the same files. Ids the map
does not name show as nobody and cannot be written through the mount.

The map is a user namespace's: a child that does nothing but unshare one, whose
uid_map and gid_map the caller (root) writes and whose namespace it keeps open.
"""

from __future__ import annotations

import os

from . import syscalls
from .privileges import PID1_REAL_GID
from .runner import forking


def user_namespace(proc: str, inside: int, outside: int) -> int:
    """An fd of a new user namespace mapping uid and gid `inside` to `outside`.
    `proc` is a procfs of the caller's pid namespace. The caller must be root
    and single-threaded."""
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    done_r, done_w = os.pipe2(os.O_CLOEXEC)
    pid = forking.lean_fork()
    if pid == 0:
        try:
            os.close(done_w)  # so that the caller's close is our EOF
            os.close(ready_r)
            syscalls.unshare(syscalls.CLONE_NEWUSER)
            os.write(ready_w, b"u")
            os.read(done_r, 1)  # until the caller has the namespace: then EOF
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"u":
            raise OSError("the idmapping's user namespace could not be made")
        # Pid 1's real gid maps to itself: on some kernels (6.1, the v2 guest's;
        # not 6.18) an exec under no_new_privs with real gid != effective gid
        # (kernel-init's, and so its file helper's) makes every gid the real one,
        # and a gid the map lacks cannot create files through the mount (EOVERFLOW).
        gids = f"{inside} {outside} 1\n{PID1_REAL_GID} {PID1_REAL_GID} 1\n"
        for name, text in (("uid_map", f"{inside} {outside} 1\n"), ("gid_map", gids)):
            fd = os.open(f"{proc}/{pid}/{name}", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
        return os.open(f"{proc}/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(done_w)
        os.close(ready_r)
        os.waitpid(pid, 0)


def remap(target: str, userns_fd: int) -> None:
    """Replace the mount at `target` by an idmapped copy of it (same flags)."""
    tree = syscalls.open_tree(target, syscalls.OPEN_TREE_CLONE)
    try:
        syscalls.mount_setattr_idmap(tree, userns_fd)
        syscalls.umount(target)
        syscalls.move_mount(tree, target)
    finally:
        os.close(tree)
