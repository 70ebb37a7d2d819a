"""What a kernel forgets of the host before user code runs.

A kernel is a fork of the zygote: its interpreter holds the host's modules and
paths, the server's virtualenv among them. Before user code runs, the kernel
drops every module from outside the system interpreter's prefix and every such
path, so that nothing of the server is importable or reachable by name.
"""

from __future__ import annotations

import itertools
import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class HostModules:
    """The caller's modules that a kernel must not keep: those from outside the
    system interpreter's prefix (the server's virtualenv), except the runner.

    Found once in the caller. A kernel that looked for them itself would read
    every module object, and each object read after the fork is a page copied
    into that kernel: about 0.8 MiB more per kernel (scripts/bench).
    """

    names: tuple[str, ...]
    seen: int  # len(sys.modules) when they were found
    # sys.path and sys.executable were the system's already when `seen` was taken:
    # a zygote's forgetting (forget_in_zygote), which its kernels need not repeat
    paths_forgotten: bool = False

    @classmethod
    def find(cls) -> HostModules:
        system = _system_prefix()
        names = [
            name for name, module in list(sys.modules.items()) if _is_host(name, module, system)
        ]
        return cls(tuple(names), len(sys.modules))

    def now(self) -> tuple[str, ...]:
        """The names to drop in this process, which may have imported more since they
        were found. A dict keeps its insertion order, so those are the newest entries
        of sys.modules: only they are read (reading every module would copy the
        pages they share with the spawner); if some were removed, all are read."""
        extra = len(sys.modules) - self.seen
        if extra < 0:
            return HostModules.find().names
        system = _system_prefix()
        newest = itertools.islice(reversed(sys.modules.items()), extra)
        return self.names + tuple(name for name, module in newest if _is_host(name, module, system))


def _system_prefix() -> str:
    return sys.base_prefix.rstrip("/") + "/"


def _is_host(name: str, module: object, system: str) -> bool:
    if name in ("sandbox", "sandbox.runner") or name.startswith("sandbox.runner."):
        return False
    path = getattr(module, "__file__", None)
    return bool(path) and not path.startswith(system)


# The host's modules a kernel dropped from sys.modules, kept alive: freeing them
# would write to (and so copy) every page their objects share with the spawner.
_forgotten: list[object] = []


def forget_host(modules: HostModules) -> None:
    """Drop what the forked interpreter knows of the host before user code runs.

    The kernel is a fork of the spawner: its memory holds the spawner's modules
    and paths. Keep only what lives under the system interpreter's prefix (the
    standard library, under the bound /usr) and the runner itself, so nothing of
    the server's virtualenv is importable or reachable by name. The python3
    REPL then adds the system's site directories (sandbox.runner.python_repl).
    """
    if not modules.paths_forgotten:
        system = sys.base_prefix.rstrip("/") + "/"
        sys.path[:] = [p for p in sys.path if p.startswith(system)]
        sys.executable = os.path.join(sys.base_prefix, "bin", "python3")
    for name in modules.now():
        _forgotten.append(sys.modules.pop(name, None))


def forget_in_zygote(modules: HostModules) -> HostModules:
    """Forget the host once in a zygote, for every kernel forked from it; what its
    kernels must still forget (what was imported since) is returned.

    Forgetting in each kernel popped some 46 names from sys.modules there and
    rewrote sys.path, and each pop or store writes to a name and a module object
    the kernel shares with its zygote: a kernel copied about 75 pages (0.3 MiB)
    for it. The zygote's own code keeps working: its functions hold their
    modules' globals, not sys.modules entries, its spares unpickle their
    requests without importing (spare._RequestUnpickler), and it imports nothing
    after this (an import of a host module would now fail, loudly, rather than
    read the server's virtualenv again).
    """
    forget_host(modules)
    return HostModules((), len(sys.modules), paths_forgotten=True)
