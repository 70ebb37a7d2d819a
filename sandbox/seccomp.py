"""The kernel's seccomp filter: a deny list on top of everything else.

Default allow, so that compilers, JVMs and language runtimes work unmodified;
deny (EPERM) the syscall families that give a process reach beyond its kernel
or a large kernel attack surface (design.md, isolation recipe step 7), and kill
the process on any foreign architecture: the i386 `int 0x80` ABI and x32
syscall numbers bypass a filter written for x86_64 numbers (libseccomp applies
the bad-arch action to both).

The filter is built and compiled to BPF once in the spawner; each forked kernel
only installs the program (libseccomp's load would regenerate it every time).
"""

from __future__ import annotations

import errno
import os
import socket

import pyseccomp as sc

# Whole syscalls a kernel has no business making.
DENIED_SYSCALLS: tuple[str, ...] = (
    # keyrings are not namespaced: a side channel between kernels
    "add_key",
    "keyctl",
    "request_key",
    # large kernel attack surface
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    # other processes' memory
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    # the mount family and namespaces
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "unshare",
    "setns",
    # the host itself
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "syslog",
    "vhangup",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "iopl",
    "ioperm",
    "uselib",
    "lookup_dcookie",
    "open_by_handle_at",
    "name_to_handle_at",
    "nfsservctl",
)

CLONE_NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)

TIOCSTI = 0x5412
TIOCLINUX = 0x541C
AF_VSOCK = 40
NETLINK_ROUTE = 0


def build_filter() -> sc.SyscallFilter:
    """Return the filter, ready to `load()` in a process that has no_new_privs set."""
    eperm = sc.ERRNO(errno.EPERM)
    f = sc.SyscallFilter(sc.ALLOW)
    f.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    for name in DENIED_SYSCALLS:
        try:
            f.add_rule(eperm, name)
        except ValueError:
            continue  # not a syscall on this architecture / libseccomp version
    # clone3 passes its flags in memory where seccomp cannot read them: ENOSYS
    # makes libc fall back to clone(), whose flags are checked below.
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for flag in CLONE_NAMESPACE_FLAGS:
        f.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    # ioctl compares only the low 32 bits of the request (CVE-2019-10063)
    for request in (TIOCSTI, TIOCLINUX):
        f.add_rule(eperm, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
    f.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.EQ, AF_VSOCK))
    # netlink beyond NETLINK_ROUTE (which getaddrinfo uses) reaches kernel subsystems
    f.add_rule(
        sc.ERRNO(errno.EAFNOSUPPORT),
        "socket",
        sc.Arg(0, sc.EQ, socket.AF_NETLINK),
        sc.Arg(2, sc.NE, NETLINK_ROUTE),
    )
    return f


def compile_filter() -> bytes:
    """The filter as the raw BPF program the kernel installs (struct sock_filter[])."""
    read_fd, write_fd = os.pipe()
    try:
        with os.fdopen(write_fd, "wb") as out:
            build_filter().export_bpf(out)
        with os.fdopen(read_fd, "rb") as program:
            read_fd = -1
            return program.read()
    finally:
        if read_fd >= 0:
            os.close(read_fd)
