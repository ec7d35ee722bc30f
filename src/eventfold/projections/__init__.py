"""The read path: projections run async (a daemon), live (on demand) or inline.

- `Projection` / `DocumentProjection`: definitions (name, version, handlers per type).
- `ReadModelStore`: where read models, checkpoints and parked events live
  (`MemoryReadModelStore`, `SQLiteReadModelStore` and `PostgresReadModelStore` beside
  the events; `read_models_for` picks the one for an event store).
- `Subscription`: catch up from a checkpoint, then follow the tail, in batches.
- `ProjectionDaemon`: batches applied exactly once, poison events, partitions, leases,
  lag, ``wait_for`` and `StaleRead`, blue/green swaps.
- `live`, `replay`: the same definitions folded on demand; `rebuild`: a new version
  built beside the live one.
- `attach_inline`: the same definitions run in the append's own transaction (SQLite
  and PostgreSQL).
"""

from __future__ import annotations

import typing

from ..backends.memory import MemoryReadModelStore
from ..errors import (
    CheckpointConflict,
    HandlerFailed,
    InvalidProjection,
    ProjectionError,
    ProjectionStopped,
    StaleRead,
)
from ..store.ports import (
    Checkpoint,
    ParkedEvent,
    PartitionState,
    ProjectionSummary,
    ReadModelStore,
    ReadModelTransaction,
    SupportsProjectionSummaries,
    VersionRecord,
    VersionState,
)
from ._backends import read_models_for
from ._bluegreen import BuildProgress, SwapPolicy, activate, drop_retired
from ._daemon import ProjectionDaemon, check_projections, check_unique_names
from ._definition import (
    DocumentProjection,
    Handler,
    PoisonPolicy,
    Projection,
    ProjectionBase,
    ProjectionTransaction,
)
from ._inline import attach_inline, detach_inline
from ._leases import Lease, Leases, MemoryLeases, lease_key
from ._live import LiveView, live, replay
from ._parked import ReplayResult, replay_parked
from ._rebuild import rebuild
from ._status import (
    DEFAULT_COUNT_LIMIT,
    Lag,
    ProjectionState,
    ProjectionStatus,
    measure_lag,
    projection_status,
    projection_statuses,
    wait_for,
)
from ._subscription import Batch, Notifier, Polling, Signal, Subscription, WakeUp, partition_of
from ._view import DocumentView
from ._wakeups import StoreWakeUps, notifier_for
from ._worker import DaemonOptions, WorkerInfo, WorkerState

if typing.TYPE_CHECKING:
    from ..backends.postgres import PostgresLeases, PostgresReadModelStore
    from ..backends.sqlite import SQLiteReadModelStore

__all__ = [
    "DEFAULT_COUNT_LIMIT",
    "Batch",
    "BuildProgress",
    "Checkpoint",
    "CheckpointConflict",
    "DaemonOptions",
    "DocumentProjection",
    "DocumentView",
    "Handler",
    "HandlerFailed",
    "InvalidProjection",
    "Lag",
    "Lease",
    "Leases",
    "LiveView",
    "MemoryLeases",
    "MemoryReadModelStore",
    "Notifier",
    "ParkedEvent",
    "PartitionState",
    "PoisonPolicy",
    "Polling",
    "PostgresLeases",
    "PostgresReadModelStore",
    "Projection",
    "ProjectionBase",
    "ProjectionDaemon",
    "ProjectionError",
    "ProjectionState",
    "ProjectionStatus",
    "ProjectionStopped",
    "ProjectionSummary",
    "ProjectionTransaction",
    "ReadModelStore",
    "ReadModelTransaction",
    "ReplayResult",
    "SQLiteReadModelStore",
    "Signal",
    "StaleRead",
    "StoreWakeUps",
    "Subscription",
    "SupportsProjectionSummaries",
    "SwapPolicy",
    "VersionRecord",
    "VersionState",
    "WakeUp",
    "WorkerInfo",
    "WorkerState",
    "activate",
    "attach_inline",
    "check_projections",
    "check_unique_names",
    "detach_inline",
    "drop_retired",
    "lease_key",
    "live",
    "measure_lag",
    "notifier_for",
    "partition_of",
    "projection_status",
    "projection_statuses",
    "read_models_for",
    "rebuild",
    "replay",
    "replay_parked",
    "wait_for",
]

_LAZY = {
    "PostgresLeases": "eventfold.backends.postgres",
    "PostgresReadModelStore": "eventfold.backends.postgres",
    "SQLiteReadModelStore": "eventfold.backends.sqlite",
}


def __getattr__(name: str) -> typing.Any:
    """The SQL backends' classes, imported on first use (their drivers load only then)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
