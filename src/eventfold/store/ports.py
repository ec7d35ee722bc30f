"""What a store can do beyond `EventStore`, declared as ports, and how code asks for it.

`EventStore` is the contract every backend keeps. The Protocols here are the further
capabilities the code above the stores uses; a backend declares one by having its
members (every port is runtime-checkable). Code that needs a capability asks::

    hooks = capability(store, SupportsTransactionHooks).transaction_hooks

which returns the store typed as the port, or raises `UnsupportedCapability` naming the
backend and the port. Code to which a capability is optional tests
``isinstance(store, SupportsLoad)`` and falls back.

The read path's ports (the read-model store and its rows, leases, wake-ups, and what an
inline participant runs) are declared in ``_read_model_port`` and re-exported here.

Transaction hooks are how anything joins an append's own transaction (see
`TransactionHooks`): participants run in a declared order (`HookOrder`), each sees the
events appended and writes through the same transaction, and a participant that raises
fails only the appends it was given.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from enum import IntEnum
from typing import Any, NamedTuple, Protocol, TypeVar, cast, runtime_checkable

import msgspec

from .._codec import Codec, LoadRow, Row
from .._events import Event, NewEvent, RecordedEvent
from .._position import ExpectedVersion, Position
from ..errors import UnsupportedCapability
from ._common import CommitListeners
from ._read_model_port import (
    INLINE_PARTICIPANT,
    Checkpoint,
    InlineProjection,
    Lease,
    Leases,
    Notifier,
    ParkedEvent,
    PartitionState,
    ProjectionSummary,
    ReadModelStore,
    ReadModelTransaction,
    SupportsProjectionSummaries,
    VersionRecord,
    VersionState,
    WakeUp,
    WakeUpTarget,
    now_us,
)
from .protocol import AppendResult, EventStore, StreamInfo

__all__ = [
    "INLINE_PARTICIPANT",
    "Checkpoint",
    "EventStore",
    "HookOrder",
    "HookTransaction",
    "InboxDatabase",
    "InboxSession",
    "InlineProjection",
    "Lease",
    "Leases",
    "LoadRows",
    "Notifier",
    "OutboxMessage",
    "ParkedEvent",
    "PartitionState",
    "ProjectionSummary",
    "ReadModelStore",
    "ReadModelTransaction",
    "Snapshot",
    "SnapshotStore",
    "SubjectKeys",
    "SupportsCodec",
    "SupportsCommitListeners",
    "SupportsLoad",
    "SupportsOutbox",
    "SupportsProjectionSummaries",
    "SupportsRowReads",
    "SupportsSnapshots",
    "SupportsSubjectKeys",
    "SupportsTransactionHooks",
    "SupportsTransform",
    "SupportsUnitOfWork",
    "TransactionHooks",
    "TransactionParticipant",
    "UnitOfWork",
    "VersionRecord",
    "VersionState",
    "WakeUp",
    "WakeUpTarget",
    "capability",
    "now_us",
]

P = TypeVar("P")


class Snapshot(msgspec.Struct, frozen=True):
    """A stream's encoded state after the event at ``version``."""

    stream_id: str
    state_type: str
    version: int
    schema_version: int
    data: bytes
    event_id: bytes
    """The id of the event at ``version`` (16 bytes): detects a replaced stream."""
    recorded_us: int
    """When the event at ``version`` was recorded (microseconds since the epoch, UTC)."""
    taken_us: int
    """When the snapshot was taken."""


@runtime_checkable
class SnapshotStore(Protocol):
    """Where a backend keeps snapshots (a table beside its events)."""

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` (replacing one of the same stream, state type and version)."""

    async def load_snapshot(
        self,
        stream_id: str,
        state_type: str,
        *,
        max_version: int | None = None,
        max_recorded_us: int | None = None,
    ) -> Snapshot | None:
        """The newest snapshot at or before the bounds, or None."""


class LoadRows(NamedTuple):
    """What a load reads: the snapshot to start from and the events after it."""

    snapshot: Snapshot | None
    """The newest snapshot within the bounds, None when there is none."""
    stream_id: str
    """The stream the events come from: a replaced stream's replacement."""
    anchor: bytes | None
    """The id of the event stored at the snapshot's version in ``stream_id`` (None: there
    is none, or no snapshot): the snapshot is used only when it is the snapshot's own."""
    first: list[LoadRow]
    """The first page of events after the snapshot's version (from 1 without one)."""
    rest: AsyncIterator[list[LoadRow]] | None
    """The further pages, None when ``first`` was the last."""


@runtime_checkable
class SupportsCodec(Protocol):
    """A store that encodes and decodes events with a `Codec` (its type registry, its
    upcasters and the validators of foreign types)."""

    @property
    def codec(self) -> Codec: ...


@runtime_checkable
class SupportsLoad(Protocol):
    """A store that reads what `CommandHandler` needs to load a stream in one trip."""

    async def read_for_load(
        self,
        stream_id: str,
        state_type: str,
        *,
        max_version: int | None = None,
        max_recorded_us: int | None = None,
    ) -> LoadRows:
        """The newest snapshot of ``state_type`` within the bounds (from the store's own
        ``snapshots``), the id of the event at its version, and the stream's events after
        it up to ``max_version`` (`LoadRows`)."""
        ...


@runtime_checkable
class SupportsRowReads(Protocol):
    """A store that hands out its stored rows undecoded, a page at a time, with the codec
    that decodes them: for code that writes events out again (the HTTP API's pages) and
    can pass a payload through as stored when the codec would read it as it is
    (`Codec.reads_as_stored`), decoding only the others (`Codec.decode_rows`).

    Each read takes the arguments of, and yields the rows of the same events in the same
    order as, its `EventStore` namesake; a page is never empty.
    """

    @property
    def codec(self) -> Codec: ...

    def read_stream_rows(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> AsyncIterator[list[Row]]:
        """`EventStore.read_stream`'s rows, in pages."""
        ...

    async def read_stream_page(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int,
    ) -> tuple[int, list[Row]]:
        """The stream's version (as `EventStore.stream_version` gives it) and the rows of
        at most ``limit`` of its events (those `read_stream_rows` yields, in one list): a
        page and its ETag. The version is read first, so it is never newer than the rows;
        a backend reads both in one round trip where it can."""
        ...

    def read_all_rows(
        self,
        *,
        after: Position | str | None = None,
        types: Sequence[str | type[Event]] | None = None,
        categories: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[list[Row]]:
        """`EventStore.read_all`'s rows, in pages."""
        ...


@runtime_checkable
class SupportsSnapshots(Protocol):
    """A store that keeps snapshots beside its events."""

    @property
    def snapshots(self) -> SnapshotStore: ...


@runtime_checkable
class SupportsCommitListeners(Protocol):
    """A store that tells listeners in this process after each append it commits."""

    @property
    def committed(self) -> CommitListeners: ...


@runtime_checkable
class SupportsTransform(Protocol):
    """What a stream transformation (`eventfold.transform`) needs of a store."""

    async def stream_info(self, stream_id: str) -> StreamInfo:
        """The stream's own version and what replaced it (as `EventStore.stream_info`)."""
        ...

    async def append_copies(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        *,
        expected_version: ExpectedVersion,
        recorded_us: Sequence[int],
    ) -> AppendResult:
        """`EventStore.append`, keeping the given recorded times (one per event)."""
        ...

    async def replace_stream(
        self, stream_id: str, target: str, *, version: int, target_version: int
    ) -> None:
        """Point ``stream_id`` at ``target`` atomically; `TransformConflict` unless
        ``stream_id`` is still at ``version``, ``target`` at ``target_version``, and
        neither is replaced."""
        ...


@runtime_checkable
class InboxSession(Protocol):
    """One transaction of a consumer's inbox: the message's id is already recorded in it,
    and the caller's effects run through it; all of it commits together or not at all."""

    async def execute(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Run one statement of the caller's (the driver's own placeholders: ``?`` or
        ``:name`` on SQLite, ``%s`` or ``%(name)s`` on PostgreSQL) and return its rows
        (none for a statement that returns none)."""
        ...


@runtime_checkable
class InboxDatabase(Protocol):
    """A consumer's table of processed message ids in its own database (a backend's
    ``inbox`` entry opens one; `eventfold.inbox.Inbox` is what callers use)."""

    async def open(self) -> None:
        """Connect and create the table if it is missing."""
        ...

    async def close(self) -> None: ...

    def transaction(
        self, consumer: str, message_id: str
    ) -> AbstractAsyncContextManager[InboxSession | None]:
        """Begin a transaction that records ``message_id`` for ``consumer``; None (and
        nothing written) when it is recorded already. Leaving with an exception rolls
        everything back."""
        ...

    async def processed(self, consumer: str, message_id: str) -> bool:
        """Whether ``message_id`` is recorded (committed) for ``consumer``."""
        ...

    async def prune(self, consumer: str, before_us: int) -> int:
        """Forget ``consumer``'s ids recorded before ``before_us`` (microseconds since the
        epoch, UTC); the number forgotten."""
        ...


class OutboxMessage(msgspec.Struct, frozen=True):
    """A message for a bus, enqueued in a unit of work and committed with it.

    Outbox messages are ordered among themselves (``position``, in commit order, with the
    same never-skip rule as the global log); their positions are not comparable with event
    positions.
    """

    position: Position
    message_id: bytes
    """16 bytes (a UUID): the de-duplication id a relay gives the bus."""
    destination: str
    """A destination declared on the store (the relay that delivers it)."""
    key: str | None
    """The ordering key: messages with the same key are delivered in commit order."""
    payload: bytes
    headers: dict[str, str]
    recorded_us: int
    """When it was committed (microseconds since the epoch, UTC)."""


@runtime_checkable
class SupportsOutbox(Protocol):
    """A store that keeps outbox messages beside its events (see `OutboxMessage`)."""

    async def read_outbox(
        self, after: Position, limit: int, *, destination: str | None = None
    ) -> list[OutboxMessage]:
        """Up to ``limit`` committed messages after ``after`` (of one destination, or
        all), in commit order; like `EventStore.read_all`, it never skips a message that
        commits late."""
        ...

    async def outbox_head(self, destination: str | None = None) -> Position:
        """The position of the newest committed message (`START` when there is none)."""
        ...


@runtime_checkable
class UnitOfWork(Protocol):
    """One transaction of a hybrid system: the caller's own SQL, appends to any number of
    streams, and outbox messages, committed together or not at all (see
    `SupportsUnitOfWork.unit_of_work`)."""

    backend: str
    """The store's backend name."""
    paramstyle: str
    """How `execute` takes parameters, as PEP 249 names it: ``qmark`` (``?``, SQLite) or
    ``format`` (``%s``, PostgreSQL)."""

    async def execute(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement of the caller's in the transaction; its rows (none for a
        write). It sees this unit's own writes. A failing statement raises a `StoreError`
        (the driver's error is its ``__cause__``) and, unless caught inside the block,
        rolls the whole unit back. On PostgreSQL unqualified names resolve in the store's
        schema, then ``public``, and the statements queued by `write` go first, in the
        same round trip."""
        ...

    async def write(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> None:
        """Run a statement whose rows are not needed (an upsert, a delete) in the
        transaction, in order with everything else. On PostgreSQL it is queued and goes
        to the server with the unit's next `execute` or append, or with the COMMIT, in
        the same round trip; its error surfaces there (a `StoreError` naming the
        statement) and rolls the unit back. On SQLite it runs at once, as `execute`.
        The fastest way to write rows in a unit: a unit of `write` calls and appends
        costs two round trips on PostgreSQL (the appends' and the COMMIT's)."""
        ...

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent],
        *,
        expected_version: ExpectedVersion,
    ) -> AppendResult:
        """`EventStore.append` inside the unit: a conflict raises `WrongExpectedVersion`
        (and rolls the whole unit back unless caught; the events stay unwritten either
        way). Transaction participants see the events in this transaction; an append
        that fails once written (a participant refusing it, say) rolls the unit back
        even if the error is caught."""
        ...

    def publish(
        self,
        destination: str,
        payload: object,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        message_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        """Enqueue a message for ``destination`` (declared on the store), committed with
        the unit; its id (``message_id``, or a new UUID). ``payload`` is bytes, a str
        (stored as UTF-8) or anything msgspec encodes as JSON; a payload that is none of
        these, an undeclared destination or a bad header raises `InvalidInput` here,
        before anything is stored."""
        ...

    def outbox_position(self, message_id: uuid.UUID) -> Position:
        """Where the message this unit published as ``message_id`` is in the outbox, once
        the unit has committed: the position `SupportsOutbox.read_outbox` reports for it
        (as `AppendResult.position` is for an append), so a relay's
        ``wait_for(position, partition=OUTBOX)`` waits for exactly that message. Asked
        inside the block (before the commit) or after a rollback it raises `StoreError`;
        for an id the unit did not publish, `InvalidInput`. An id published twice gets its
        later position."""
        ...


@runtime_checkable
class SupportsUnitOfWork(Protocol):
    """A store whose transactions can hold the caller's own SQL, appends and outbox
    messages together (`UnitOfWork`), and that keeps the outbox (`SupportsOutbox`)."""

    def unit_of_work(
        self,
        *,
        correlation_id: str | uuid.UUID | None = None,
        causation_id: str | uuid.UUID | None = None,
        traceparent: str | None = None,
    ) -> AbstractAsyncContextManager[UnitOfWork]:
        """``async with store.unit_of_work() as uow:``; the block's end commits it, an
        exception in it rolls everything back. The ids and ``traceparent`` given go into
        the headers of every message the unit publishes (``correlation_id``,
        ``causation_id``, ``traceparent``) unless the message sets them itself."""
        ...

    def declare_destination(self, name: str) -> None:
        """Allow messages for ``name`` (letters, digits, ``_ - .``; up to 200 bytes)."""
        ...

    @property
    def destinations(self) -> frozenset[str]:
        """The destinations declared so far."""
        ...

    async def prune_outbox(self, destination: str, up_to: Position) -> int:
        """Delete ``destination``'s messages at or before ``up_to`` (once delivered);
        how many were deleted."""
        ...


class HookOrder(IntEnum):
    """Where a transaction participant runs among the others (lower runs first; the
    same order runs by name)."""

    SUBJECT_KEYS = 50
    """Crypto-shredding's new subject keys (`eventfold.privacy`): before anything that
    reads the events."""
    INLINE_PROJECTIONS = 100
    OUTBOX = 200
    UNIT_OF_WORK = 300


@runtime_checkable
class HookTransaction(Protocol):
    """The append's transaction, as a participant sees it.

    On SQLite a participant runs synchronously on the writer connection, inside its
    transaction: it may await ``tx`` only (its coroutines never suspend); awaiting
    anything else fails the appends it was given. On PostgreSQL it runs on the append's
    pooled connection and may await what it likes (the transaction stays open meanwhile,
    so keep it short).
    """

    backend: str
    """The store's backend name."""
    connection: Any
    """The driver's connection, inside the transaction (``sqlite3.Connection`` or
    ``psycopg.AsyncConnection``). Never commit or roll it back."""
    paramstyle: str
    """How `execute` takes parameters, as PEP 249 names it: ``qmark`` (``?``, SQLite) or
    ``format`` (``%s``, PostgreSQL)."""
    may_suspend: bool
    """Whether the participant may await I/O of its own (False on SQLite)."""

    async def execute(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement in the transaction; its rows (none for a write).

        On PostgreSQL unqualified names resolve in the store's schema, then ``public``.
        """
        ...

    async def read_all(self, after: Position, limit: int) -> list[RecordedEvent]:
        """Up to ``limit`` events of the global log after ``after``: every event committed
        so far, as this transaction sees it (for catching up in
        `TransactionParticipant.attach`; on PostgreSQL, unlike `EventStore.read_all`, it
        does not wait for older transactions still open elsewhere)."""
        ...


class TransactionParticipant(Protocol):
    """Something that runs inside each append's transaction (see `TransactionHooks`).

    Subclass it to inherit the no-op `attach` and `begin`. An `EventfoldError` a method
    raises reaches the callers of the appends it was given; any other exception reaches
    them as a `StoreError` naming the participant.
    """

    name: str
    """Unique among a store's participants; adding one with a taken name replaces it."""
    order: int
    """Where it runs among the others (`HookOrder`; lower first, then by name)."""

    async def attach(self, tx: HookTransaction) -> None:
        """Run once when the participant is added, in a transaction of its own, with
        appends held back: what it writes commits before the first append it sees
        (catch up here with ``tx.read_all``)."""
        return None  # a body, so that subclasses inherit this default

    async def begin(self, tx: HookTransaction) -> None:
        """Run at the start of each transaction it joins, before any append's write
        (take locks here)."""
        return None

    async def apply(self, tx: HookTransaction, events: Sequence[RecordedEvent]) -> None:
        """See the events appended (in log order) and write through ``tx``."""
        ...


@runtime_checkable
class TransactionHooks(Protocol):
    """A store's participants in its appends' own transactions.

    Every append's transaction runs each participant's `TransactionParticipant.begin`,
    then the appends' writes, then its ``apply`` with the events they stored, then
    commits: a participant's writes commit with the events or not at all. Appends that
    share a transaction (a group commit) are given to the participants together; if a
    participant raises, only the appends it was given fail: the rest of the group is
    written again without them (SQLite: a savepoint per append; PostgreSQL: one append
    per transaction).
    """

    @property
    def participants(self) -> Sequence[TransactionParticipant]:
        """The participants, in the order they run."""
        ...

    async def add(self, participant: TransactionParticipant) -> None:
        """Run ``participant.attach`` with appends held back, then run it in every
        later append (replacing a participant of the same name). If ``attach`` raises,
        nothing changes."""
        ...

    async def remove(self, name: str) -> None:
        """Stop running the participant called ``name`` (nothing when there is none);
        returns once no append in flight runs it."""
        ...


@runtime_checkable
class SupportsTransactionHooks(Protocol):
    """A store whose appends' transactions others can join."""

    @property
    def transaction_hooks(self) -> TransactionHooks: ...


class SubjectKeys(Protocol):
    """Per-subject data keys for crypto-shredding (see `eventfold.privacy`), kept in the
    store's own database.

    Synchronous on purpose: the codec asks for keys while it decodes a page, which on
    SQLite runs on a reader thread and everywhere runs inside synchronous code. Callers
    cache what they get; a lookup is one round trip for any number of ids.

    A subject may have several keys (two processes that meet a new subject at once each
    make one; that is harmless, as every ciphertext names its key). Forgetting a subject
    deletes all its keys, so every ciphertext made under them stops decrypting, for good:
    the store holds no other copy. On a store opened read-only, `find` and `current` read
    and `add` and `forget` raise `StoreReadOnly`. `add_in` writes inside an append's own
    transaction instead (from a `TransactionParticipant`). Before the first `add` nothing need
    exist in the database: lookups then find nothing.
    """

    @property
    def joins_appends(self) -> bool:
        """Whether a new key should be written in the transaction of the append that
        first seals with it (`add_in`, from a transaction participant) rather than
        committed on its own first (`add`): True where a write of its own would wait for
        a lock the store's units of work hold (SQLite); False where joining every append
        costs more than it saves (PostgreSQL, where a participant makes each append hand
        its rows back: about 1.75x the time of a ten-event append)."""
        ...

    def find(self, key_ids: Sequence[bytes]) -> dict[bytes, bytes]:
        """The stored material of those of ``key_ids`` that exist (forgotten or never
        made: absent)."""
        ...

    def current(self, subject: str) -> tuple[bytes, bytes] | None:
        """The newest key of ``subject`` as ``(key_id, material)``; None when it has none
        (never had one, or was forgotten)."""
        ...

    def add(self, key_id: bytes, subject: str, material: bytes) -> None:
        """Store a new key for ``subject``, committed when this returns (so it exists
        before any event sealed with it can)."""
        ...

    async def add_in(
        self,
        tx: HookTransaction,
        key_id: bytes,
        subject: str,
        material: bytes,
        written_with: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Store a new key for ``subject`` through ``tx``, a transaction participant's
        view of an append's transaction (see `TransactionHooks`): it commits with that
        transaction's events or not at all. Runs through ``tx`` only (its ``execute``, or
        its connection), so a SQLite participant may await it.

        ``written_with``: events, as ``(stream_id, raw_event_id)``, of earlier
        transactions that wrote this key. When one of them is stored, the key was
        committed with it and is not written again (it is in the table, or its subject
        was forgotten since and it must stay gone). A key id already stored is left as
        it is."""
        ...

    def forget(self, subject: str) -> int:
        """Delete every key of ``subject``, committed when this returns; how many there
        were."""
        ...


@runtime_checkable
class SupportsSubjectKeys(Protocol):
    """A store that keeps per-subject data keys for crypto-shredding."""

    @property
    def subject_keys(self) -> SubjectKeys: ...


def capability(store: object, port: Callable[..., P], *, hint: str | None = None) -> P:
    """``store`` typed as ``port`` (one of the Protocols here), or `UnsupportedCapability`
    naming the backend and the port; ``hint`` replaces the error's advice."""
    # `port` is typed as a callable because mypy refuses a Protocol class where a
    # `type[P]` is expected (python/mypy#4717); it is always a runtime-checkable class.
    if isinstance(store, cast(type, port)):
        return cast(P, store)
    backend = store.backend if isinstance(store, EventStore) else type(store).__name__
    raise UnsupportedCapability(backend, getattr(port, "__name__", repr(port)), hint)
