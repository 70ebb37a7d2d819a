"""The engine's settings tables: `[limits]`, `[folders]` and `[pool]` (with
`[sandbox]`, from sandbox.settings). Each field's default lives here once;
server/settings.py puts the tables in one tree and reads them from the file."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sandbox.held import KernelBounds
from sandbox.settings import SandboxSettings, check, setting
from sandbox.spec import MiB

MIN_FOLDER_BYTES = 2 * MiB  # an ext4 image smaller than this is mostly its own metadata


@dataclass(frozen=True)
class LimitSettings:
    """`[limits]`: what a create may ask for, kernels' lifetimes, and what the server
    holds for them. A create that leaves a limit out (or sends 0) gets the
    `default_*`; one asking for more than the matching `max_*` is refused. Each
    `default_*` is at most its `max_*`; kernel_held_bytes is at least twice
    kernel_pause_bytes, and server_held_bytes at least kernel_held_bytes."""

    default_memory_bytes: int = setting(256 * MiB, "memory of a kernel", minimum=16 * MiB)
    max_memory_bytes: int = setting(
        2048 * MiB, "most memory a create may ask for", minimum=16 * MiB
    )
    default_exec_timeout_ms: int = setting(30_000, "wall-clock time of one run", minimum=1)
    max_exec_timeout_ms: int = setting(600_000, "longest run a create may ask for", minimum=1)
    default_idle_timeout_ms: int = setting(
        600_000, "a kernel with no execute call for this long is destroyed", minimum=1
    )
    max_idle_timeout_ms: int = setting(3_600_000, "longest idle timeout a create may ask for")
    default_cpu_credit_ms: int = setting(
        600_000, "CPU time over a kernel's life, restarts included; then destroyed", minimum=1
    )
    max_cpu_credit_ms: int = setting(3_600_000, "most CPU credit a create may ask for")
    cpu_check_seconds: float = setting(
        5.0, "how often CPU credit is checked (timeouts: every 0.5 s)", above=0
    )
    max_output_bytes: int = setting(
        64 * MiB, "console output of one run; the rest is dropped", minimum=1
    )
    kernel_reply_seconds: float = setting(
        30.0, "a file operation a kernel leaves unanswered this long fails", above=0
    )
    kernel_send_seconds: float = setting(
        10.0, "a kernel that does not read an operation for this long is ended", above=0
    )
    kernel_pause_bytes: int = setting(
        8 * MiB, "events held for one kernel past which the server stops reading it", minimum=MiB
    )
    kernel_held_bytes: int = setting(
        32 * MiB, "events held for one kernel past which it is ended", minimum=2 * MiB
    )
    server_held_bytes: int = setting(
        512 * MiB,
        "events held for all kernels together, past which kernels holding more than 64 KiB pause",
        minimum=MiB,
    )
    max_terminals_per_kernel: int = setting(
        4, "terminals (shells on a pty) open at once in one kernel", minimum=1, maximum=8
    )
    max_running_jobs: int = setting(
        8, "one-shot jobs (the Jobe and Piston faces) running at once", minimum=1
    )
    max_waiting_jobs: int = setting(
        512, "one-shot jobs waiting for a slot; past that a job is refused as an overload"
    )
    max_kernels: int = setting(1000, "kernels on this host, folder operations' included")
    default_concurrency: int = setting(5, "kernels at once per new key", minimum=1)
    default_rate_limit: int = setting(1000, "requests per rate window per new key", minimum=1)

    def kernel_bounds(self) -> KernelBounds:
        """What the host holds for one kernel and how long it waits on it."""
        return KernelBounds(
            pause_bytes=self.kernel_pause_bytes,
            held_bytes=self.kernel_held_bytes,
            send_seconds=self.kernel_send_seconds,
            reply_seconds=self.kernel_reply_seconds,
            max_output_bytes=self.max_output_bytes,
        )

    def __post_init__(self) -> None:
        check(self)
        if self.kernel_held_bytes < 2 * self.kernel_pause_bytes:
            raise ValueError("kernel_held_bytes must be at least twice kernel_pause_bytes")
        if self.server_held_bytes < self.kernel_held_bytes:
            raise ValueError("server_held_bytes must not be less than kernel_held_bytes")
        for f in dataclasses.fields(self):
            if f.name.startswith("default_") and hasattr(self, "max_" + f.name[8:]):
                most = getattr(self, "max_" + f.name[8:])
                if getattr(self, f.name) > most:
                    raise ValueError(f"{f.name} must not be more than max_{f.name[8:]} ({most})")


@dataclass(frozen=True)
class FolderSettings:
    """`[folders]`: a key's virtual folders. Each is an ext4 image of `folder_bytes`
    (reserved on the data disk at create) holding at most `folder_inodes` files and
    directories (and at most one per 4 KiB of folder_bytes): a kernel writing past
    either gets ENOSPC. folder_bytes is at most max_folder_bytes_per_key."""

    max_folders_per_key: int = setting(10, "folders one key may have")
    max_folder_bytes_per_key: int = setting(
        1024 * MiB, "the sum of one key's folders' sizes", minimum=MIN_FOLDER_BYTES
    )
    folder_bytes: int = setting(100 * MiB, "size of each folder", minimum=MIN_FOLDER_BYTES)
    folder_inodes: int = setting(16384, "files and directories in each folder", minimum=16)
    max_mounts: int = setting(5, "folders one kernel may mount")

    def __post_init__(self) -> None:
        check(self)
        if self.folder_bytes > self.max_folder_bytes_per_key:
            raise ValueError(
                f"folder_bytes must not be more than max_folder_bytes_per_key "
                f"({self.max_folder_bytes_per_key})"
            )


@dataclass(frozen=True)
class PoolSettings:
    """`[pool]`: kernels started ahead of demand, so that a create is an assignment.
    At rest each pooled language has pool_size ready; after a burst (the kernels
    given out before the pool was whole again that are still alive: a class
    pressing Run) it holds as many as the largest burst of the last
    pool_shrink_seconds, at most pool_max."""

    pool_size: int = setting(4, "ready kernels per pooled language at rest; 0: no pool")
    pool_languages: tuple[str, ...] = setting(("python3",), "languages kept ready")
    pool_max: int = setting(
        256, "most ready kernels per pooled language after a burst; <= pool_size: no growth"
    )
    pool_shrink_seconds: float = setting(
        900.0, "how long the pool keeps room for a burst of creates", above=0
    )

    def __post_init__(self) -> None:
        check(self)

    def kept(self, burst: int) -> int:
        """How many kernels of a kind wait after a burst of `burst`: none with the pool
        off, else pool_size at least and pool_max at most (or pool_size, if more)."""
        if self.pool_size == 0:
            return 0
        return max(self.pool_size, min(self.pool_max, burst))


@dataclass(frozen=True)
class EngineSettings:
    """The tables the engine reads."""

    limits: LimitSettings = dataclasses.field(default_factory=LimitSettings)
    folders: FolderSettings = dataclasses.field(default_factory=FolderSettings)
    pool: PoolSettings = dataclasses.field(default_factory=PoolSettings)
    sandbox: SandboxSettings = dataclasses.field(default_factory=SandboxSettings)
