"""Settings tables: typed dataclasses whose fields carry their own default, range and
one line of documentation, so that a table checks itself and the configuration
reference is generated from the same source (server/settings.py composes the
tables into one tree; docs/configuration.md is its output).

This module holds the helper every table uses and the `[sandbox]` table: what
every kernel gets from the isolation layer, whichever face asked for it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

from . import kernel_uids
from .spec import Bind, KernelSpec, MiB

CGROUP_LAYOUTS = ("auto", "v2", "hybrid", "v1", "none")


def setting(
    default: Any,
    doc: str,
    *,
    minimum: float | None = 0,
    maximum: float | None = None,
    above: float | None = None,
    choices: tuple[str, ...] | None = None,
    unit: str = "",
) -> Any:
    """A settings field: its default, what it does, and the values it may take
    (`minimum`/`maximum` inclusive, `above` exclusive, or `choices`)."""
    meta = {
        "doc": doc,
        "minimum": None if above is not None else minimum,
        "maximum": maximum,
        "above": above,
        "choices": choices,
        "unit": unit,
    }
    if isinstance(default, list | tuple):
        return dataclasses.field(default=tuple(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_type(table: type, name: str) -> type:
    """The Python type of a field (str, int, float, bool or tuple)."""
    hint = typing.get_type_hints(table)[name]
    origin = typing.get_origin(hint)
    if origin is tuple:
        return tuple
    if origin in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def check(instance: object) -> None:
    """Check every field's type and range; ValueError naming the field. Lists from
    TOML become tuples."""
    table = type(instance)
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        kind = field_type(table, f.name)
        meta = f.metadata
        if kind is tuple:
            if isinstance(value, list):
                object.__setattr__(instance, f.name, value := tuple(value))
            ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
            wanted = "a list of strings"
        elif kind is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            wanted = "a number"
        else:
            ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
            wanted = {str: "a string", int: "a whole number", bool: "true or false"}[kind]
        if not ok:
            raise ValueError(f"{f.name} must be {wanted}, not {value!r}")
        if kind in (int, float):
            low, high, above = meta.get("minimum"), meta.get("maximum"), meta.get("above")
            if low is not None and value < low:
                raise ValueError(f"{f.name} must be at least {low}, not {value!r}")
            if high is not None and value > high:
                raise ValueError(f"{f.name} must be at most {high}, not {value!r}")
            if above is not None and not value > above:
                raise ValueError(f"{f.name} must be more than {above}, not {value!r}")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise ValueError(f"{f.name} must be one of {', '.join(choices)}, not {value!r}")


@dataclass(frozen=True)
class SandboxSettings:
    """`[sandbox]`: what every kernel gets, and how the host makes kernels."""

    pids_per_kernel: int = setting(128, "processes and threads in one kernel", minimum=1)
    cpu_quota_cores: float = setting(
        1.0, "CPU time a kernel may use per wall-clock second, in cores", above=0
    )
    work_bytes: int = setting(64 * MiB, "size of a kernel's /home/work", minimum=MiB)
    tmp_bytes: int = setting(
        64 * MiB, "size of a kernel's /tmp and /dev/shm, one tmpfs between them", minimum=MiB
    )
    nofile_per_kernel: int = setting(1024, "open files per process in a kernel", minimum=64)
    fsize_bytes: int = setting(256 * MiB, "largest file a kernel's process may write", minimum=1)
    spare_processes: int = setting(
        2, "processes forked ahead of demand, each in a fresh cgroup, that kernels start from"
    )
    kernel_uid_first: int = setting(
        kernel_uids.DEFAULT_FIRST,
        "first host uid of the range kernels run as, one uid each (sandbox-doctor checks "
        "that no account, subordinate id range or process uses it)",
        minimum=1,
    )
    kernel_uid_count: int = setting(
        kernel_uids.DEFAULT_COUNT, "how many uids that range holds", minimum=1
    )
    preimport: str = setting(
        "numpy pandas matplotlib.pyplot",
        "python modules every python3 kernel starts with imported, space-separated "
        "(shared by all kernels; those not installed are skipped; empty: none, for a "
        "server that holds thousands of idle kernels: each maps the modules' libraries, "
        "about 0.8 MiB more host memory per kernel at 5,000)",
    )
    preimport_jobs: bool = setting(
        False,
        "whether one-shot jobs' python3 kernels (the Jobe and Piston faces) start with "
        "preimport's modules too; off, they start without (each of a job's processes "
        "forks a smaller heap: about 40% more python3 jobs per second) and a job that "
        "imports numpy pays for its import",
    )
    keep_kernels_on_restart: bool = setting(
        True,
        "whether kernels outlive a server restart (a stop, a crash, a kill): the "
        "spawner keeps them, and the next server adopts them with their owners, "
        "tokens, limits and run state (what an upgraded server cannot speak to ends "
        "with the reason 'server upgraded'); off, kernels end with the server",
    )
    restart_wait_seconds: float = setting(
        300.0,
        "how long kept kernels wait for the next server before they end",
        above=0,
        unit="s",
    )
    cgroup_layout: str = setting(
        "auto",
        "cgroup layout: auto (detect), v2, hybrid, v1, or none (rlimits only); the "
        "environment variable SANDBOX_CGROUP_LAYOUT overrides it",
        choices=CGROUP_LAYOUTS,
    )

    def __post_init__(self) -> None:
        check(self)
        try:
            self.uid_range  # noqa: B018 (its checks)
        except ValueError as e:
            raise ValueError(f"kernel_uid_first, kernel_uid_count: {e}") from None

    @property
    def uid_range(self) -> kernel_uids.UidRange:
        return kernel_uids.UidRange(self.kernel_uid_first, self.kernel_uid_count)

    @property
    def forced_layout(self) -> str | None:
        """The layout to use, or None to detect it."""
        return None if self.cgroup_layout == "auto" else self.cgroup_layout

    def kernel_spec(
        self,
        memory_bytes: int,
        binds: tuple[Bind, ...] = (),
        env: dict[str, str] | None = None,
        **overrides: Any,
    ) -> KernelSpec:
        """A kernel's spec with every field set from these settings; `overrides`
        for a kernel that needs less (a folder kernel) or more (sandbox-exec's flags)."""
        values: dict[str, Any] = {
            "memory_bytes": memory_bytes,
            "pids": self.pids_per_kernel,
            "cpu_quota": self.cpu_quota_cores,
            "cpu_time": None,
            "tmp_bytes": self.tmp_bytes,
            "work_bytes": self.work_bytes,
            "nofile": self.nofile_per_kernel,
            "fsize_bytes": self.fsize_bytes,
            "binds": binds,
            "env": dict(env or {}),
        }
        values.update(overrides)
        return KernelSpec(**values)
