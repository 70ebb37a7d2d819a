"""`[metrics]`: who may scrape /metrics."""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.settings import check, setting


@dataclass(frozen=True)
class MetricsSettings:
    """`[metrics]`: /metrics, in Prometheus' text format: open to clients on this
    machine, and to others that send the token."""

    token: str = setting(
        "", "a bearer token that lets clients beyond loopback scrape /metrics (empty: none)"
    )
    top_keys: int = setting(
        10, "keys shown by their kernel count; the rest are summed as one", minimum=0, maximum=100
    )

    def __post_init__(self) -> None:
        check(self)
        if self.token and (len(self.token) < 16 or not self.token.isprintable()):
            raise ValueError("token: at least 16 printable characters")
