"""eventfold: event sourcing for Python.

An append-only event store with streams, optimistic concurrency and a global log that
subscribers never skip events in; SQLite embedded by default, PostgreSQL for production.
"""

from __future__ import annotations

from . import schema
from ._version import __version__
from .aggregate import Aggregate, applies
from .codec import DEFAULT_MAX_EVENT_SIZE
from .decider import Decider, fold
from .errors import (
    ConcurrencyError,
    ConfigurationError,
    DecodeError,
    DuplicateEventId,
    EncodingError,
    EventfoldError,
    EventTooLarge,
    EventTypeError,
    IncompatibleSchema,
    InvalidEvent,
    InvalidExpectedVersion,
    InvalidInput,
    InvalidPosition,
    InvalidStreamId,
    MissingUpcaster,
    NondeterministicEvolve,
    RetriesExhausted,
    SchemaTooNew,
    SchemaViolation,
    StoreClosed,
    StoreError,
    StoreNotFound,
    StoreReadOnly,
    StoreUnavailable,
    StreamReplaced,
    TransformConflict,
    UndecodableEvent,
    UnsupportedCapability,
    UpcastFailed,
    WrongExpectedVersion,
)
from .events import (
    Event,
    NewEvent,
    RecordedEvent,
    TypeRegistry,
    default_registry,
    event_type_name,
    new_event_id,
)
from .handler import CommandHandler, CommandResult, HandlerOptions, Loaded, command_event_ids
from .position import ANY, NO_STREAM, START, STREAM_EXISTS, ExpectedVersion, Position, StreamState
from .projections import DocumentProjection, Projection, ProjectionDaemon, StaleRead
from .snapshots import Snapshot, SnapshotStore, SnapshotStrategy
from .store import DEFAULT_URL, AppendResult, EventStore, StoreStats, StreamInfo, connect
from .store._common import MAX_STREAM_ID_LENGTH, category_of
from .transform import StreamReport, TransformReport, transform, transformed_event_id

__all__ = [
    "ANY",
    "DEFAULT_MAX_EVENT_SIZE",
    "DEFAULT_URL",
    "MAX_STREAM_ID_LENGTH",
    "NO_STREAM",
    "START",
    "STREAM_EXISTS",
    "Aggregate",
    "AppendResult",
    "CommandHandler",
    "CommandResult",
    "ConcurrencyError",
    "ConfigurationError",
    "Decider",
    "DecodeError",
    "DocumentProjection",
    "DuplicateEventId",
    "EncodingError",
    "Event",
    "EventStore",
    "EventTooLarge",
    "EventTypeError",
    "EventfoldError",
    "ExpectedVersion",
    "HandlerOptions",
    "IncompatibleSchema",
    "InvalidEvent",
    "InvalidExpectedVersion",
    "InvalidInput",
    "InvalidPosition",
    "InvalidStreamId",
    "Loaded",
    "MissingUpcaster",
    "NewEvent",
    "NondeterministicEvolve",
    "Position",
    "Projection",
    "ProjectionDaemon",
    "RecordedEvent",
    "RetriesExhausted",
    "SchemaTooNew",
    "SchemaViolation",
    "Snapshot",
    "SnapshotStore",
    "SnapshotStrategy",
    "StaleRead",
    "StoreClosed",
    "StoreError",
    "StoreNotFound",
    "StoreReadOnly",
    "StoreStats",
    "StoreUnavailable",
    "StreamInfo",
    "StreamReplaced",
    "StreamReport",
    "StreamState",
    "TransformConflict",
    "TransformReport",
    "TypeRegistry",
    "UndecodableEvent",
    "UnsupportedCapability",
    "UpcastFailed",
    "WrongExpectedVersion",
    "__version__",
    "applies",
    "category_of",
    "command_event_ids",
    "connect",
    "default_registry",
    "event_type_name",
    "fold",
    "new_event_id",
    "schema",
    "transform",
    "transformed_event_id",
]
