"""The write path: deciders and aggregates, the command handler that loads, decides and
appends, and the strategies that say when to snapshot a stream's state.

Above the store: it reaches a backend only through the ports of `eventfold.store`.
"""

from __future__ import annotations

from ..store.ports import Snapshot, SnapshotStore
from ._aggregate import Aggregate, applies
from ._decider import Decider, fold
from ._handler import CommandHandler, CommandResult, HandlerOptions, Loaded, command_event_ids
from ._snapshots import (
    SnapshotContext,
    SnapshotStrategy,
    decode_state,
    encode_state,
    every,
    older_than,
    on_replay,
    when,
)

__all__ = [
    "Aggregate",
    "CommandHandler",
    "CommandResult",
    "Decider",
    "HandlerOptions",
    "Loaded",
    "Snapshot",
    "SnapshotContext",
    "SnapshotStore",
    "SnapshotStrategy",
    "applies",
    "command_event_ids",
    "decode_state",
    "encode_state",
    "every",
    "fold",
    "older_than",
    "on_replay",
    "when",
]
