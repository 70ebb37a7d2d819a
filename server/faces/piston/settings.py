"""`[piston]`: the Piston face's own settings. Piston's configuration values are
both a request's defaults and its maxima; so are these."""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.settings import check, setting
from sandbox.spec import MiB

from ..face_access import networks

LOOPBACK = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class PistonSettings:
    """`[piston]`: the Piston face: who may run without a key, and each stage's
    default and largest limits (Piston's own defaults)."""

    keyless_networks: tuple[str, ...] = setting(
        LOOPBACK,
        "clients in these networks may run without a key (Piston has none); from "
        "anywhere else an 'Authorization: <key>' from sandbox-admin is required",
    )
    compile_timeout_ms: int = setting(10_000, "a compile's wall time", minimum=1)
    run_timeout_ms: int = setting(3_000, "a run's wall time", minimum=1)
    compile_cpu_time_ms: int = setting(10_000, "a compile's CPU time", minimum=1)
    run_cpu_time_ms: int = setting(3_000, "a run's CPU time", minimum=1)
    output_max_size: int = setting(
        1024, "bytes of stdout, and of stderr, before the program is stopped", minimum=1,
        maximum=8 * MiB,
    )  # fmt: skip
    max_process_count: int = setting(64, "processes (and threads) of a stage", minimum=1)
    max_file_size: int = setting(10_000_000, "the largest file a stage may write", minimum=1)
    max_body_bytes: int = setting(1 * MiB, "an execute request's body", minimum=1024)
    key_wait_seconds: float = setting(
        10.0, "a run waits this long for its key's concurrency, then is refused (429)", above=0
    )

    def __post_init__(self) -> None:
        check(self)
        networks(self.keyless_networks, "keyless_networks")
