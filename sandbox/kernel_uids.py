"""Host uids for kernels: one per kernel, from a range no host account uses.

Linux keeps several budgets per uid rather than per process or namespace:
RLIMIT_NPROC's task count, inotify instances and watches, pending signals,
POSIX message queue bytes, pipe pages, key quotas. Kernels that shared one uid
(1000, usually the host's first real account) shared those budgets with each
other and with that person, and so could starve each other. So each kernel runs
as a uid of its own, taken from a reserved range (the server's settings
`kernel_uid_first` and `kernel_uid_count`; the doctor checks that no account,
subordinate id range or process uses it), with the same number as its gid.
Inside the kernel, /etc/passwd names it `work` (mounts.identity_files).

A uid goes back to the range only once every process of its kernel is gone,
and a kernel restarted with its files keeps its uid: its /home/work is its own.

Virtual folders outlive kernels, so their files have one owner on disk,
FOLDER_UID, which is no kernel's and no account's; a kernel mounts its folders
idmapped (sandbox.idmapped) so that inside they are its own uid's files.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Iterator
from dataclasses import dataclass

FOLDER_UID = 1_900_000_000  # the on-disk owner (uid and gid) of every folder's files
LEGACY_FOLDER_UID = 1000  # theirs in folders made as plain directories, when kernels had it
DEFAULT_FIRST = FOLDER_UID + 1
DEFAULT_COUNT = 65_536
MAX_UID = 2**31 - 2  # above this, some tools take a uid for negative or for -1


class UidsExhausted(RuntimeError):
    """Every uid of the range is some kernel's."""


@dataclass(frozen=True)
class UidRange:
    first: int = DEFAULT_FIRST
    count: int = DEFAULT_COUNT

    def __post_init__(self) -> None:
        if not (self.first >= 1000 and self.count >= 1 and self.last <= MAX_UID):
            raise ValueError(f"kernel uids {self}: expected 1000 <= first, count >= 1, "
                             f"first + count - 1 <= {MAX_UID}")  # fmt: skip
        if self.first <= FOLDER_UID <= self.last:
            raise ValueError(f"kernel uids {self}: must not hold {FOLDER_UID}, the folders' uid")

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    def __str__(self) -> str:
        return f"{self.first}:{self.count}"

    @classmethod
    def parse(cls, text: str) -> UidRange:
        """`FIRST:COUNT`, as the spawner's --uids takes it."""
        first, sep, count = text.partition(":")
        if not sep or not first.isdigit() or not count.isdigit():
            raise ValueError(f"kernel uids {text!r}: expected FIRST:COUNT")
        return cls(int(first), int(count))

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, int) and self.first <= uid <= self.last


DEFAULT_RANGE = UidRange()


class UidAllocator:
    """Which uid of the range is whose (kernel id -> uid), in the spawner."""

    def __init__(self, uids: UidRange) -> None:
        self.range = uids
        self._by_kernel: dict[str, int] = {}
        self._taken: set[int] = set()
        self._next = uids.first

    def take(self, kernel_id: str) -> int:
        """The kernel's uid: the one it has (a restart), else a free one."""
        if kernel_id in self._by_kernel:
            return self._by_kernel[kernel_id]
        if len(self._taken) >= self.range.count:
            raise UidsExhausted(f"all {self.range.count} kernel uids ({self.range}) are in use")
        while self._next in self._taken:  # round robin: a freed uid waits its turn
            self._advance()
        uid = self._next
        self._advance()
        self._taken.add(uid)
        self._by_kernel[kernel_id] = uid
        return uid

    def _advance(self) -> None:
        self._next = self._next + 1 if self._next < self.range.last else self.range.first

    def release(self, kernel_id: str) -> None:
        """The kernel is gone, and every process of it: its uid is free."""
        self.free(self.detach(kernel_id))

    def detach(self, kernel_id: str) -> int | None:
        """The kernel is gone but a process of it may live on (it would not die):
        its uid stays taken, by nobody's name, until `free`."""
        return self._by_kernel.pop(kernel_id, None)

    def free(self, uid: int | None) -> None:
        """A detached uid's last process is gone (unless a kernel claims it again)."""
        if uid not in self._by_kernel.values():
            self._taken.discard(uid)


def for_exec(uids: UidRange = DEFAULT_RANGE) -> int:
    """A uid for a `sandbox-exec` kernel, which has no spawner to allocate one:
    one per live process id (pids are unique while they live)."""
    return uids.first + os.getpid() % uids.count


def process_uids(proc: str = "/proc") -> Iterator[tuple[int, int, int]]:
    """(pid, real uid, threads) of every process, from status (/proc/<pid> of a
    non-dumpable process is root's, its status is readable)."""
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/status") as f:
                fields = {k: v for k, _, v in (line.partition(":") for line in f)}
            yield int(name), int(fields["Uid"].split()[0]), int(fields["Threads"])
        except (OSError, KeyError, IndexError, ValueError):
            continue


def conflicts(uids: UidRange, proc: str = "/proc") -> list[str]:
    """Who else uses a uid of the range, or the folders' uid: accounts, groups,
    subordinate id ranges (/etc/subuid, /etc/subgid), running processes. Empty
    when the range is free (the doctor's check; run it with no server running)."""

    def ours(uid: int) -> bool:
        return uid in uids or uid == FOLDER_UID

    found = [f"account {p.pw_name} has uid {p.pw_uid}" for p in pwd.getpwall() if ours(p.pw_uid)]
    found += [f"group {g.gr_name} has gid {g.gr_gid}" for g in grp.getgrall() if ours(g.gr_gid)]
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.split(":")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                lo, n = int(parts[1]), int(parts[2])
                if (lo <= uids.last and uids.first < lo + n) or lo <= FOLDER_UID < lo + n:
                    found.append(f"{path}: {parts[0]} has {lo}-{lo + n - 1}")
    for pid, uid, _threads in process_uids(proc):
        if ours(uid):
            found.append(f"process {pid} runs as uid {uid}")
    return found
