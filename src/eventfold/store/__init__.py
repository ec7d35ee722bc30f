"""The event store port and its declared capabilities, `connect`, and the table of
backends it reads (each imported on first use; see `register_backend`)."""

from __future__ import annotations

from ._registry import Backend, backend_of, register_backend, unregister_backend
from .connect import DEFAULT_URL, connect
from .ports import (
    HookOrder,
    HookTransaction,
    OutboxMessage,
    SupportsCodec,
    SupportsCommitListeners,
    SupportsLoad,
    SupportsOutbox,
    SupportsSnapshots,
    SupportsTransactionHooks,
    SupportsTransform,
    SupportsUnitOfWork,
    TransactionHooks,
    TransactionParticipant,
    UnitOfWork,
    capability,
)
from .protocol import AppendResult, EventStore, StoreStats, StreamInfo

__all__ = [
    "DEFAULT_URL",
    "AppendResult",
    "Backend",
    "EventStore",
    "HookOrder",
    "HookTransaction",
    "OutboxMessage",
    "StoreStats",
    "StreamInfo",
    "SupportsCodec",
    "SupportsCommitListeners",
    "SupportsLoad",
    "SupportsOutbox",
    "SupportsSnapshots",
    "SupportsTransactionHooks",
    "SupportsTransform",
    "SupportsUnitOfWork",
    "TransactionHooks",
    "TransactionParticipant",
    "UnitOfWork",
    "backend_of",
    "capability",
    "connect",
    "register_backend",
    "unregister_backend",
]
