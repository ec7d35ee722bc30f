"""The event store port, `connect`, and the backends (imported lazily)."""

from __future__ import annotations

from .connect import DEFAULT_URL, connect
from .protocol import AppendResult, EventStore, StoreStats, StreamInfo

__all__ = ["DEFAULT_URL", "AppendResult", "EventStore", "StoreStats", "StreamInfo", "connect"]
