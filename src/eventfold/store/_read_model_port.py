"""The read path's ports: the read-model store (documents, checkpoints, parked events and
version pointers), leases, wake-ups, and what a backend's inline participant runs.

One read-model store serves every projection of an application. Everything a projection
writes goes through a transaction, so a batch's changes and its checkpoint commit
together (exactly-once effects) or not at all::

    async with models.transaction() as tx:
        await tx.put_document("orders", 1, "order-1", b'{"total": 10}')
        await tx.set_checkpoint("orders", 1, 0, Position(0, 42), expected=Position(0, 41))

The checkpoint write is a compare-and-set on the position the worker last read: a worker
that lost its lease and writes once more is fenced out with `CheckpointConflict`, and its
whole transaction is rolled back. Backends differ only in where the rows live: memory
(`MemoryReadModelStore`), and next to the events in SQLite (through the store's writer
thread) or PostgreSQL (on one pooled connection per transaction).

Documents are stored encoded (JSON bytes) so every backend behaves the same; the
projection definitions encode and decode them.

`eventfold.store.ports` re-exports everything here; `eventfold.projections` re-exports the
names its users know.
"""

from __future__ import annotations

import enum
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import msgspec

from .._events import RecordedEvent
from .._position import Position

if TYPE_CHECKING:
    from .protocol import EventStore

__all__ = [
    "INLINE_PARTICIPANT",
    "Checkpoint",
    "InlineProjection",
    "Lease",
    "Leases",
    "Notifier",
    "ParkedEvent",
    "PartitionState",
    "ProjectionSummary",
    "ReadModelStore",
    "ReadModelTransaction",
    "SupportsProjectionSummaries",
    "VersionRecord",
    "VersionState",
    "WakeUp",
    "WakeUpTarget",
    "now_us",
]

INLINE_PARTICIPANT = "eventfold.inline-projections"
"""The name inline projections go by among a store's transaction participants."""


def now_us() -> int:
    """Microseconds since the epoch, UTC (the unit of every ``*_us`` field)."""
    return time.time_ns() // 1000


class PartitionState(enum.StrEnum):
    """What a partition's worker last recorded about itself."""

    RUNNING = "running"
    FAILED = "failed"
    """Stopped on a poison event (the ``stop`` policy); ``error`` says which."""
    INLINE = "inline"
    """Written by the appends themselves (`attach_inline`): no daemon may run it."""


class VersionState(enum.StrEnum):
    """Where one version of a projection is in its blue/green life."""

    BUILDING = "building"
    """Catching up beside the active version; readers do not see it yet."""
    ACTIVE = "active"
    """The version readers read (at most one per projection name)."""
    RETIRED = "retired"
    """Replaced by a newer version; its data is dropped after the grace period."""


class Checkpoint(msgspec.Struct, frozen=True):
    """One partition of one projection version: how far it got, and its state."""

    name: str
    version: int
    partition: int
    position: Position
    """Every matching event at or before this position has been applied."""
    state: PartitionState = PartitionState.RUNNING
    error: str | None = None
    updated_us: int = 0
    """When the row was last written (microseconds since the epoch, UTC)."""


class VersionRecord(msgspec.Struct, frozen=True):
    """One version of a projection and its blue/green state."""

    name: str
    version: int
    state: VersionState
    changed_us: int
    """When ``state`` last changed (microseconds since the epoch, UTC)."""


class ParkedEvent(msgspec.Struct, frozen=True):
    """An event set aside after its handler kept failing (the ``park`` policy)."""

    name: str
    version: int
    partition: int
    position: Position
    stream_id: str
    event_id: str
    type: str
    error: str
    attempts: int
    parked_us: int


@runtime_checkable
class ReadModelTransaction(Protocol):
    """One read-model transaction: reads see its own writes, and all of it commits at once.

    Backends may apply writes at once (PostgreSQL) or buffer them until commit (memory,
    SQLite); either way nothing is visible to others before the commit, and an exception
    leaving ``async with`` discards everything.
    """

    async def get_documents(self, name: str, version: int, ids: Sequence[str]) -> dict[str, bytes]:
        """The stored documents with these ids (missing ones are left out)."""
        ...

    async def put_document(self, name: str, version: int, doc_id: str, data: bytes) -> None:
        """Insert or replace one document (JSON bytes)."""
        ...

    async def delete_document(self, name: str, version: int, doc_id: str) -> None:
        """Delete one document; deleting a missing one is not an error."""
        ...

    async def get_checkpoint(self, name: str, version: int, partition: int) -> Checkpoint | None:
        """The partition's checkpoint row, or None before its first write."""
        ...

    async def set_checkpoint(
        self,
        name: str,
        version: int,
        partition: int,
        position: Position,
        *,
        expected: Position | None,
    ) -> None:
        """Move the checkpoint to ``position`` if it is still at ``expected``.

        ``expected`` None means no row yet. A mismatch raises `CheckpointConflict`, here
        or at commit, and nothing of the transaction is kept. The row's state is reset to
        running with no error.
        """
        ...

    async def set_state(
        self, name: str, version: int, partition: int, state: PartitionState, error: str | None
    ) -> None:
        """Record a partition's state (creating its row at `START` if it has none)."""
        ...

    async def park(self, event: ParkedEvent) -> None:
        """Set an event aside (replacing an earlier parking of the same position)."""
        ...

    async def unpark(self, name: str, version: int, position: Position) -> None:
        """Remove a parked event (after a successful replay)."""
        ...

    async def get_version(self, name: str, version: int) -> VersionRecord | None:
        """The version's record, or None."""
        ...

    async def set_version(
        self, name: str, version: int, state: VersionState, *, expected: VersionState | None
    ) -> None:
        """Set a version's state if it is still ``expected`` (None: no record yet).

        A mismatch raises `CheckpointConflict` (another worker got there first). Use
        `activate` to make a version active.
        """
        ...

    async def activate(self, name: str, version: int) -> int | None:
        """Point readers at ``version`` and retire the version they read before.

        Returns the previously active version. Atomic with the rest of the transaction:
        a reader sees the old pointer or the new one, never a mix.
        """
        ...

    async def drop(self, name: str, version: int) -> None:
        """Delete everything of one version: documents, checkpoints, parked events, record."""
        ...

    async def execute(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Run a statement of a SQL read model inside this transaction; return its rows.

        Only the SQL backends have it; the memory store raises `ConfigurationError`.
        """
        ...

    async def write(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> None:
        """Queue a statement whose rows are not needed (an upsert, a delete).

        It runs in order with everything else, before the next read, `execute` or the
        commit; its error surfaces there. On PostgreSQL a run of queued statements with
        the same text goes to the server in one round trip, so a SQL projection that
        writes with `write` is several times faster than one that awaits `execute`.
        """
        ...


@runtime_checkable
class ReadModelStore(Protocol):
    """Where read models, checkpoints and parked events live.

    The read methods here see committed data only; writes go through `transaction`.
    """

    backend: str
    """The backend's name: ``memory``, ``sqlite`` or ``postgresql``."""

    def transaction(self) -> AbstractAsyncContextManager[ReadModelTransaction]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        ...

    async def get_documents(self, name: str, version: int, ids: Sequence[str]) -> dict[str, bytes]:
        """Committed documents with these ids (missing ones are left out)."""
        ...

    def iter_documents(
        self, name: str, version: int, *, after: str | None = None, limit: int | None = None
    ) -> AsyncIterator[tuple[str, bytes]]:
        """Every committed document of a version as ``(id, data)``, ordered by id."""
        ...

    async def checkpoints(self, name: str, version: int) -> list[Checkpoint]:
        """The version's checkpoint rows, ordered by partition."""
        ...

    async def active_version(self, name: str) -> int | None:
        """The version readers read, or None before the first one is built."""
        ...

    async def versions(self, name: str | None = None) -> list[VersionRecord]:
        """Version records (of one projection, or all), ordered by name and version."""
        ...

    async def parked(self, name: str, version: int) -> list[ParkedEvent]:
        """The version's parked events, in log order."""
        ...


class ProjectionSummary(msgspec.Struct, frozen=True):
    """What a status reading needs of one projection version, read together with the
    others' (`SupportsProjectionSummaries.summaries`)."""

    name: str
    version: int
    checkpoints: tuple[Checkpoint, ...]
    """The version's checkpoint rows, ordered by partition (as `ReadModelStore.checkpoints`)."""
    parked: int
    """How many events it has parked."""
    oldest_parked_us: int | None
    """When the oldest of them was parked (None: none is)."""
    active_version: int | None
    """The version readers read of this name (as `ReadModelStore.active_version`)."""
    record: VersionRecord | None
    """This version's record, None when it has none."""


@runtime_checkable
class SupportsProjectionSummaries(Protocol):
    """A read-model store that reads many projection versions' checkpoints, parked counts
    and version records at once: what a metrics scrape or a status listing reads, in one
    query instead of a few per projection. Code that reads them tests for the port and
    falls back to `ReadModelStore`'s own reads."""

    async def summaries(self, slots: Sequence[tuple[str, int]]) -> list[ProjectionSummary]:
        """One `ProjectionSummary` per ``(name, version)`` of ``slots``, in that order
        (committed data, as the store's other reads; a slot with nothing stored has no
        checkpoints, no parked events and no record)."""
        ...


@runtime_checkable
class Lease(Protocol):
    """A held claim on one key."""

    key: str

    def held(self) -> bool:
        """Whether the claim is still ours, as far as this process can tell (no I/O)."""
        ...

    async def release(self) -> None:
        """Give the claim up; safe to call twice."""
        ...


@runtime_checkable
class Leases(Protocol):
    """Hands out leases: at most one holder per key at a time."""

    async def acquire(self, key: str, owner: str) -> Lease | None:
        """Claim ``key`` for ``owner`` without waiting; None when someone else holds it."""
        ...


@runtime_checkable
class WakeUp(Protocol):
    """How a subscriber at the tail waits for new events."""

    async def wait(self, seconds: float) -> None:
        """Return when new events may have been appended, or after ``seconds``.

        A wake-up is only a hint: the subscriber reads the log again either way.
        """
        ...


@runtime_checkable
class Notifier(Protocol):
    """A source of wake-ups; each subscriber takes its own."""

    def subscribe(self) -> WakeUp:
        """A `WakeUp` for one subscriber."""
        ...


class WakeUpTarget(Protocol):
    """What a backend's wake-up coroutine (``Backend.wake_ups``) is given: the store to
    watch, and whom to tell (``eventfold.projections.StoreWakeUps`` is one)."""

    store: EventStore
    sqlite_poll: float
    """Seconds between two polls, for a backend that polls."""
    listening: bool
    """Set by a backend that listens: whether its connection is up right now."""

    def notify(self) -> None:
        """Wake every subscriber now."""
        ...


class InlineProjection(Protocol):
    """What a backend's inline participant (``Backend.inline``) runs: a projection of
    one partition, applied inside the append's transaction
    (``eventfold.projections.ProjectionBase`` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> int: ...

    def handles(self, event: RecordedEvent) -> bool:
        """Whether ``event`` is one the projection applies."""
        ...

    async def apply(self, events: Sequence[RecordedEvent], tx: ReadModelTransaction) -> None:
        """Apply ``events`` (those it handles, in log order) through ``tx``."""
        ...

    async def run_setup(self, tx: ReadModelTransaction) -> None:
        """Prepare a new version's tables or documents (once, before its first event)."""
        ...
