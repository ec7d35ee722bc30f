"""The event store port and its declared capabilities, `connect`, and the table of
backends it reads (each imported on first use; see `register_backend`)."""

from __future__ import annotations

from ._reading import event_at
from ._registry import (
    Backend,
    backend_for_scheme,
    backend_of,
    register_backend,
    unregister_backend,
)
from .connect import DEFAULT_URL, connect
from .ports import (
    HookOrder,
    HookTransaction,
    InboxDatabase,
    InboxSession,
    OutboxMessage,
    SubjectKeys,
    SupportsCodec,
    SupportsCommitListeners,
    SupportsLoad,
    SupportsOutbox,
    SupportsRowReads,
    SupportsSnapshots,
    SupportsSubjectKeys,
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
    "InboxDatabase",
    "InboxSession",
    "OutboxMessage",
    "StoreStats",
    "StreamInfo",
    "SubjectKeys",
    "SupportsCodec",
    "SupportsCommitListeners",
    "SupportsLoad",
    "SupportsOutbox",
    "SupportsRowReads",
    "SupportsSnapshots",
    "SupportsSubjectKeys",
    "SupportsTransactionHooks",
    "SupportsTransform",
    "SupportsUnitOfWork",
    "TransactionHooks",
    "TransactionParticipant",
    "UnitOfWork",
    "backend_for_scheme",
    "backend_of",
    "capability",
    "connect",
    "event_at",
    "register_backend",
    "unregister_backend",
]
