"""The SQLite backend (``sqlite:///path.db``): events, snapshots and read models in one
file, written by one writer thread; inline projections run on that writer, and other
processes' appends are noticed by polling the file's ``data_version``."""

from __future__ import annotations

from ._read_models import SQLiteReadModelStore
from ._store import SQLiteStore

__all__ = ["SQLiteReadModelStore", "SQLiteStore"]
