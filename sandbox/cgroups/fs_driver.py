"""The kernel cgroup and manager shared by the layouts whose cgroups are directories
(v2, hybrid, v1): create, join, kill until empty, remove, clean up.

Kernel cgroups are created only under this process's own cgroup in each hierarchy
(delegation), as ``<own>/sandbox-<manager pid>-<its start>/<kernel name>``
(`sweep.tree_name`), so that two servers on one host, or a server inside a
container, never touch each other's cgroups.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping

from . import fs
from .interface import (
    KILL_TIMEOUT,
    CgroupError,
    CgroupLimits,
    CgroupManager,
    KernelCgroup,
    check_name,
)
from .sweep import retry_stale, sweep_stale, tree_name

log = logging.getLogger(__name__)

# How often a create retries removing dead managers' trees that were still busy.
_STALE_RETRY_INTERVAL = 1.0


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


class FsCgroup(KernelCgroup):
    """A kernel cgroup made of directories in one or more mounted hierarchies.

    `dirs` maps a role ("memory", "pids", "cpu", "cpuacct", "freezer", "unified") to the
    kernel's directory for it; co-mounted controllers share one directory."""

    def __init__(
        self,
        name: str,
        dirs: Mapping[str, str],
        on_remove: Callable[[KernelCgroup], None] | None = None,
    ) -> None:
        self.name = name
        self._dirs = dict(dirs)
        self._paths = _unique(self._dirs.values())
        # Precomputed so that attach() is a handful of syscalls.
        self._procs_files = tuple(os.path.join(d, "cgroup.procs") for d in self._paths)
        self._on_remove = on_remove
        self._peak_seen = 0

    def attach(self, pid: int) -> None:
        for path in self._procs_files:
            try:
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.write(fd, str(pid).encode())
                finally:
                    os.close(fd)
            except OSError as e:
                raise CgroupError(f"attach {pid} to {path}: {e}") from e

    def open_dirs(self) -> tuple[int, ...]:
        opened: list[int] = []
        try:
            for path in self._paths:
                opened.append(os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
        except OSError as e:
            for fd in opened:
                os.close(fd)
            raise CgroupError(f"open {path}: {e}") from e
        return tuple(opened)

    def procs(self) -> list[int]:
        pids: set[int] = set()
        for d in self._paths:
            pids.update(fs.read_pids(os.path.join(d, "cgroup.procs")))
        return sorted(pids)

    def paths(self) -> list[str]:
        return list(self._paths)

    def _exists(self) -> bool:
        return any(os.path.isdir(d) for d in self._paths)

    @abc.abstractmethod
    def _apply_limits(self, limits: CgroupLimits) -> None:
        """Write the limits into the directories (fresh ones, or live ones)."""

    def set_limits(self, limits: CgroupLimits) -> None:
        self._require()
        try:
            self._apply_limits(limits)
        except OSError as e:
            raise CgroupError(f"cgroup {self.name}: setting {limits}: {e}") from e

    @abc.abstractmethod
    def _kill_round(self, first: bool) -> None:
        """One attempt at killing everything inside; kill() repeats it until empty."""

    def kill(self) -> None:
        deadline = time.monotonic() + KILL_TIMEOUT
        delay = 0.001
        first = True
        while True:
            pids = self.procs()
            if not pids:
                return
            # at least one round, however late: a host so loaded that listing the
            # procs took the whole timeout must still have sent SIGKILL once
            if not first and time.monotonic() >= deadline:
                raise CgroupError(
                    f"cgroup {self.name}: {len(pids)} processes survive SIGKILL "
                    f"after {KILL_TIMEOUT:g}s: {pids[:10]}"
                )
            self._kill_round(first)
            first = False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _sigkill(self, pids: Iterable[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        # No existence check first: the procs of a cgroup that is gone are none, and
        # rmdir_tree takes ENOENT as done.
        if self.procs():
            self.kill()
        for d in reversed(self._paths):
            fs.rmdir_tree(d)
        if self._on_remove is not None:
            self._on_remove(self)

    def _require(self) -> None:
        if not self._exists():
            raise CgroupError(f"cgroup {self.name} does not exist (removed?)")


class FsManager(CgroupManager):
    """Shared create/cleanup for the layouts that have cgroup directories.

    `own_dirs` maps each role to this process's own cgroup directory for it."""

    _cgroup_class: type[FsCgroup]

    def __init__(
        self, own_dirs: Mapping[str, str], tree: str | None = None, problems: Iterable[str] = ()
    ) -> None:
        self._tree = tree_name(os.getpid()) if tree is None else tree
        self._own = dict(own_dirs)
        self._base = {r: os.path.join(d, self._tree) for r, d in self._own.items()}
        self._kernels: dict[str, FsCgroup] = {}
        self._prepared = False
        self._stale: list[str] = []  # dead managers' trees that were still busy
        self._stale_retry_at = 0.0
        self.problems = list(problems)

    def _prepare(self) -> None:
        """Create the sandbox-<pid>-<start> parents (once), after sweeping away those of
        managers that died without cleaning up."""
        for d in _unique(self._own.values()):
            self._stale += sweep_stale(d, self._tree)
        for d in _unique(self._base.values()):
            os.makedirs(d, exist_ok=True)
        self._prepared = True

    def _retry_stale(self) -> None:
        """Try the busy stale trees again, at most once a second, on a create: their
        processes were exiting when we swept, and nothing else would remove them."""
        if self._stale and time.monotonic() >= self._stale_retry_at:
            self._stale = retry_stale(self._stale)
            self._stale_retry_at = time.monotonic() + _STALE_RETRY_INTERVAL

    def _new_cgroup(self, name: str) -> FsCgroup:
        dirs = {r: os.path.join(b, name) for r, b in self._base.items()}
        return self._cgroup_class(name, dirs, on_remove=self._forget)

    def _forget(self, cg: KernelCgroup) -> None:
        if self._kernels.get(cg.name) is cg:
            del self._kernels[cg.name]

    def create(self, name: str, limits: CgroupLimits) -> KernelCgroup:
        check_name(name)
        try:
            if not self._prepared:
                self._prepare()
        except OSError as e:
            raise CgroupError(f"preparing the sandbox cgroups: {e}") from e
        self._retry_stale()
        old = self._kernels.get(name)
        cg = self._new_cgroup(name)
        if old is not None:
            old.remove()
        try:
            self._make_dirs(cg, limits)
        except FileExistsError:  # made by an earlier spawner of this tree's name
            log.info("cgroup %s: removing a stale cgroup of that name", name)
            cg.remove()
            self._make_dirs(cg, limits)
        self._kernels[name] = cg
        return cg

    @staticmethod
    def _make_dirs(cg: FsCgroup, limits: CgroupLimits) -> None:
        """mkdir the cgroup's directories (FileExistsError, with none made, if one
        is there already) and write its limits; CgroupError for anything else. No
        lookup first: a create is a few syscalls fewer."""
        made = []
        try:
            for d in cg.paths():
                os.mkdir(d)
                made.append(d)
            cg._apply_limits(limits)
        except OSError as e:
            for d in reversed(made):
                with contextlib.suppress(OSError):
                    os.rmdir(d)
            if isinstance(e, FileExistsError):
                raise
            raise CgroupError(f"creating cgroup {cg.name}: {e}") from e

    def cleanup(self) -> None:
        errors = []
        for cg in list(self._kernels.values()):
            try:
                cg.remove()
            except CgroupError as e:
                errors.append(str(e))
        # Children left by an earlier manager with our tree's name, or made behind our back.
        names: set[str] = set()
        for b in _unique(self._base.values()):
            with contextlib.suppress(OSError):
                names.update(e.name for e in os.scandir(b) if e.is_dir(follow_symlinks=False))
        for name in sorted(names):
            try:
                self._new_cgroup(name).remove()
            except CgroupError as e:
                errors.append(str(e))
        for b in _unique(self._base.values()):
            try:
                fs.rmdir_tree(b)
            except CgroupError as e:
                errors.append(str(e))
        self._prepared = False
        if errors:
            raise CgroupError("cleanup: " + "; ".join(errors))

    def _limits_available(self) -> dict[str, bool]:
        return {
            "memory": "memory" in self._own,
            "pids": "pids" in self._own,
            "cpu": "cpu" in self._own,
        }

    def describe(self) -> dict:
        return {
            "layout": self.layout.value,
            "controllers": [r for r in self._own if r != "unified"],
            "limits": self._limits_available(),
            "kill": self._kill_method(),
            "paths": dict(self._base),
            "problems": list(self.problems),
        }

    @abc.abstractmethod
    def _kill_method(self) -> str: ...
