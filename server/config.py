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

from sandbox.spec import MiB


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = "./data"
    hold_seconds: float = 2.0  # how long an execute call waits before "continued"
    max_body_bytes: int = 1 * MiB  # JSON request bodies
    default_memory_bytes: int = 256 * MiB
    default_exec_timeout_ms: int = 30_000
    default_concurrency: int = 5
    default_rate_limit: int = 1000

    @property
    def database_path(self) -> str:
        return os.path.join(self.data_dir, "sandbox.sqlite")

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
