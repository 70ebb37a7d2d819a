"""The kernel's network: a fresh network namespace with only loopback, brought up.

A new network namespace starts with `lo` down and no other interface, so the
host's interfaces, its listening ports and every other address are unreachable;
bringing `lo` up lets programs talk to themselves (servers in a lesson, a
database in /tmp) without touching the host.
"""

from __future__ import annotations

import fcntl
import socket
import struct

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = struct.Struct("16sH14x")


def loopback_up() -> None:
    """Set IFF_UP on `lo` in the current network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = _IFREQ.pack(b"lo", 0)
        _name, flags = _IFREQ.unpack(fcntl.ioctl(s, _SIOCGIFFLAGS, request))
        fcntl.ioctl(s, _SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | _IFF_UP))
