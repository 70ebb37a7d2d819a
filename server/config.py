"""Server settings: defaults that work, overridable by a TOML file and flags.

The TOML file holds the same names as the fields below, at the top level or
under a `[server]` table. Unknown names are an error, so a typo never passes
silently.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass

from sandbox import kernel_uids
from sandbox.spec import MiB

MIN_FOLDER_BYTES = 2 * MiB  # an ext4 image smaller than this is mostly its own metadata
MIN_FOLDER_INODES = 16


@dataclass(frozen=True)
class ServerConfig:
    """Each `default_*` applies when a create leaves the limit out (or sends 0); a
    create asking for more than the matching `max_*` gets 406."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = "./data"
    access_log: bool = False  # a log line per request: off, it costs more than a query
    hold_seconds: float = 2.0  # how long an execute call waits before "continued"
    max_body_bytes: int = 1 * MiB  # JSON request bodies
    # what a client must meet before it is verified (server/http_guard.py, body_gate.py)
    max_connections: int = 2048  # open client connections; the server's fds are sized by it
    header_timeout_seconds: float = 10.0  # a request's line and headers, from its first byte
    body_timeout_seconds: float = 60.0  # a request's body, from the end of its headers
    max_header_bytes: int = 16 * 1024  # a request's line and headers
    max_unverified_bodies: int = 32  # bodies read at once before their signature is checked
    allow_md5_signatures: bool = False  # HMAC-MD5 signing; no known client uses it
    # per kernel, asked for at create (limits.maxMem, execTimeout, idleTimeout, maxCpuCredit)
    default_memory_bytes: int = 256 * MiB
    max_memory_bytes: int = 2048 * MiB
    default_exec_timeout_ms: int = 30_000  # one run
    max_exec_timeout_ms: int = 600_000
    default_idle_timeout_ms: int = 600_000  # no execute call for this long: destroyed
    max_idle_timeout_ms: int = 3_600_000
    default_cpu_credit_ms: int = 600_000  # CPU time over the kernel's life, restarts included
    max_cpu_credit_ms: int = 3_600_000
    # per kernel, set here only
    pids_per_kernel: int = 128
    work_bytes: int = 64 * MiB  # /home/work
    tmp_bytes: int = 64 * MiB  # /tmp and /dev/shm
    max_output_bytes: int = 64 * MiB  # console output of one run; the rest is dropped
    kernel_reply_seconds: float = 30.0  # a file operation unanswered this long: 500
    kernel_send_seconds: float = 10.0  # an op the kernel does not read in this long: ended
    # what the server holds for a kernel (its events waiting for a client, JSON and
    # blobs): past the first it stops reading the kernel; past the second (read on
    # while a request waits for its reply) the kernel is ended
    kernel_pause_bytes: int = 8 * MiB
    kernel_held_bytes: int = 32 * MiB
    # the same over every kernel: past it, kernels holding more than 64 KiB pause
    server_held_bytes: int = 512 * MiB
    # per host and per key
    max_kernels: int = 1000
    default_concurrency: int = 5
    default_rate_limit: int = 1000
    max_folders_per_key: int = 10
    max_folder_bytes_per_key: int = 1024 * MiB  # the sum of the key's folders' sizes
    # each folder is an ext4 image of this size (reserved on the data disk at create)
    # holding at most this many files and directories (and at most one per 4 KiB of
    # folder_bytes, or the inode tables would fill it): a kernel writing past either
    # gets ENOSPC (server/folders.py)
    folder_bytes: int = 100 * MiB
    folder_inodes: int = 16384
    # how often the reaper looks at CPU credit (idle and exec timeouts: every 0.5 s)
    cpu_check_seconds: float = 5.0
    # warm pool (server/pool.py): kernels started ahead of demand, per language
    pool_size: int = 4
    pool_languages: tuple[str, ...] = ("python3",)
    # processes the spawner forks ahead of demand, already in a fresh cgroup, that any
    # kernel (pooled or not) starts from (sandbox.process.Spare); 0: none
    spare_processes: int = 2
    # the host uids kernels run as, one each (sandbox/kernel_uids.py): a range that no
    # account, subordinate id range or process uses (`sandbox-doctor` checks)
    kernel_uid_first: int = kernel_uids.DEFAULT_FIRST
    kernel_uid_count: int = kernel_uids.DEFAULT_COUNT

    @property
    def uid_range(self) -> kernel_uids.UidRange:
        return kernel_uids.UidRange(self.kernel_uid_first, self.kernel_uid_count)

    @property
    def database_path(self) -> str:
        return os.path.join(self.data_dir, "sandbox.sqlite")

    @property
    def folders_path(self) -> str:
        return os.path.join(self.data_dir, "folders")

    def __post_init__(self) -> None:
        """Check every setting's type and range, so that a wrong one stops the server at
        start with its name, not somewhere later (a spawner that cannot start, a pool
        that never fills). ValueError."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "tuple[str, ...]":
                if isinstance(value, list):
                    object.__setattr__(self, f.name, value := tuple(value))
                ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
                wanted = "a list of strings"
            elif f.type == "float":
                ok = isinstance(value, int | float) and not isinstance(value, bool)
                wanted = "a number"
            else:
                kind = {"str": str, "int": int, "bool": bool}[f.type]
                ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
                wanted = {"str": "a string", "int": "a whole number", "bool": "true or false"}[
                    f.type
                ]
            if not ok:
                raise ValueError(f"{f.name} must be {wanted}, not {value!r}")
            if f.type in ("int", "float") and value < 0:
                raise ValueError(f"{f.name} must not be negative, not {value!r}")
        # kernels' bind sources and the spawner need absolute paths; "./data" means the
        # directory the server was started in, whatever changes its working directory
        object.__setattr__(self, "data_dir", os.path.abspath(self.data_dir))
        if self.port > 65535:
            raise ValueError(f"port must be at most 65535, not {self.port}")
        if self.folder_bytes < MIN_FOLDER_BYTES:
            raise ValueError(f"folder_bytes must be at least {MIN_FOLDER_BYTES}")
        if self.folder_bytes > self.max_folder_bytes_per_key:
            raise ValueError(
                f"folder_bytes must not be more than max_folder_bytes_per_key "
                f"({self.max_folder_bytes_per_key})"
            )
        if self.folder_inodes < MIN_FOLDER_INODES:
            raise ValueError(f"folder_inodes must be at least {MIN_FOLDER_INODES}")
        for name in (
            "hold_seconds",
            "kernel_reply_seconds",
            "cpu_check_seconds",
            "kernel_send_seconds",
            "header_timeout_seconds",
            "body_timeout_seconds",
            "max_connections",
            "max_header_bytes",
            "max_unverified_bodies",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be more than 0")
        try:
            self.uid_range  # noqa: B018 (its checks)
        except ValueError as e:
            raise ValueError(f"kernel_uid_first, kernel_uid_count: {e}") from None
        if self.kernel_pause_bytes < MiB:
            raise ValueError(f"kernel_pause_bytes must be at least {MiB} (1 MiB)")
        if self.kernel_held_bytes < 2 * self.kernel_pause_bytes:
            raise ValueError("kernel_held_bytes must be at least twice kernel_pause_bytes")
        if self.server_held_bytes < self.kernel_held_bytes:
            raise ValueError("server_held_bytes must not be less than kernel_held_bytes")
        for f in dataclasses.fields(self):
            if f.name.startswith("default_") and hasattr(self, "max_" + f.name[8:]):
                most = getattr(self, "max_" + f.name[8:])
                if getattr(self, f.name) > most:
                    raise ValueError(f"{f.name} must not be more than max_{f.name[8:]} ({most})")

    @classmethod
    def load(cls, path: str | None, **overrides: object) -> ServerConfig:
        """Defaults, then the TOML file, then non-None overrides (the flags)."""
        values: dict[str, object] = {}
        if path:
            with open(path, "rb") as f:
                data = tomllib.load(f)
            data = data.get("server", data)
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = set(data) - known
            if unknown:
                raise ValueError(f"{path}: unknown settings {sorted(unknown)}")
            values.update(data)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
