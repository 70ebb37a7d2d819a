"""`[jobe]`: the Jobe face's own settings (its runs' kernels obey `[limits]`)."""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.settings import check, setting
from sandbox.spec import MiB

from ..face_access import networks

LOOPBACK = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class JobeSettings:
    """`[jobe]`: the Jobe face (Moodle CodeRunner): who may run without a key, the
    largest cputime, request bodies and the file cache."""

    keyless_networks: tuple[str, ...] = setting(
        LOOPBACK,
        "clients in these networks may run without an X-API-KEY (Jobe's own default is "
        "key-less); from anywhere else a key from sandbox-admin is required",
    )
    max_cputime_seconds: int = setting(
        120, "the largest cputime a run may ask for (Jobe's default)", minimum=1, maximum=3600
    )
    max_body_bytes: int = setting(
        8 * MiB, "a run's or a file's request body (sources, input, base64)", minimum=1024
    )
    max_cache_bytes: int = setting(
        1024 * MiB, "the files PUT for runs; the least recently used go first", minimum=MiB
    )
    key_wait_seconds: float = setting(
        10.0,
        "a run waits this long for a slot under its key's concurrency, then is "
        "answered as a server overload (outcome 21), as Jobe waits for a free user",
        above=0,
    )

    def __post_init__(self) -> None:
        check(self)
        networks(self.keyless_networks, "keyless_networks")
