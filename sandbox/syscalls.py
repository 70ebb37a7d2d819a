"""The few Linux system calls Python 3.11's `os` module lacks, through ctypes.

Kept in one place so the isolation modules read as the recipe they implement.
Every wrapper raises OSError with the errno and the call's arguments.
"""

from __future__ import annotations

import ctypes
import functools
import os
import struct

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
]

# <sched.h>
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# <sys/mount.h>
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

# <linux/prctl.h>
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_SECCOMP = 22
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
SECCOMP_MODE_FILTER = 2

_SYS_PIVOT_ROOT = 155  # x86_64; the only architecture the seccomp filter admits
_SYS_CLONE = 56
_SYS_CAPSET = 126
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_SYS_CLONE3 = 435
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
OPEN_TREE_CLONE = 1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_IDMAP = 0x00100000
CLONE_PARENT = 0x00008000
CLONE_INTO_CGROUP = 0x200000000
_SIGCHLD = 17
# syscall(2) with the GIL held across it (PyDLL), and its result ignored: the
# caller of fork_sibling never holds its child's pid (sandbox.zygote says why).
_libc_syscall_void = ctypes.PyDLL(None, use_errno=True).syscall
_libc_syscall_void.restype = None


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_install(program: bytes) -> None:
    """Install a compiled BPF seccomp program (8 bytes per instruction) on this
    thread; the caller must have set no_new_privs."""
    fprog = _seccomp_fprog(program)
    result = _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0)
    _check(result, "prctl(PR_SET_SECCOMP)")


@functools.cache
def _seccomp_fprog(program: bytes) -> _SockFprog:
    """The sock_fprog of `program`, made once per program and kept (with its buffer).
    A zygote makes it (seccomp_prepare): every kernel installs the same filter,
    and building the ctypes buffer and struct in each fresh fork cost it some
    twenty page copies."""
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
    fprog.buffer = buffer  # the struct points into it: keep it alive as long
    return fprog


def seccomp_prepare(program: bytes) -> None:
    """Make `program`'s sock_fprog now, in a process whose forks will install it."""
    _seccomp_fprog(program)


# capset(2)'s arguments for "no capabilities", made once: a ctypes array type made
# per call cost a fresh fork 0.3 ms of first-use page copies.
_CAPSET_HEADER = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
_CAPSET_NONE = (ctypes.c_uint32 * 6)()  # two 32-bit halves of each set, all zero


def capset_none() -> None:
    """Empty this thread's effective, permitted and inheritable capability sets, in
    one capset(2) (lowering them needs no privilege)."""
    _check(_libc.syscall(_SYS_CAPSET, _CAPSET_HEADER, _CAPSET_NONE), "capset")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), f"setns({nstype:#x})")


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    result = _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data))
    _check(result, f"mount({source!r}, {target!r}, {fstype!r}, {flags:#x}, {data!r})")


def umount(target: str, flags: int = MNT_DETACH | UMOUNT_NOFOLLOW) -> None:
    _check(_libc.umount2(_b(target), flags), f"umount({target!r})")


def pivot_root(new_root: str, put_old: str) -> None:
    result = _libc.syscall(_SYS_PIVOT_ROOT, _b(new_root), _b(put_old))
    _check(result, f"pivot_root({new_root!r}, {put_old!r})")


def open_tree(path: str, flags: int) -> int:
    """open_tree(2) at `path` (flags: OPEN_TREE_CLONE for a detached copy); an fd
    (close-on-exec)."""
    fd = _libc.syscall(_SYS_OPEN_TREE, AT_FDCWD, _b(path), flags | os.O_CLOEXEC)
    if fd < 0:
        _check(fd, f"open_tree({path!r})")
    return fd


def mount_setattr_idmap(mount_fd: int, userns_fd: int) -> None:
    """Make the detached mount `mount_fd` idmapped through the user namespace
    `userns_fd` (mount_setattr(2), MOUNT_ATTR_IDMAP)."""
    attr = struct.pack("QQQQ", MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
    result = _libc.syscall(
        _SYS_MOUNT_SETATTR, mount_fd, b"", AT_EMPTY_PATH, attr, ctypes.c_size_t(len(attr))
    )
    _check(result, "mount_setattr(MOUNT_ATTR_IDMAP)")


def move_mount(mount_fd: int, target: str) -> None:
    """Attach the detached mount `mount_fd` at `target` (move_mount(2))."""
    result = _libc.syscall(
        _SYS_MOVE_MOUNT, mount_fd, b"", AT_FDCWD, _b(target), MOVE_MOUNT_F_EMPTY_PATH
    )
    _check(result, f"move_mount({target!r})")


class _CloneArgs(ctypes.Structure):
    """struct clone_args of clone3(2), up to `cgroup` (CLONE_ARGS_SIZE_VER2)."""

    _fields_ = [
        (name, ctypes.c_uint64)
        for name in ("flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack",
                     "stack_size", "tls", "set_tid", "set_tid_size", "cgroup")
    ]  # fmt: skip


def fork_sibling(into_cgroup: int | None = None, sibling: bool = True) -> bool:
    """fork(2) as clone(CLONE_PARENT): the child is the caller's parent's child,
    which reaps it and is sent its SIGCHLD. True in the child, False in the
    caller, which is never told the child's pid; the child learns its own from
    getpid(). The caller must be single-threaded, and its child, which skips
    glibc's fork bookkeeping (its thread's cached tid is the caller's), must exec
    or exit without starting threads of its own; forks of it (glibc's) are
    whole again.

    `into_cgroup`: a cgroup v2 directory's fd (O_PATH will do) that the child
    starts in (clone3's CLONE_INTO_CGROUP): no migration afterwards, which on v2
    takes a lock that waits for an RCU grace period. `sibling` False: an ordinary
    child (for the tests of this call)."""
    before = os.getpid()
    flags = CLONE_PARENT if sibling else 0
    ctypes.set_errno(0)
    if into_cgroup is None:
        what = "clone(CLONE_PARENT)"
        _libc_syscall_void(_SYS_CLONE, flags | _SIGCHLD, 0, 0, 0, 0)
    else:
        what = "clone3(CLONE_INTO_CGROUP)"
        args = _CloneArgs(flags=flags | CLONE_INTO_CGROUP, exit_signal=_SIGCHLD, cgroup=into_cgroup)
        _libc_syscall_void(_SYS_CLONE3, ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
    err = ctypes.get_errno()
    if os.getpid() != before:
        return True
    if err:
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return False


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> None:
    _check(_libc.prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


def in_bounding_set(cap: int) -> bool:
    """Whether capability `cap` is still in this thread's bounding set."""
    result = _libc.prctl(PR_CAPBSET_READ, cap, 0, 0, 0)
    _check(min(result, 0), "prctl(PR_CAPBSET_READ)")  # 1 or 0; -1 for an error
    return result == 1


def argv_area() -> tuple[int, int]:
    """The bounds of this process's argv area, which /proc/<pid>/cmdline shows
    (fields 48-49 of /proc/self/stat). A fork has it at the same addresses."""
    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return int(fields[45]), int(fields[46])


def set_cmdline(text: str, area: tuple[int, int]) -> None:
    """Overwrite the argv area (`argv_area`, which a kernel's parent reads once:
    the kernel itself reads no file for it), the rest of it zeroed.

    A forked kernel's argv is the spawner's, which names host paths (the
    virtualenv's interpreter). The interpreter copied argv long ago, so nothing
    reads this memory again.
    """
    start, end = area
    data = text.encode()[: end - start - 1]
    ctypes.memset(start, 0, end - start)
    ctypes.memmove(start, data, len(data))
