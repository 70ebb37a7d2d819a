"""`sandbox-admin backup` and `restore`: the data directory's store and folders,
copied while the server runs (see server.engine.backup)."""

from __future__ import annotations

import argparse
import os

from ..engine.backup import BackupError, backup, restore
from .common import config, fail


def _described(summary, verb: str, where: str) -> str:
    return (
        f"{verb} {summary.keys} keys and {summary.folders} folders "
        f"({summary.bytes / 2**20:.1f} MiB of folder contents) {where}"
    )


def backup_command(args: argparse.Namespace) -> None:
    data_dir = config(args).server.data_dir
    try:
        summary = backup(data_dir, os.path.abspath(args.target))
    except (BackupError, OSError) as e:
        fail(f"backup: {e}")
    print(_described(summary, "copied", f"from {data_dir} to {os.path.abspath(args.target)}"))


def restore_command(args: argparse.Namespace) -> None:
    data_dir = config(args).server.data_dir
    try:
        summary = restore(os.path.abspath(args.source), data_dir)
    except (BackupError, OSError) as e:
        fail(f"restore: {e}")
    print(_described(summary, "restored", f"into {data_dir}; start the server on it"))
