"""The seccomp filter's argument allowlists and the calls it denies, probed from
inside a real kernel (sandbox/seccomp.py).

Every probe runs in one child `python3` in the kernel (a personality change
must not outlive it): a raw syscall through ctypes, its result or errno name.
Each denied probe asserts the filter's own errno, which the call without the
filter does not return with these arguments (EBADF, EINVAL, EOPNOTSUPP, 0, ...),
except for the socket families this host's kernel lacks (see the sweep).
"""

from __future__ import annotations

import textwrap

import pytest

PROBES = r"""
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
results = {}

def call(name, nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    e = ctypes.get_errno()
    results[name] = "ok" if r >= 0 else errno.errorcode.get(e, str(e))
    if r >= 0 and name.startswith("socket"):
        os.close(r)

SOCKET, SOCKETPAIR = 41, 53
STREAM, DGRAM, RAW, SEQPACKET = 1, 2, 3, 5
for name, family, kind, proto in (
    ("socket AF_UNIX", 1, STREAM, 0),
    ("socket AF_INET", 2, STREAM, 0),
    ("socket AF_INET6", 10, STREAM, 0),
    ("socket NETLINK_ROUTE", 16, RAW, 0),
    ("socket AF_INET high bits", 2 | 1 << 32, STREAM, 0),
    ("socket NETLINK_AUDIT", 16, RAW, 9),
    ("socket NETLINK_KOBJECT_UEVENT", 16, RAW, 15),
    ("socket NETLINK_GENERIC", 16, RAW, 16),
):
    call(name, SOCKET, family, kind, proto)
refused = set()
for family in set(range(64)) - {1, 2, 10, 16}:  # AF_MAX is 46 in Linux 6.x
    for kind in (STREAM, DGRAM, RAW, SEQPACKET):
        call("sweep", SOCKET, family, kind, 0)
        refused.add((family, kind, results.pop("sweep")))
results["socket sweep"] = sorted(refused)

pair = (ctypes.c_int * 2)()
for name, family in (("socketpair AF_UNIX", 1), ("socketpair AF_INET", 2),
                     ("socketpair AF_TIPC", 30)):
    r = libc.socketpair(family, STREAM, 0, pair)
    results[name] = "ok" if r == 0 else errno.errorcode[ctypes.get_errno()]

PERSONALITY = 135
for value in (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF, 0x0040000, 0x0400000, 0x1,
              0xFFFFFFFE, 0x1 << 32):
    call(f"personality {value:#x}", PERSONALITY, value)
    libc.syscall(ctypes.c_long(PERSONALITY), ctypes.c_long(0))  # back to PER_LINUX

buf = ctypes.create_string_buffer(64)
call("modify_ldt", 154, 0, ctypes.addressof(buf), 16)
call("mbind", 237, 0, 0, 0, 0, 0, 0)
call("set_mempolicy", 238, 0, 0, 0)
call("get_mempolicy", 239, 0, 0, 0, 0, 0)
call("migrate_pages", 256, 0, 0, 0, 0)
call("move_pages", 279, 0, 0, 0, 0, 0, 0)
call("set_mempolicy_home_node", 450, 0, 0, 0, 0)
call("process_madvise", 440, -1, 0, 0, 0, 0)
call("pidfd_getfd", 438, -1, 0, 0)

IOCTL, TIOCSETD, TIOCLINUX = 16, 0x5423, 0x541C
master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
libc.grantpt(master); libc.unlockpt(master)
libc.ptsname.restype = ctypes.c_char_p
slave = os.open(libc.ptsname(master), os.O_RDWR | os.O_NOCTTY)
n_tty = ctypes.c_int(0)
for name, request in (("TIOCSETD", TIOCSETD), ("TIOCLINUX", TIOCLINUX)):
    for suffix, high in (("", 0), (" high bits", 1 << 32)):
        call(f"ioctl {name}{suffix}", IOCTL, slave, request | high, ctypes.addressof(n_tty))
print(repr(results))
"""


@pytest.fixture(scope="module")
def probed(shared_kernel) -> dict[str, str]:
    code = f"""
    import subprocess, sys
    r = subprocess.run([sys.executable, "-c", {PROBES!r}], capture_output=True, text=True,
                       timeout=60)
    print(r.stdout if r.returncode == 0 else "FAILED " + r.stderr)
    """
    out = shared_kernel.run(textwrap.dedent(code))
    assert out.exit_code == 0 and not out.stdout.startswith("FAILED"), out.stdout + out.stderr
    return eval(out.stdout)


@pytest.mark.parametrize(
    "name",
    [
        "socket AF_UNIX",
        "socket AF_INET",
        "socket AF_INET6",
        "socket NETLINK_ROUTE",
        "socketpair AF_UNIX",
        "personality 0x0",
        "personality 0x8",
        "personality 0x20000",
        "personality 0x20008",
        "personality 0xffffffff",
    ],
)
def test_allowed(probed, name):
    assert probed[name] == "ok", probed


def test_every_other_socket_family_refused(probed):
    """Families 0-63 but the four allowed, each socket type: this host's kernel
    lacks most (TIPC, ALG, RDS, CAN, ... answer EAFNOSUPPORT with or without the
    filter); those it has (AF_PACKET, AF_XDP, AF_VSOCK) must answer the same."""
    not_refused = [(f, k, e) for f, k, e in probed["socket sweep"] if e != "EAFNOSUPPORT"]
    assert not_refused == []


@pytest.mark.parametrize(
    "name",
    [
        "socket AF_INET high bits",
        "socket NETLINK_AUDIT",
        "socket NETLINK_KOBJECT_UEVENT",
        "socket NETLINK_GENERIC",
        "socketpair AF_INET",
        "socketpair AF_TIPC",
    ],
)
def test_socket_families_outside_the_allowlist(probed, name):
    assert probed[name] == "EAFNOSUPPORT", probed


@pytest.mark.parametrize(
    "name",
    [
        "personality 0x40000",  # ADDR_NO_RANDOMIZE: turns ASLR off
        "personality 0x400000",  # READ_IMPLIES_EXEC
        "personality 0x1",
        "personality 0xfffffffe",
        "personality 0x100000000",
        "modify_ldt",
        "mbind",
        "set_mempolicy",
        "get_mempolicy",
        "migrate_pages",
        "move_pages",
        "set_mempolicy_home_node",
        "process_madvise",
        "pidfd_getfd",
        "ioctl TIOCSETD",
        "ioctl TIOCSETD high bits",
        "ioctl TIOCLINUX",
        "ioctl TIOCLINUX high bits",
    ],
)
def test_denied(probed, name):
    assert probed[name] == "EPERM", probed
