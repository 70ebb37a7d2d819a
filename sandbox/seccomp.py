"""The kernel's seccomp filter: default allow, with deny lists and allow lists.

Default allow, so that compilers, JVMs and language runtimes work unmodified;
deny (EPERM) the syscall families that give a process reach beyond its kernel
or a large kernel attack surface (docs/architecture.md, "How a kernel is built"), and kill
the process on any foreign architecture: the i386 `int 0x80` ABI and x32
syscall numbers bypass a filter written for x86_64 numbers (libseccomp applies
the bad-arch action to both).

Where an argument picks the attack surface, the argument is allowlisted:
`socket` only makes AF_UNIX, AF_INET, AF_INET6 and NETLINK_ROUTE sockets (other
families autoload protocol modules: TIPC, ALG, RDS, CAN, ...), and
`personality` takes only the values Docker's profile allows. NETLINK_ROUTE
stays because glibc (getaddrinfo's AI_ADDRCONFIG, if_nameindex, getifaddrs),
Go's net.Interfaces, Node's os.networkInterfaces and the JVM's
NetworkInterface read the interface list through it; the kernel's network
namespace holds only `lo`, and changing it needs CAP_NET_ADMIN, which a
kernel has not.

The filter is built and compiled to BPF once in the spawner; each forked kernel
only installs the program (libseccomp's load would regenerate it every time).
"""

from __future__ import annotations

import errno
import os
import struct
import sys

import pyseccomp as libseccomp

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
    "modify_ldt",
    # other processes' memory and fds
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "pidfd_getfd",
    "kcmp",
    # NUMA placement: host topology, and pages moved under other processes
    # (Docker allows these only with CAP_SYS_NICE)
    "mbind",
    "set_mempolicy",
    "set_mempolicy_home_node",
    "get_mempolicy",
    "migrate_pages",
    "move_pages",
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

# Terminal ioctls: TIOCSTI pushes input into a terminal, TIOCSETD loads a line
# discipline (a module, and a history of kernel bugs), TIOCLINUX drives the
# virtual console (selection, which TIOCSTI-like pastes input).
DENIED_IOCTLS = (0x5412, 0x5423, 0x541C)  # TIOCSTI, TIOCSETD, TIOCLINUX

AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 1, 2, 10, 16
ALLOWED_FAMILIES = (AF_UNIX, AF_INET, AF_INET6, AF_NETLINK)
NETLINK_ROUTE = 0

# personality(2) values Docker's default profile admits: PER_LINUX, UNAME26,
# PER_LINUX32, both, and 0xffffffff (a query of the current persona).
ALLOWED_PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)


def build_filter() -> libseccomp.SyscallFilter:
    """Return libseccomp's part of the filter (all but the personality guard,
    see `compile_filter`), for a process that has no_new_privs set."""
    eperm = libseccomp.ERRNO(errno.EPERM)
    eafnosupport = libseccomp.ERRNO(errno.EAFNOSUPPORT)
    f = libseccomp.SyscallFilter(libseccomp.ALLOW)
    f.set_attr(libseccomp.Attr.ACT_BADARCH, libseccomp.KILL_PROCESS)
    # A binary tree of the syscall numbers, not a chain: installing a filter runs
    # it for every syscall number (the kernel's cache of always-allowed ones), and
    # each kernel installs it twice (pid 1 and the runner).
    f.set_attr(libseccomp.Attr.CTL_OPTIMIZE, 2)
    for name in DENIED_SYSCALLS:
        try:
            f.add_rule(eperm, name)
        except ValueError:
            continue  # not a syscall on this architecture / libseccomp version
    # clone3 passes its flags in memory where seccomp cannot read them: ENOSYS
    # makes libc fall back to clone(), whose flags are checked below.
    f.add_rule(libseccomp.ERRNO(errno.ENOSYS), "clone3")
    for flag in CLONE_NAMESPACE_FLAGS:
        f.add_rule(eperm, "clone", libseccomp.Arg(0, libseccomp.MASKED_EQ, flag, flag))
    # ioctl compares only the low 32 bits of the request (CVE-2019-10063)
    for request in DENIED_IOCTLS:
        f.add_rule(eperm, "ioctl", libseccomp.Arg(1, libseccomp.MASKED_EQ, 0xFFFFFFFF, request))
    # Families below AF_NETLINK that are not allowed, one rule each (libseccomp
    # takes one comparison per argument and rule), then everything above it.
    # Compared on all 64 bits: a domain with high bits set is refused too.
    for family in range(AF_NETLINK):
        if family not in ALLOWED_FAMILIES:
            f.add_rule(eafnosupport, "socket", libseccomp.Arg(0, libseccomp.EQ, family))
    f.add_rule(eafnosupport, "socket", libseccomp.Arg(0, libseccomp.GT, AF_NETLINK))
    f.add_rule(
        eafnosupport,
        "socket",
        libseccomp.Arg(0, libseccomp.EQ, AF_NETLINK),
        libseccomp.Arg(2, libseccomp.NE, NETLINK_ROUTE),
    )
    f.add_rule(eafnosupport, "socketpair", libseccomp.Arg(0, libseccomp.NE, AF_UNIX))
    return f


def compile_filter() -> bytes:
    """The filter as the raw BPF program the kernel installs (struct sock_filter[]):
    the personality guard, then libseccomp's program."""
    read_fd, write_fd = os.pipe()
    try:
        with os.fdopen(write_fd, "wb") as out:
            build_filter().export_bpf(out)
        with os.fdopen(read_fd, "rb") as program:
            read_fd = -1
            return personality_guard() + program.read()
    finally:
        if read_fd >= 0:
            os.close(read_fd)


# Classic BPF, as <linux/filter.h> and <linux/seccomp.h> define it.
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K
_SECCOMP_RET_ERRNO = 0x00050000
_NR, _ARCH, _ARG0 = 0, 4, 16  # offsets in struct seccomp_data


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def personality_guard() -> bytes:
    """BPF that refuses (EPERM) personality(2) with any value but
    ALLOWED_PERSONALITIES, and falls through to the next program for every other
    call, other architectures included (libseccomp's program, which kills them).

    Hand-written because libseccomp cannot say "not one of these values" for a
    default-allow filter (one comparison per argument and rule). Classic BPF
    jumps are relative and forward only, so libseccomp's program appended after
    it runs unchanged. The kernel reads the low 32 bits of the value; a value
    with high bits set is refused."""
    arch = libseccomp.system_arch()
    nr = libseccomp.resolve_syscall(arch, "personality")
    low, high = (_ARG0, _ARG0 + 4) if sys.byteorder == "little" else (_ARG0 + 4, _ARG0)
    n = len(ALLOWED_PERSONALITIES)
    deny, end = 7 + n, 8 + n  # instruction indices: the deny return, the next program

    def to(target: int, here: int) -> int:
        return target - here - 1

    code = [
        _insn(_LD_W_ABS, _ARCH),
        _insn(_JEQ_K, arch, 0, to(end, 1)),
        _insn(_LD_W_ABS, _NR),
        _insn(_JEQ_K, nr, 0, to(end, 3)),
        _insn(_LD_W_ABS, high),
        _insn(_JEQ_K, 0, 0, to(deny, 5)),  # high bits set
        _insn(_LD_W_ABS, low),
    ]
    for value in ALLOWED_PERSONALITIES:
        code.append(_insn(_JEQ_K, value, to(end, len(code)), 0))
    code.append(_insn(_RET_K, _SECCOMP_RET_ERRNO | errno.EPERM))
    return b"".join(code)
