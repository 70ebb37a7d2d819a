"""Is a program in this kernel blocked reading its stdin? Read off /proc.

A compiled program reads stdin with plain read(2) calls (scanf, Scanner,
bufio, read_line, bash's `read`), or, for event-loop runtimes such as Node.js,
waits in epoll_wait(2) with the stdin pipe in its interest set. Either way
the kernel can tell us without any help from the program: /proc/<pid>/task/
<tid>/syscall names the system call a sleeping thread is in and its
arguments, /proc/<pid>/fd/<n> names the file behind an fd ("pipe:[inode]"),
and /proc/<pid>/fdinfo/<epfd> lists the fds an epoll instance watches.

So "waiting for input" means: the stdin pipe holds no unread bytes (the host
asks FIONREAD on its end), and some thread of some process in the kernel is
asleep in read/readv/pread on an fd that is that pipe, or in epoll_wait on an
epoll set that contains it. Nothing is injected into the program (no
LD_PRELOAD shim, which would miss static binaries such as Go's). poll(2) and
select(2) keep their fd sets in user memory, which /proc does not show; a
program that waits for stdin only through them is not detected.

Reading another process's `syscall` file needs ptrace access, which the
runner has: the programs are its descendants, run as the same user, and are
dumpable. A process that is not (or has exited meanwhile) is skipped.

Standard library only: this runs inside the kernel.
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios

# x86_64 system call numbers.
_READS = frozenset({0, 17, 19, 295, 327})  # read, pread64, readv, preadv, preadv2
_EPOLL_WAITS = frozenset({232, 281, 441})  # epoll_wait, epoll_pwait, epoll_pwait2
_EPOLLIN = 0x1


def unread_bytes(fd: int) -> int:
    """Bytes sitting in the pipe behind `fd` (either end), not yet read."""
    buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return struct.unpack("i", buf)[0]


class StdinWatch:
    """Watches for readers blocked on one pipe, identified by its inode."""

    def __init__(self, write_fd: int) -> None:
        self._write_fd = write_fd
        self._target = f"pipe:[{os.fstat(write_fd).st_ino}]"
        self._skip = {1, os.getpid()}  # pid 1 and the runner never read the program's stdin

    def waiting(self) -> bool:
        """True if the pipe is empty and a thread is asleep reading it."""
        if unread_bytes(self._write_fd):
            return False
        try:
            pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
        except OSError:
            return False
        return any(self._pid_waits(pid) for pid in pids if pid not in self._skip)

    def _pid_waits(self, pid: int) -> bool:
        base = f"/proc/{pid}"
        try:
            tids = os.listdir(f"{base}/task")
        except OSError:
            return False
        for tid in tids:
            try:
                with open(f"{base}/task/{tid}/syscall", "rb") as f:
                    fields = f.read().split()
            except OSError:
                continue  # gone, or not ours to read
            if len(fields) < 2 or not fields[0].isdigit():
                continue  # "running", or "-1 ..." (not in a system call)
            number, first = int(fields[0]), int(fields[1], 16)
            if number in _READS and self._is_target(base, first):
                return True
            if number in _EPOLL_WAITS and self._epoll_watches_target(base, first):
                return True
        return False

    def _is_target(self, base: str, fd: int) -> bool:
        try:
            return os.readlink(f"{base}/fd/{fd}") == self._target
        except OSError:
            return False

    def _epoll_watches_target(self, base: str, epfd: int) -> bool:
        try:
            with open(f"{base}/fdinfo/{epfd}", "rb") as f:
                info = f.read().decode("ascii", "replace")
        except OSError:
            return False
        for line in info.splitlines():
            # "tfd:        0 events:       19 data: ..." (events in hex)
            parts = line.split()
            if len(parts) < 4 or parts[0] != "tfd:" or parts[2] != "events:":
                continue
            try:
                fd, events = int(parts[1]), int(parts[3], 16)
            except ValueError:
                continue
            if events & _EPOLLIN and self._is_target(base, fd):
                return True
        return False
