"""The read path: projections run async (a daemon), live (on demand) or, later, inline.

- `Projection` / `DocumentProjection`: definitions (name, version, handlers per type).
- `ReadModelStore`: where read models, checkpoints and parked events live
  (`MemoryReadModelStore` now; SQLite and PostgreSQL beside the events next).
- `Subscription`: catch up from a checkpoint, then follow the tail, in batches.
- `ProjectionDaemon`: batches applied exactly once, poison events, partitions, leases,
  lag, ``wait_for`` and `StaleRead`, blue/green swaps.
- `live`, `replay`: the same definitions folded on demand; `rebuild`: a new version
  built beside the live one.
"""

from __future__ import annotations

from .bluegreen import BuildProgress, SwapPolicy, activate, drop_retired
from .daemon import ProjectionDaemon, check_projections
from .definition import (
    DocumentProjection,
    Handler,
    PoisonPolicy,
    Projection,
    ProjectionBase,
    ProjectionTransaction,
)
from .errors import (
    CheckpointConflict,
    HandlerFailed,
    InvalidProjection,
    ProjectionError,
    ProjectionStopped,
    StaleRead,
)
from .leases import Lease, Leases, MemoryLeases, PostgresLeases, lease_key
from .live import LiveView, live, replay
from .memory import MemoryReadModelStore
from .parked import ReplayResult, replay_parked
from .rebuild import format_progress, rebuild
from .status import (
    Lag,
    ProjectionState,
    ProjectionStatus,
    measure_lag,
    projection_status,
    wait_for,
)
from .store import (
    Checkpoint,
    ParkedEvent,
    PartitionState,
    ReadModelStore,
    ReadModelTransaction,
    VersionRecord,
    VersionState,
)
from .subscription import Batch, Notifier, Polling, Signal, Subscription, WakeUp, partition_of
from .view import DocumentView
from .wakeups import StoreWakeUps, notifier_for
from .worker import DaemonOptions, WorkerInfo, WorkerState

__all__ = [
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
    "Projection",
    "ProjectionBase",
    "ProjectionDaemon",
    "ProjectionError",
    "ProjectionState",
    "ProjectionStatus",
    "ProjectionStopped",
    "ProjectionTransaction",
    "ReadModelStore",
    "ReadModelTransaction",
    "ReplayResult",
    "Signal",
    "StaleRead",
    "StoreWakeUps",
    "Subscription",
    "SwapPolicy",
    "VersionRecord",
    "VersionState",
    "WakeUp",
    "WorkerInfo",
    "WorkerState",
    "activate",
    "check_projections",
    "drop_retired",
    "format_progress",
    "lease_key",
    "live",
    "measure_lag",
    "notifier_for",
    "partition_of",
    "projection_status",
    "rebuild",
    "replay",
    "replay_parked",
    "wait_for",
]
