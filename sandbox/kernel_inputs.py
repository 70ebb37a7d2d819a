"""What a kernel start is given: the `Environment` its caller prepares once for
every kernel, and the `Payload`, what one kernel runs and as whom."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from . import kernel_init_build, mounts, seccomp, syscalls
from .host_modules import HostModules
from .spec import WORK_DIR


@dataclass(frozen=True)
class Payload:
    """What the kernel runs, the runner (server mode) or a command (exec mode),
    and as whom: `uid` (and the same gid) is the kernel's own (sandbox.kernel_uids)."""

    uid: int
    argv: tuple[str, ...] = ()  # empty: the runner
    cwd: str = WORK_DIR


@dataclass(frozen=True)
class Environment:
    """Data computed once by the caller and shared by every kernel it starts."""

    skeleton: dict[str, tuple[int, bytes]]
    filter: bytes  # the seccomp filter compiled to BPF (seccomp.compile_filter)
    mountpoint: str  # an empty host directory; each kernel mounts its root there privately
    layout_has_cgroup: bool
    host_modules: HostModules
    kernel_init: kernel_init_build.KernelInit | None  # pid 1's program; None: exec mode only
    argv_area: tuple[int, int]  # syscalls.argv_area(), the same in every fork

    def after_imports(self) -> Environment:
        """The same, with the modules a kernel must forget listed again: for kernels
        forked after the caller imported more (sandbox.preimport)."""
        return dataclasses.replace(self, host_modules=HostModules.find())

    @classmethod
    def prepare(cls, scratch: str, layout_has_cgroup: bool, server_mode: bool) -> Environment:
        """Read the skeleton and build the filter once; kernels mount their roots
        at `scratch`/root, privately, each in its own mount namespace. Only a caller
        that starts server-mode kernels (the spawner) builds kernel-init."""
        os.makedirs(f"{scratch}/root", exist_ok=True)
        os.makedirs(mounts.tmp_mountpoint(f"{scratch}/root"), exist_ok=True)
        return cls(
            skeleton=mounts.load_skeleton(mounts.ROOTFS),
            filter=seccomp.compile_filter(),
            mountpoint=f"{scratch}/root",
            layout_has_cgroup=layout_has_cgroup,
            host_modules=HostModules.find(),
            kernel_init=kernel_init_build.prepare() if server_mode else None,
            argv_area=syscalls.argv_area(),
        )
