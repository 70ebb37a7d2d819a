"""What sandbox-admin's commands share: failing with a message, the server's
settings, its store, and printing tables."""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from typing import NoReturn

from ..engine.store import DATABASE_NAME, Store
from ..engine.store_backends import open_store as open_backend
from ..settings import ServerConfig


def fail(message: str) -> NoReturn:
    print(f"sandbox-admin: {message}", file=sys.stderr)
    sys.exit(1)


def config(args: argparse.Namespace) -> ServerConfig:
    """The server's settings: its config file's, with --data-dir over them; read once
    per command."""
    if getattr(args, "settings", None) is None:
        try:
            overrides = {"server": {"data_dir": args.data_dir}}
            args.settings = ServerConfig.load(args.config, overrides)
        except (OSError, ValueError) as e:
            fail(f"--config: {e}")
    return args.settings


def open_store(args: argparse.Namespace, create: bool = False) -> Store:
    data_dir = config(args).server.data_dir
    path = os.path.join(data_dir, DATABASE_NAME)
    if not create and not os.path.exists(path):
        fail(f"no key store at {path} (wrong --data-dir?)")
    try:
        if create:
            os.makedirs(data_dir, mode=0o700, exist_ok=True)
        return open_backend(data_dir)
    except (OSError, sqlite3.Error) as e:
        fail(f"cannot open {path}: {e}")


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def age(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
