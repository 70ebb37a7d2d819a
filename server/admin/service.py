"""`install-service`: the systemd units (the server's and its spawner's) and a first
config file."""

from __future__ import annotations

import argparse
import importlib.resources
import os
import sys

from .common import fail

UNIT = "sandbox-server.service"
# its spawner's, where the kernels live and outlive the server's restarts
SPAWNER_UNIT = "sandbox-spawner.service"
SERVICE_CONFIG = """\
# sandbox-server's settings (docs/configuration.md); written by install-service
[server]
host = "127.0.0.1"
port = 8080
data_dir = "/var/lib/sandbox-server"
log_format = "logfmt"
"""


def install_service(args: argparse.Namespace) -> None:
    """Write the unit with this installation's sandbox-server in it, and a config
    (kept if one exists); say how to start it."""
    executable = os.path.join(os.path.dirname(sys.executable), "sandbox-server")
    if not os.access(executable, os.X_OK):
        fail(f"no sandbox-server beside {sys.executable}: install the package first")
    config = os.path.join(args.config_dir, "config.toml")
    try:
        os.makedirs(args.unit_dir, exist_ok=True)
        for name in (UNIT, SPAWNER_UNIT):
            template = (importlib.resources.files("server") / name).read_text()
            unit = template.replace("@SANDBOX_SERVER@", executable).replace("@CONFIG@", config)
            with open(os.path.join(args.unit_dir, name), "w") as f:
                f.write(unit)
        os.makedirs(args.config_dir, mode=0o755, exist_ok=True)
        if not os.path.exists(config):
            with open(config, "w") as f:
                f.write(SERVICE_CONFIG)
    except OSError as e:
        fail(f"cannot write the service: {e}")
    print(
        f"wrote {os.path.join(args.unit_dir, UNIT)}, {SPAWNER_UNIT} beside it and {config}\n"
        "start it with:\n"
        "  systemctl daemon-reload && systemctl enable --now sandbox-spawner sandbox-server\n"
        f"then make a key: sandbox-admin --config {config} keys create"
    )
