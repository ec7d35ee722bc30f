"""The event store port and its declared capabilities, `connect`, and the backends
(imported lazily)."""

from __future__ import annotations

from .connect import DEFAULT_URL, connect
from .ports import (
    HookOrder,
    HookTransaction,
    SupportsCodec,
    SupportsCommitListeners,
    SupportsLoad,
    SupportsSnapshots,
    SupportsTransactionHooks,
    SupportsTransform,
    TransactionHooks,
    TransactionParticipant,
    capability,
)
from .protocol import AppendResult, EventStore, StoreStats, StreamInfo

__all__ = [
    "DEFAULT_URL",
    "AppendResult",
    "EventStore",
    "HookOrder",
    "HookTransaction",
    "StoreStats",
    "StreamInfo",
    "SupportsCodec",
    "SupportsCommitListeners",
    "SupportsLoad",
    "SupportsSnapshots",
    "SupportsTransactionHooks",
    "SupportsTransform",
    "TransactionHooks",
    "TransactionParticipant",
    "capability",
    "connect",
]
