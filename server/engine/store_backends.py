"""Where a store comes from: the implementation chosen for a data directory."""

from __future__ import annotations

import os

from .sqlite_store import SqliteStore
from .store import DATABASE_NAME, Store


def open_store(data_dir: str) -> Store:
    """The store of a data directory (created if it does not exist yet)."""
    return SqliteStore(os.path.join(data_dir, DATABASE_NAME))
