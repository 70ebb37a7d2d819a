"""What a kernel is asked to be: the request the isolation library turns into processes.

A `KernelSpec` is plain data that crosses the spawner socket as JSON, so every
field is a JSON-friendly type and `from_json` validates what it reads.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field

MiB = 1024 * 1024

# Where a kernel's files live inside it; uploads and folders are relative to this.
WORK_DIR = "/home/work"

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class SpecError(ValueError):
    """A spec field is invalid; the message names the field."""


@dataclass(frozen=True)
class Bind:
    """A host path made visible inside the kernel. `owner`: the uid (and gid) that
    owns its files on disk, shown as the kernel's own inside (an idmapped mount,
    sandbox.idmapped): a virtual folder's. None: shown as they are."""

    src: str
    dst: str
    readonly: bool = True
    owner: int | None = None

    @classmethod
    def parse(cls, text: str) -> Bind:
        """Parse the `SRC:DST[:ro|rw]` form used by `sandbox-exec --bind`."""
        parts = text.split(":")
        if len(parts) == 2:
            return cls(parts[0], parts[1], readonly=False)
        if len(parts) == 3 and parts[2] in ("ro", "rw"):
            return cls(parts[0], parts[1], readonly=parts[2] == "ro")
        raise SpecError(f"bind {text!r}: expected SRC:DST[:ro|rw]")


@dataclass(frozen=True)
class KernelSpec:
    """Limits and contents of one kernel. Sizes are bytes, times seconds.

    Nothing here names a language: a language shapes a kernel through `env`
    (see `languages`) and through the ops the host sends it. No limit has a default
    here: the settings (`sandbox.settings.SandboxSettings.kernel_spec`) set each."""

    memory_bytes: int | None
    pids: int | None
    cpu_quota: float | None  # cores; None = unlimited
    tmp_bytes: int
    work_bytes: int
    nofile: int
    fsize_bytes: int
    cpu_time: float | None = None  # RLIMIT_CPU per process, seconds; None = unlimited
    binds: tuple[Bind, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    # From the zygote that holds [sandbox] preimport's modules (python3 kernels
    # that want them); False: from the one forked before them (sandbox.spawner_kernels).
    preimported: bool = True

    def to_json(self) -> dict:
        """The spec as plain data. Written out, not `dataclasses.asdict`, which deep-copies
        field by field: 6% of the server's instructions for a create and destroy."""
        data = dict(self.__dict__)
        data["binds"] = [dict(b.__dict__) for b in self.binds]
        data["env"] = dict(self.env)
        return data

    @classmethod
    def from_json(cls, data: object) -> KernelSpec:
        if not isinstance(data, dict):
            raise SpecError("spec: expected an object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise SpecError(f"spec: unknown fields {sorted(unknown)}")
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = required - set(data)
        if missing:
            raise SpecError(f"spec: missing fields {sorted(missing)}")
        values = dict(data)
        binds = values.get("binds", ())
        if not isinstance(binds, list | tuple):
            raise SpecError("binds: expected a list")
        values["binds"] = tuple(_bind_from_json(b) for b in binds)
        spec = cls(**values)
        spec.validate()
        return spec

    def validate(self) -> None:
        """Check types and ranges; raise SpecError naming the first bad field."""
        for name in ("memory_bytes", "pids"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value <= 0):
                raise SpecError(f"{name}: expected a positive integer or null")
        for name in ("cpu_quota", "cpu_time"):
            value = getattr(self, name)
            if value is not None and (not _is_number(value) or value <= 0):
                raise SpecError(f"{name}: expected a positive number or null")
        for name in ("tmp_bytes", "work_bytes", "nofile", "fsize_bytes"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise SpecError(f"{name}: expected a positive integer")
        if not isinstance(self.preimported, bool):
            raise SpecError("preimported: expected true or false")
        if not isinstance(self.env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k and "=" not in k and "\0" not in k + v
            for k, v in self.env.items()
        ):
            raise SpecError("env: expected an object of string to string")
        for bind in self.binds:
            if not os.path.isabs(bind.src) or not os.path.isabs(bind.dst):
                raise SpecError(f"binds: {bind.src}:{bind.dst}: paths must be absolute")
            if ".." in bind.dst.split("/") or "\0" in bind.src + bind.dst:
                raise SpecError(f"binds: {bind.dst}: '..' is not allowed")


def validate_kernel_id(kernel_id: object) -> str:
    """Kernel ids become cgroup and directory names: keep them to a safe alphabet."""
    if not isinstance(kernel_id, str) or not _ID_RE.match(kernel_id):
        raise SpecError("id: expected 1-64 characters of [A-Za-z0-9_-]")
    return kernel_id


def _bind_from_json(data: object) -> Bind:
    if not isinstance(data, dict) or set(data) - {"src", "dst", "readonly", "owner"}:
        raise SpecError("binds: each item must be {src, dst, readonly, owner}")
    src, dst, readonly = data.get("src"), data.get("dst"), data.get("readonly", True)
    if not isinstance(src, str) or not isinstance(dst, str) or not isinstance(readonly, bool):
        raise SpecError("binds: src and dst must be strings, readonly a boolean")
    owner = data.get("owner")
    if owner is not None and (not _is_int(owner) or owner <= 0):
        raise SpecError("binds: owner must be a positive uid or null")
    return Bind(src, dst, readonly, owner)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
