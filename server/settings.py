"""The server's settings: one tree of tables, defaults that work, a TOML file over
them, and the flags over that.

    [server]   this process: address, data directory, connections    (ServerSettings)
    [limits]   what kernels may use and how long they live           (engine.settings)
    [folders]  virtual folders                                       (engine.settings)
    [pool]     kernels started ahead of demand                       (engine.settings)
    [sandbox]  what every kernel gets from the isolation layer       (sandbox.settings)
    [v2]       the v2 API face                                       (faces.v2.settings)
    [faces]    which faces besides v2 the server serves                 (FaceSettings)
    [jobe]     the Jobe face                                         (faces.jobe.settings)
    [piston]   the Piston face                                       (faces.piston.settings)
    [metrics]  who may scrape /metrics                               (faces.metrics.settings)

Each table is a dataclass whose fields hold their default, range and meaning once;
`reference()` writes docs/configuration.md from them. Unknown names are an error,
so a typo never passes silently. A file from before the tables (every name at the
top level or under [server]) still loads: each name goes to its table.

Environment variables are read in `server.__main__` only (see ENVIRONMENT).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import tomllib
from dataclasses import dataclass

from sandbox.settings import SandboxSettings, check, field_type, setting
from sandbox.spec import MiB

from .engine.settings import EngineSettings, FolderSettings, LimitSettings, PoolSettings
from .faces.jobe.settings import JobeSettings
from .faces.metrics.settings import MetricsSettings
from .faces.piston.settings import PistonSettings
from .faces.v2.settings import V2Settings
from .faces.web.settings import WebSettings

# The faces a server may serve besides v2 (off unless enabled).
OPTIONAL_FACES = ("web", "jobe", "piston")

# environment variable -> what it does; read by server.__main__
ENVIRONMENT = {
    "SANDBOX_CGROUP_LAYOUT": "overrides [sandbox] cgroup_layout (auto, v2, hybrid, v1, none)",
    "SANDBOX_PREIMPORT": "overrides [sandbox] preimport (empty: no module is pre-imported)",
    "TMPDIR": "where the spawner makes kernels' scratch directories (default /tmp)",
    "XDG_CACHE_HOME": "where kernel-init, pid 1's program, is built and cached (default ~/.cache)",
}


@dataclass(frozen=True)
class ServerSettings:
    """`[server]`: this process, and what a client must meet before it is verified
    (server/http_guard.py, the body gate)."""

    host: str = setting("127.0.0.1", "address to listen on")
    port: int = setting(8080, "port to listen on (0: any free port)", maximum=65535)
    data_dir: str = setting(
        "./data", "keys, folders and their images live here (relative: to the start directory)"
    )
    access_log: bool = setting(False, "a log line per request (it costs more than a query)")
    log_format: str = setting(
        "text",
        "log lines as text (the message, then key=value fields), logfmt or json (one "
        "object per line); no timestamps under systemd, whose journal adds them",
        choices=("text", "logfmt", "json"),
    )
    max_connections: int = setting(
        2048, "open client connections; the server's open files are sized by it", minimum=1
    )
    header_timeout_seconds: float = setting(
        10.0, "a request's line and headers, from its first byte", above=0
    )
    body_timeout_seconds: float = setting(
        60.0, "a request's body, from the end of its headers", above=0
    )
    max_header_bytes: int = setting(16 * 1024, "a request's line and headers", minimum=1024)
    max_unverified_bodies: int = setting(
        32, "bodies read at once before their signature is checked", minimum=1
    )

    def __post_init__(self) -> None:
        check(self)
        # kernels' bind sources and the spawner need absolute paths; "./data" means the
        # directory the server was started in, whatever changes its working directory
        object.__setattr__(self, "data_dir", os.path.abspath(self.data_dir))

    def local_url(self, port: int | None = None) -> str:
        """The server's address for a client on this machine (loopback when it listens
        on every address); `port` in place of the configured one."""
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port or self.port}"


@dataclass(frozen=True)
class FaceSettings:
    """`[faces]`: the APIs served besides the v2 API, which is always on."""

    enabled: tuple[str, ...] = setting(
        ("web",),
        f"faces to serve: any of {', '.join(OPTIONAL_FACES)} (--enable jobe,piston adds to them)",
    )

    def __post_init__(self) -> None:
        check(self)
        unknown = [face for face in self.enabled if face not in OPTIONAL_FACES]
        if unknown:
            raise ValueError(
                f"enabled: unknown face {unknown[0]!r}; one of {', '.join(OPTIONAL_FACES)}"
            )


TABLES: dict[str, type] = {
    "server": ServerSettings,
    "limits": LimitSettings,
    "folders": FolderSettings,
    "pool": PoolSettings,
    "sandbox": SandboxSettings,
    "v2": V2Settings,
    "faces": FaceSettings,
    "jobe": JobeSettings,
    "piston": PistonSettings,
    "metrics": MetricsSettings,
    "web": WebSettings,
}
# every setting's name -> its table, for files from before the tables
TABLE_OF = {f.name: table for table, cls in TABLES.items() for f in dataclasses.fields(cls)}


@dataclass(frozen=True)
class ServerConfig:
    """The whole tree."""

    server: ServerSettings = dataclasses.field(default_factory=ServerSettings)
    limits: LimitSettings = dataclasses.field(default_factory=LimitSettings)
    folders: FolderSettings = dataclasses.field(default_factory=FolderSettings)
    pool: PoolSettings = dataclasses.field(default_factory=PoolSettings)
    sandbox: SandboxSettings = dataclasses.field(default_factory=SandboxSettings)
    v2: V2Settings = dataclasses.field(default_factory=V2Settings)
    faces: FaceSettings = dataclasses.field(default_factory=FaceSettings)
    jobe: JobeSettings = dataclasses.field(default_factory=JobeSettings)
    piston: PistonSettings = dataclasses.field(default_factory=PistonSettings)
    metrics: MetricsSettings = dataclasses.field(default_factory=MetricsSettings)
    web: WebSettings = dataclasses.field(default_factory=WebSettings)

    @property
    def engine(self) -> EngineSettings:
        return EngineSettings(self.limits, self.folders, self.pool, self.sandbox)

    def page_url(self, base: str = "") -> str:
        """Where students open the web page, without its trailing slash: at `base`,
        else [web] public_url, else this machine's address; then the page prefix."""
        base = base or self.web.public_url or self.server.local_url()
        return base.rstrip("/") + self.web.page_prefix

    @classmethod
    def build(cls, values: dict[str, dict[str, object]]) -> ServerConfig:
        """The tree from {table: {name: value}}; ValueError naming the table and name."""
        tables = {}
        for table, settings_cls in TABLES.items():
            try:
                tables[table] = settings_cls(**values.get(table, {}))
            except ValueError as e:
                raise ValueError(f"[{table}] {e}") from None
        return cls(**tables)

    @classmethod
    def load(
        cls, path: str | None, overrides: dict[str, dict[str, object]] | None = None
    ) -> ServerConfig:
        """Defaults, then the TOML file, then non-None overrides ({table: {name: value}}:
        the flags and the environment)."""
        values: dict[str, dict[str, object]] = {table: {} for table in TABLES}
        if path:
            with open(path, "rb") as f:
                data = tomllib.load(f)
            for table, name, value in _entries(path, data):
                values[table][name] = value
        for table, settings in (overrides or {}).items():
            values[table].update({k: v for k, v in settings.items() if v is not None})
        return cls.build(values)


def _entries(path: str, data: dict) -> list[tuple[str, str, object]]:
    """(table, name, value) for each setting in a file; ValueError for unknown names."""
    found = []
    for key, value in data.items():
        if key in TABLES and isinstance(value, dict):
            known = {f.name for f in dataclasses.fields(TABLES[key])}
            for name, item in value.items():
                if name in known:
                    found.append((key, name, item))
                elif key == "server" and name in TABLE_OF:  # a file from before the tables
                    found.append((TABLE_OF[name], name, item))
                else:
                    raise ValueError(f"{path}: unknown setting [{key}] {name}")
        elif key in TABLE_OF:  # top level: a file from before the tables
            found.append((TABLE_OF[key], key, value))
        else:
            raise ValueError(f"{path}: unknown setting {key}")
    return found


def _shown(value: object, unit: str) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, int) and value >= MiB and value % MiB == 0:
        return f"{value} ({value // MiB} MiB)"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _range(meta: dict, kind: type) -> str:
    if meta.get("choices"):
        return "one of " + ", ".join(meta["choices"])
    if kind not in (int, float):
        return ""
    parts = []
    if meta.get("above") is not None:
        parts.append(f"> {meta['above']:g}")
    elif meta.get("minimum") is not None:
        parts.append(f">= {_shown(meta['minimum'], '')}")
    if meta.get("maximum") is not None:
        parts.append(f"<= {_shown(meta['maximum'], '')}")
    return ", ".join(parts)


def reference() -> str:
    """docs/configuration.md: every setting with its default, range and meaning."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from the settings' own definitions by `python -m server.settings`;",
        "a test checks that this file matches them. Give settings in a TOML file",
        "(`sandbox-server --config FILE`, `sandbox-admin --config FILE`) under their",
        "table. Sizes are bytes, times as named.",
        "",
    ]
    for table, cls in TABLES.items():
        about = " ".join(inspect.cleandoc(cls.__doc__ or "").split())
        about = about.removeprefix(f"`[{table}]`: ")
        lines += [f"## [{table}]", "", about[:1].upper() + about[1:], ""]
        lines += ["| setting | default | range | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            kind = field_type(cls, f.name)
            meaning = f.metadata["doc"].replace("|", "\\|")
            default = _shown(f.default, f.metadata["unit"])
            lines.append(f"| `{f.name}` | {default} | {_range(f.metadata, kind)} | {meaning} |")
        lines.append("")
    lines += ["## Environment", "", "| variable | meaning |", "|---|---|"]
    lines += [f"| `{name}` | {meaning} |" for name, meaning in ENVIRONMENT.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
