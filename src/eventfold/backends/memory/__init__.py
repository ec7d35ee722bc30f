"""The in-memory backend (``memory://``): events and read models in dicts, for tests and
demos."""

from __future__ import annotations

from ._read_models import MemoryReadModelStore
from ._store import MemorySnapshotStore, MemoryStore

__all__ = ["MemoryReadModelStore", "MemorySnapshotStore", "MemoryStore"]
