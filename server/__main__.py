"""`sandbox-server`: start the API server with working defaults.

    sandbox-server [--host H] [--port P] [--data-dir D] [--config FILE] [--enable jobe,piston]

On first start with no keypair in the data directory it creates one and prints
the environment lines a client needs, so a newcomer can paste them and go.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import sys
from typing import NoReturn

import uvicorn

from sandbox import oom_score
from sandbox.environment import layout_from_environment, preimport_from_environment
from sandbox.spawner_client import spawner_argv, spawner_environment

from . import logs
from .app import create_app
from .engine.engine import spawner_options
from .engine.store_backends import open_store
from .http_guard import ConnectionGuard, ConnectionLimits, protocol_class
from .settings import OPTIONAL_FACES, ServerConfig

# How long an idle client connection stays open. uvicorn's default, 5 s, closes
# connections that clients such as requests keep for reuse without a timer of
# their own; a request sent as the close arrives then fails with no response
# (seen in CI). 75 s is what the Backend.AI manager had (aiohttp's default).
KEEP_ALIVE_SECONDS = 75
# Connections the kernel queues before the server accepts them, and how many it
# accepts in one go: accepted before http_guard counts them, so their fds are reserved.
BACKLOG = 128
FD_RESERVE = 256
# WebSocket keepalive: a client that answers no ping for this long is dropped.
WS_PING_SECONDS = 20.0


class Server(uvicorn.Server):
    """uvicorn's server, whose stop first tells each open stream the server is
    restarting (spec §7.3) and closes it with 1012; uvicorn would close them
    with 1012 but without a word. It notes the signal that stopped it (app.py)."""

    def handle_exit(self, sig: int, frame: object) -> None:
        # which signal stopped us: SIGTERM keeps the kernels for the next server
        self.config.app.state.stop_signal = sig
        super().handle_exit(sig, frame)  # type: ignore[arg-type]

    async def shutdown(self, sockets: list | None = None) -> None:
        await self.config.app.state.streams.stop_all()
        await super().shutdown(sockets)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sandbox-server", description="Backend.AI v2 API server")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8080)")
    p.add_argument("--data-dir", help="keys and folders live here (default ./data)")
    p.add_argument("--config", help="a TOML file of settings (docs/configuration.md)")
    p.add_argument(
        "--spawner-only",
        action="store_true",
        help="run only the spawner, as a service of its own that keeps the kernels "
        "while the server restarts (sandbox-spawner.service; needs "
        "keep_kernels_on_restart)",
    )
    p.add_argument(
        "--enable",
        metavar="FACES",
        help=f"serve these faces too, comma-separated: {', '.join(OPTIONAL_FACES)} "
        "(adds to [faces] enabled)",
    )
    return p


def client_settings(config: ServerConfig, access_key: str, secret_key: str) -> str:
    endpoint = config.server.local_url()
    return "\n".join(
        [
            f"SORNA_ENDPOINT={endpoint}",
            f"SORNA_ACCESS_KEY={access_key}",
            f"SORNA_SECRET_KEY={secret_key}",
            f"BACKEND_ENDPOINT={endpoint}",
            f"BACKEND_ACCESS_KEY={access_key}",
            f"BACKEND_SECRET_KEY={secret_key}",
        ]
    )


def _admin_command() -> str:
    """How the person who started the server runs sandbox-admin: by name if it is on
    the PATH, else by its path (./.venv/bin/sandbox-admin in a checkout)."""
    beside = os.path.join(os.path.dirname(sys.executable), "sandbox-admin")
    found = shutil.which("sandbox-admin")
    if not os.path.exists(beside) or (found and os.path.samefile(found, beside)):
        return "sandbox-admin"
    relative = os.path.relpath(beside)
    return relative if not relative.startswith("..") else beside


def open_files_needed(config: ServerConfig) -> int:
    """The server holds a socket per kernel (pooled ones too: sessions' and one-shot
    jobs', each kind as many as the pool may grow to) and one per client connection,
    which http_guard caps at max_connections; the listen backlog's connections are
    accepted before they are counted; the rest (SQLite, the spawner, logs, uploads
    spooled to disk) fits in FD_RESERVE. So client connections can never take the
    fds that kernels need."""
    most = config.pool.kept(config.pool.pool_max)
    pooled = 2 * most * len(config.pool.pool_languages)
    clients = config.server.max_connections
    return config.limits.max_kernels + pooled + clients + BACKLOG + FD_RESERVE


def _set_open_files_limit(config: ServerConfig) -> None:
    """Raise the soft limit (the usual 1024 would stop the server short of max_kernels)
    to what the settings need, no further; SystemExit naming them if it cannot be.
    Kernels set their own limit (KernelSpec.nofile)."""
    needed = open_files_needed(config)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft >= needed:
        return
    if hard != resource.RLIM_INFINITY:
        hard = max(hard, needed)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    except (OSError, ValueError) as e:
        sys.exit(
            f"sandbox-server: cannot raise the open files limit to {needed} ({e}), which "
            "max_kernels, the pool and max_connections need: lower them or raise the limit"
        )


def _exec_spawner(config: ServerConfig) -> NoReturn:
    """Become the spawner the server would start (`--spawner-only`), waiting for
    servers on the data directory's socket; systemd's notify socket is passed on,
    for the spawner to say when servers may connect."""
    if not config.engine.sandbox.keep_kernels_on_restart:
        sys.exit("sandbox-server: --spawner-only needs [sandbox] keep_kernels_on_restart")
    argv = spawner_argv(None, **spawner_options(config.engine, config.server.data_dir))
    env = spawner_environment()
    if "NOTIFY_SOCKET" in os.environ:
        env["NOTIFY_SOCKET"] = os.environ["NOTIFY_SOCKET"]
    os.execve(argv[0], argv, env)


def overrides(args: argparse.Namespace, path: str | None) -> dict[str, dict[str, object]]:
    """The settings that flags and the environment give: the one place where the
    server reads environment variables (settings.ENVIRONMENT lists them; TMPDIR and
    XDG_CACHE_HOME reach the spawner through its environment). --enable adds to
    the config file's faces."""
    enabled = None
    if args.enable is not None:
        base = ServerConfig.load(path).faces.enabled
        more = [face.strip() for face in args.enable.split(",") if face.strip()]
        enabled = tuple(dict.fromkeys([*base, *more]))
    return {
        "faces": {"enabled": enabled},
        "server": {"host": args.host, "port": args.port, "data_dir": args.data_dir},
        "sandbox": {
            "cgroup_layout": layout_from_environment(),
            "preimport": preimport_from_environment(),
        },
    }


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        config = ServerConfig.load(args.config, overrides(args, args.config))
    except (OSError, ValueError) as e:
        _parser().error(str(e))
    if os.geteuid() != 0:
        print("sandbox-server: must run as root (namespaces and cgroups)", file=sys.stderr)
        sys.exit(1)
    log_config = logs.configure(config.server.log_format)
    _set_open_files_limit(config)
    oom_score.set_own(oom_score.SERVICE)  # a kernel goes first (sandbox.oom_score)
    server = config.server
    os.makedirs(server.data_dir, mode=0o700, exist_ok=True)
    if args.spawner_only:
        _exec_spawner(config)
    store = open_store(server.data_dir)
    if store.keys.count() == 0:
        keypair = store.keys.create(
            None,
            None,
            concurrency=config.limits.default_concurrency,
            rate_limit=config.limits.default_rate_limit,
        )
        print("Created an API keypair. Client settings (paste into your shell):\n", flush=True)
        print(client_settings(config, keypair.access_key, keypair.secret_key) + "\n", flush=True)
    store.close()
    if "web" in config.faces.enabled:
        admin = _admin_command()
        print(
            f"The web page for students: {config.page_url()}/\n"
            f"  a key and its one-time sign-in link: {admin} keys create --web-link\n",
            flush=True,
        )
    limits = ConnectionLimits(
        max_connections=server.max_connections,
        header_timeout=server.header_timeout_seconds,
        body_timeout=server.body_timeout_seconds,
        max_header_bytes=server.max_header_bytes,
    )
    uvicorn_config = uvicorn.Config(
        create_app(config),
        host=server.host,
        port=server.port,
        http=protocol_class(ConnectionGuard(limits)),  # type: ignore[arg-type]
        ws="websockets-sansio",
        ws_max_size=config.v2.max_frame_bytes,
        ws_ping_interval=WS_PING_SECONDS,
        ws_ping_timeout=WS_PING_SECONDS,
        ws_per_message_deflate=False,  # no decompression to bound, no CPU per frame
        backlog=BACKLOG,
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        log_level="info",
        log_config=log_config,
        access_log=server.access_log,
        proxy_headers=False,  # nothing is trusted to forward: X-Forwarded-* is ignored
    )
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn has stopped cleanly
        Server(uvicorn_config).run()


if __name__ == "__main__":
    main()
