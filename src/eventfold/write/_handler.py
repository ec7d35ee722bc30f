"""The command handler: load → decide → append at the version read → retry on conflict.

::

    handler = eventfold.CommandHandler(store, account)
    result = await handler.handle("account-1", Deposit(amount=10), command_id=cid)
    result.events, result.version, result.state
    state = await handler.load("account-1", at_version=5)   # or as_of=datetime
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import random
import uuid
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec

from .._codec import Codec
from .._events import Event, NewEvent, RecordedEvent
from .._personal import Protector, SubjectScan
from .._position import NO_STREAM, ExpectedVersion, Position
from ..errors import (
    DecodeError,
    DuplicateEventId,
    InvalidInput,
    NondeterministicEvolve,
    RetriesExhausted,
    WrongExpectedVersion,
)
from ..schema._state import can_upcast_state, upcast_snapshot
from ..store.ports import (
    Snapshot,
    SnapshotStore,
    SupportsCodec,
    SupportsLoad,
    SupportsSnapshots,
    UnitOfWork,
)
from ..store.protocol import EventStore
from ._decider import Decider
from ._fold import Fold, ReadForLoad, rows_from_stream, snapshot_fits
from ._sealed import SealedStateUnusable, is_sealed, open_state, seal_state
from ._snapshots import SnapshotContext, SnapshotStrategy, decode_state, encode_state

__all__ = ["CommandHandler", "CommandResult", "HandlerOptions", "Loaded", "command_event_ids"]

log = logging.getLogger("eventfold.handler")

C = TypeVar("C")
S = TypeVar("S")
E = TypeVar("E", bound=Event)

_COMMAND_NAMESPACE = uuid.UUID("6f1c2b0e-6a43-4a53-9b39-0b8c1e7d2f10")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_NO_SUBJECTS: frozenset[str] = frozenset()


class _Ids:
    """Random version-4 UUID strings for commands without an id, from one ``os.urandom``
    call per 256 of them (a system call and a `uuid.UUID` each cost more than the rest
    of an id's making)."""

    def __init__(self) -> None:
        self._hex = ""
        self._at = 0

    def next(self) -> str:
        at = self._at
        if at >= len(self._hex):
            self._hex, at = os.urandom(16 * 256).hex(), 0
        self._at = at + 32
        h = self._hex
        # The version nibble is 4; the variant's top bits are 10 (RFC 4122).
        return (
            f"{h[at : at + 8]}-{h[at + 8 : at + 12]}-4{h[at + 13 : at + 16]}-"
            f"{_VARIANT[h[at + 16]]}{h[at + 17 : at + 20]}-{h[at + 20 : at + 32]}"
        )


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
_fresh_ids = _Ids()


def command_event_ids(stream_id: str, command_id: str, count: int) -> list[uuid.UUID]:
    """The event ids a command's events get: the same command id, the same ids.

    Deriving ids from the command id is what makes a repeated or raced command land once:
    the store refuses to store the same id twice in a stream.
    """
    return [uuid.uuid5(_COMMAND_NAMESPACE, f"{stream_id}\n{command_id}\n{i}") for i in range(count)]


class HandlerOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How a `CommandHandler` retries, caches and checks."""

    max_retries: int = 3
    """Retries after a conflict before `RetriesExhausted` (0: fail on the first)."""
    backoff: float = 0.002
    """Seconds before the first retry; doubles each retry up to ``max_backoff``."""
    max_backoff: float = 0.1
    jitter: bool = True
    """Sleep a random time up to the backoff ("full jitter"), so racers spread out."""
    cache_size: int = 0
    """Streams whose state is kept in memory between commands (0: no cache)."""
    snapshots: SnapshotStrategy | None = None
    """When to take a snapshot after a command (None: never, but existing ones are used)."""
    check_determinism: bool = False
    """Fold each loaded stream twice from scratch and compare (for tests and debugging)."""

    def __post_init__(self) -> None:
        for name in ("max_retries", "cache_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInput(f"HandlerOptions.{name} must be an int >= 0, got {value!r}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise InvalidInput("HandlerOptions.backoff and max_backoff must be >= 0")


@dataclass(frozen=True)
class Loaded(Generic[S]):
    """A stream's state at a version, and how the load got it."""

    state: S
    version: int
    snapshot_version: int = 0
    """The snapshot the load started from (0: none, folded from the start)."""
    snapshot_taken: dt.datetime | None = None
    replayed: int = 0
    """Events folded on top of the snapshot (or from scratch)."""
    subjects: frozenset[str] = frozenset()
    """The data subjects whose personal values (`eventfold.Personal`) the state was
    folded from, the snapshot's included: a snapshot of it is sealed for them."""
    replaced: bool = False
    """Whether some event's personal fields of a subject all read as their replacement
    values (forgotten, or sealed and read with no protector attached)."""


@dataclass(frozen=True)
class CommandResult(Generic[S, E]):
    """What a handled command did."""

    events: list[E]
    """The events the command appended (empty when it decided nothing)."""
    version: int
    """The stream's version after the command."""
    state: S
    """The state after the command's events."""
    position: Position | None = None
    """The global position of the last appended event (None when nothing was appended)."""
    retries: int = 0
    """How many conflicts the command went through before it landed."""
    duplicate: bool = False
    """True when the command id had been handled before: nothing new was appended."""
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


class CommandHandler(Generic[C, S, E]):
    """Runs commands against streams of one decider, with optimistic concurrency."""

    def __init__(
        self,
        store: EventStore,
        decider: Decider[C, S, E],
        *,
        options: HandlerOptions | None = None,
        snapshot_store: SnapshotStore | None = None,
    ) -> None:
        self.store = store
        self.decider = decider
        self.options = options or HandlerOptions()
        own = store.snapshots if isinstance(store, SupportsSnapshots) else None
        found = snapshot_store or own
        self.snapshot_store: SnapshotStore | None = found
        self._cache: OrderedDict[str, Loaded[S]] = OrderedDict()
        self._forgets = 0
        """How many forgotten subjects the protector has reported (see `_remember`)."""
        self._hooked: Protector | None = None
        """The protector whose forgets evict cached states (see `_hook`)."""
        self._unhook: weakref.finalize[[], CommandHandler[C, S, E]] | None = None
        self._codec: Codec | None = store.codec if isinstance(store, SupportsCodec) else None
        # The backend's one-trip read of a snapshot and the events after it, when the
        # snapshots are its own.
        self._read_for_load: ReadForLoad | None = (
            store.read_for_load
            if isinstance(store, SupportsLoad) and found is not None and found is own
            else None
        )

    # -- commands --------------------------------------------------------------------

    async def handle(
        self,
        stream_id: str,
        command: C,
        *,
        command_id: str | uuid.UUID | None = None,
        correlation_id: str | uuid.UUID | None = None,
        metadata: Mapping[str, Any] | None = None,
        unit_of_work: UnitOfWork | None = None,
    ) -> CommandResult[S, E]:
        """Decide ``command`` on the stream's current state and append the events.

        1. load (cache, else snapshot + the events after it); 2. if ``command_id`` was
        handled before, return that result; 3. decide (a raised error is the caller's:
        nothing is appended, no retry); 4. append at the version read; 5. on a conflict,
        reload and decide again (``max_retries``, backoff with jitter); 6. cache, maybe
        snapshot, return.

        With ``unit_of_work`` (from ``store.unit_of_work()``), the append is the unit's:
        it commits with the unit's other work or not at all. There is no retry then (the
        unit's other work was done against the state it read): a conflict raises
        `WrongExpectedVersion` and the whole unit rolls back; run the unit again. The
        new state is neither cached nor snapshotted (the unit may still roll back).
        """
        cause = str(command_id) if command_id is not None else _fresh_ids.next()
        correlation = str(correlation_id) if correlation_id is not None else cause
        attempt = 0
        if self.options.cache_size:
            self._hook()
        while True:
            forgets = self._forgets
            loaded = await self._current(stream_id)
            if command_id is not None and loaded.version > 0:
                earlier = await self._handled_before(stream_id, cause)
                if earlier is not None:
                    return earlier
            state = self._copy(loaded.state)
            events = list(self.decider.decide(command, state))
            if not events:
                return CommandResult([], loaded.version, loaded.state, retries=attempt)
            ids: list[uuid.UUID | None] = (
                list(command_event_ids(stream_id, cause, len(events)))
                if command_id is not None
                else [None] * len(events)
            )
            batch = [
                NewEvent(
                    e,
                    event_id=i,
                    metadata=metadata,
                    correlation_id=correlation,
                    causation_id=cause,
                )
                for e, i in zip(events, ids, strict=True)
            ]
            expected: ExpectedVersion = loaded.version if loaded.version else NO_STREAM
            append = self.store.append if unit_of_work is None else unit_of_work.append
            try:
                appended = await append(stream_id, batch, expected_version=expected)
            except WrongExpectedVersion as conflict:
                self._cache.pop(stream_id, None)
                if unit_of_work is not None:
                    raise
                attempt += 1
                if attempt > self.options.max_retries:
                    raise RetriesExhausted(stream_id, attempt, conflict) from conflict
                await asyncio.sleep(self._backoff(attempt))
                continue
            except DuplicateEventId:
                # Another handler raced us with the same command id and won.
                self._cache.pop(stream_id, None)
                earlier = await self._handled_before(stream_id, cause)
                if earlier is None:
                    raise
                return earlier
            if appended.retry:
                # A racing handler stored this command's events first.
                self._cache.pop(stream_id, None)
                earlier = await self._handled_before(stream_id, cause)
                if earlier is not None:
                    return earlier
            new_state = self.decider.fold(events, self._copy(loaded.state))
            keep = self.options.cache_size or self.options.snapshots is not None
            if keep and unit_of_work is None:
                scan = SubjectScan(loaded.subjects, loaded.replaced)
                scan.payloads(events)
                after = Loaded(
                    new_state,
                    appended.version,
                    loaded.snapshot_version,
                    loaded.snapshot_taken,
                    loaded.replayed,
                    scan.subjects,
                    scan.replaced,
                )
                self._remember(stream_id, after, forgets)
                await self._maybe_snapshot(stream_id, after, events, forgets)
            return CommandResult(events, appended.version, new_state, appended.position, attempt)

    def _backoff(self, attempt: int) -> float:
        delay = min(self.options.max_backoff, self.options.backoff * 2 ** (attempt - 1))
        return random.uniform(0, delay) if self.options.jitter else delay

    def _copy(self, state: S) -> S:
        copy_state = self.decider.copy_state
        return copy_state(state) if copy_state is not None else state

    async def _handled_before(self, stream_id: str, cause: str) -> CommandResult[S, E] | None:
        """The original result of command ``cause`` on the stream, if it was handled."""
        (first_id,) = command_event_ids(stream_id, cause, 1)
        found = await self.store.find_events(stream_id, [first_id])
        if not found:
            return None
        first = found[0]
        events: list[E] = []
        last: RecordedEvent | None = None
        async for recorded in self.store.read_stream(stream_id, from_version=first.version):
            if recorded.causation_id != cause:
                break
            events.append(recorded.data)
            last = recorded
        assert last is not None
        state = (await self.load_details(stream_id, at_version=last.version)).state
        return CommandResult(events, last.version, state, last.position, duplicate=True)

    # -- loading ---------------------------------------------------------------------

    async def load(
        self, stream_id: str, *, at_version: int | None = None, as_of: dt.datetime | None = None
    ) -> S:
        """The stream's state now, after the event at ``at_version``, or as of a time."""
        return (await self.load_details(stream_id, at_version=at_version, as_of=as_of)).state

    async def load_details(
        self, stream_id: str, *, at_version: int | None = None, as_of: dt.datetime | None = None
    ) -> Loaded[S]:
        """Like `load`, with the version and how the state was found.

        ``as_of`` folds the events recorded at or before that time; a snapshot is used
        when it lies at or before the point asked for.
        """
        if at_version is not None and as_of is not None:
            raise InvalidInput("pass at_version or as_of, not both")
        if at_version is not None and (
            isinstance(at_version, bool) or not isinstance(at_version, int) or at_version < 0
        ):
            raise InvalidInput(f"at_version must be an int >= 0, got {at_version!r}")
        max_us: int | None = None
        if as_of is not None:
            if not isinstance(as_of, dt.datetime) or as_of.tzinfo is None:
                raise InvalidInput(
                    f"as_of must be a timezone-aware datetime, got {as_of!r}; "
                    "e.g. datetime(2026, 1, 2, 15, 0, tzinfo=timezone.utc)"
                )
            max_us = (as_of - _EPOCH) // dt.timedelta(microseconds=1)
        loaded = await self._load(stream_id, at_version, max_us)
        if at_version is not None and loaded.version < at_version:
            raise InvalidInput(
                f"stream {stream_id!r} has {loaded.version} events; at_version={at_version} "
                "is past its end"
            )
        return loaded

    async def _current(self, stream_id: str) -> Loaded[S]:
        cached = self._cache.get(stream_id)
        if cached is not None:
            self._cache.move_to_end(stream_id)
            return cached
        return await self._load(stream_id, None, None)

    async def _load(self, stream_id: str, at_version: int | None, max_us: int | None) -> Loaded[S]:
        if self._read_for_load is not None:
            rows = await self._read_for_load(
                stream_id,
                self.decider.state_type,
                max_version=at_version,
                max_recorded_us=max_us,
            )
            snapshot, subjects, discarded = self._start_from(rows.snapshot)
        else:
            snapshot, subjects, discarded = await self._snapshot_for(stream_id, at_version, max_us)
        state, taken = self.decider.start(), None
        if snapshot is not None:
            try:
                state = self._decode_snapshot(snapshot)
            except _CorruptSnapshot:
                snapshot, discarded = None, True
            else:
                taken = _EPOCH + dt.timedelta(microseconds=snapshot.taken_us)
        if discarded:
            return await self._load_from_scratch(stream_id, at_version, max_us, replace=True)
        if self._read_for_load is None:
            start = snapshot.version if snapshot is not None else 1
            limit = None if at_version is None else at_version - start + 1
            rows = await rows_from_stream(self.store, stream_id, snapshot, limit)
        if snapshot is not None and not snapshot_fits(snapshot, rows):
            if rows.rest is not None:
                await _close(rows.rest)
            if rows.stream_id == snapshot.stream_id and rows.anchor is None:
                log.warning(
                    "snapshot of %r is at version %d but the stream holds fewer events; "
                    "ignoring it",
                    stream_id,
                    snapshot.version,
                )
            else:
                log.warning(
                    "snapshot of %r at version %d does not match the stream's event there; "
                    "ignoring it and folding from the start",
                    stream_id,
                    snapshot.version,
                )
            return await self._load_from_scratch(stream_id, at_version, max_us, replace=True)
        scan = SubjectScan(subjects)
        fold = Fold(self.decider.evolve, state, snapshot.version if snapshot else 0, max_us, scan)
        going = fold.feed(rows.first)
        rest = rows.rest
        if rest is not None:
            if going:
                async for page in rest:
                    if not fold.feed(page):
                        break
            await _close(rest)
        version = fold.version
        if self.options.check_determinism:
            await self._check_determinism(stream_id, version)
        return Loaded(
            fold.state,
            version,
            snapshot.version if snapshot else 0,
            taken,
            fold.replayed,
            scan.subjects,
            scan.replaced,
        )

    async def _load_from_scratch(
        self, stream_id: str, at_version: int | None, max_us: int | None, *, replace: bool
    ) -> Loaded[S]:
        """Fold the whole stream; with ``replace``, snapshot the result in place of a bad one."""
        state, version, replayed = self.decider.start(), 0, 0
        scan = SubjectScan()
        async for recorded in self.store.read_stream(stream_id, limit=at_version):
            if max_us is not None and recorded.recorded_us > max_us:
                break
            state = self.decider.evolve(state, recorded.data)
            scan.payloads((recorded.data,))
            version = recorded.version
            replayed += 1
        loaded = Loaded(state, version, 0, None, replayed, scan.subjects, scan.replaced)
        if replace and self.options.check_determinism:
            await self._check_determinism(stream_id, version)
        if replace and version > 0:
            try:
                await self._save_snapshot(stream_id, loaded)
            except Exception:  # never fail a load over a snapshot
                log.exception("replacing the snapshot of %r failed", stream_id)
        return loaded

    async def _check_determinism(self, stream_id: str, version: int) -> None:
        first, second = self.decider.start(), self.decider.start()
        evolve = self.decider.evolve
        async for recorded in self.store.read_stream(stream_id, limit=version):
            first = evolve(first, recorded.data)
            second = evolve(second, recorded.data)
            if first != second:
                raise NondeterministicEvolve(stream_id, recorded.version, recorded.type)

    # -- snapshots -------------------------------------------------------------------

    async def _snapshot_for(
        self, stream_id: str, at_version: int | None, max_us: int | None
    ) -> tuple[Snapshot | None, frozenset[str], bool]:
        """The snapshot to start from, the subjects it was sealed for, and whether an
        unusable one was found instead."""
        if self.snapshot_store is None:
            return None, _NO_SUBJECTS, False
        snapshot = await self.snapshot_store.load_snapshot(
            stream_id,
            self.decider.state_type,
            max_version=at_version,
            max_recorded_us=max_us,
        )
        return self._start_from(snapshot)

    def _start_from(
        self, snapshot: Snapshot | None
    ) -> tuple[Snapshot | None, frozenset[str], bool]:
        """The snapshot a load starts from (``snapshot`` opened, then upcast: `_opened`,
        `_usable`), the subjects it was sealed for, and whether an unusable one was
        found instead."""
        snapshot, subjects, discarded = self._opened(snapshot)
        if discarded:
            return None, subjects, True
        snapshot, discarded = self._usable(snapshot)
        return snapshot, subjects, discarded

    def _opened(self, snapshot: Snapshot | None) -> tuple[Snapshot | None, frozenset[str], bool]:
        """``snapshot``, its state opened if it is sealed (`_sealed`), the subjects it
        was sealed for, and whether it is unusable: a subject was forgotten, it does not
        authenticate, or no protector is attached to open it."""
        if snapshot is None or not is_sealed(snapshot.data):
            return snapshot, _NO_SUBJECTS, False
        protector = self._codec.protector if self._codec is not None else None
        if protector is None:
            log.info(
                "snapshot of %r at version %d is sealed for its data subjects and no "
                "protector is attached (eventfold.privacy.enable); folding from the events",
                snapshot.stream_id,
                snapshot.version,
            )
            return None, _NO_SUBJECTS, True
        try:
            # On the loop, as the codec opens sealed events: the keys are cached.
            plain, subjects = open_state(protector, snapshot)
        except SealedStateUnusable as exc:
            log.log(
                logging.INFO if exc.forgotten else logging.WARNING,
                "snapshot of %r at version %d cannot be opened (%s); folding from the "
                "events and replacing it",
                snapshot.stream_id,
                snapshot.version,
                exc,
            )
            return None, _NO_SUBJECTS, True
        return msgspec.structs.replace(snapshot, data=plain), subjects, False

    def _usable(self, snapshot: Snapshot | None) -> tuple[Snapshot | None, bool]:
        """The snapshot if it can be used, and whether an unusable one was found instead."""
        if snapshot is None or snapshot.version < 1:
            return None, False
        current = self.decider.state_version
        if snapshot.schema_version < current:
            store = self.store
            registry = store.codec.registry if isinstance(store, SupportsCodec) else None
            if can_upcast_state(snapshot.state_type, snapshot.schema_version, current, registry):
                try:
                    return upcast_snapshot(snapshot, to_version=current, registry=registry), False
                except DecodeError as exc:
                    log.warning(
                        "snapshot of %r at version %d cannot be upcast (%s); ignoring it and "
                        "replacing it after a replay",
                        snapshot.stream_id,
                        snapshot.version,
                        exc,
                    )
                    return None, True
        if snapshot.schema_version != current:
            log.warning(
                "snapshot of %r at version %d has state schema version %d, the code's is %d; "
                "ignoring it and replacing it after a replay",
                snapshot.stream_id,
                snapshot.version,
                snapshot.schema_version,
                self.decider.state_version,
            )
            return None, True
        return snapshot, False

    def _decode_snapshot(self, snapshot: Snapshot) -> S:
        try:
            state: S = decode_state(snapshot.data, self.decider.initial_state)
        except (msgspec.DecodeError, msgspec.ValidationError, TypeError, ValueError) as exc:
            log.warning(
                "snapshot of %r at version %d does not decode (%s); folding from the events",
                snapshot.stream_id,
                snapshot.version,
                exc,
            )
            raise _CorruptSnapshot from exc
        return state

    async def snapshot(self, stream_id: str) -> Snapshot | None:
        """Take a snapshot of the stream now; None when it has no events or no store."""
        loaded = await self._load(stream_id, None, None)
        return await self._save_snapshot(stream_id, loaded)

    async def _maybe_snapshot(
        self, stream_id: str, after: Loaded[S], events: list[E], forgets: int
    ) -> None:
        strategy = self.options.snapshots
        if strategy is None or self.snapshot_store is None:
            return
        try:
            context = SnapshotContext(
                stream_id,
                after.state,
                events,
                after.version,
                after.snapshot_version,
                after.snapshot_taken,
                after.replayed,
                dt.datetime.now(dt.UTC),
            )
            if not strategy(context):
                return
            saved = await self._save_snapshot(stream_id, after)
            if saved is not None:
                taken = _EPOCH + dt.timedelta(microseconds=saved.taken_us)
                self._remember(
                    stream_id,
                    Loaded(
                        after.state,
                        after.version,
                        saved.version,
                        taken,
                        0,
                        after.subjects,
                        after.replaced,
                    ),
                    forgets,
                )
        except Exception:  # a snapshot is an optimisation: it never fails the command
            log.exception("taking a snapshot of %r failed; the command succeeded", stream_id)

    async def _save_snapshot(self, stream_id: str, loaded: Loaded[S]) -> Snapshot | None:
        if self.snapshot_store is None or loaded.version < 1:
            return None
        last = [
            e async for e in self.store.read_stream(stream_id, from_version=loaded.version, limit=1)
        ]
        if not last:
            return None
        # Keyed by the stream the events came from: a replaced stream's replacement.
        sid = last[0].stream_id
        data = self._state_data(sid, loaded)
        if data is None:
            return None
        now_us = (dt.datetime.now(dt.UTC) - _EPOCH) // dt.timedelta(microseconds=1)
        snapshot = Snapshot(
            sid,
            self.decider.state_type,
            loaded.version,
            self.decider.state_version,
            data,
            last[0].raw_event_id,
            last[0].recorded_us,
            now_us,
        )
        await self.snapshot_store.save_snapshot(snapshot)
        return snapshot

    def _state_data(self, stream_id: str, loaded: Loaded[S]) -> bytes | None:
        """A snapshot's data for ``loaded``: its state encoded, and sealed for the data
        subjects it holds (`_sealed`). None when it must not be stored: it holds a
        subject forgotten since it was folded (a cached state), or it folded sealed
        personal fields read with no protector (their replacement values: a
        privacy-enabled process would later start from it)."""
        plain = encode_state(loaded.state)
        if not loaded.subjects and not loaded.replaced:
            return plain
        protector = self._codec.protector if self._codec is not None else None
        if protector is None:
            if loaded.replaced:
                log.debug(
                    "not snapshotting %r: its state folded personal fields that read as "
                    "replacement values and no protector is attached to tell sealed ones",
                    stream_id,
                )
                return None
            return plain
        if not loaded.subjects:
            return plain
        sealed = seal_state(
            protector,
            loaded.subjects,
            stream_id,
            self.decider.state_type,
            loaded.version,
            self.decider.state_version,
            plain,
        )
        if sealed is None:
            log.info(
                "not snapshotting %r: a data subject its state holds was forgotten since "
                "it was folded; dropping it from the cache",
                stream_id,
            )
            self._cache.pop(stream_id, None)
        return sealed

    # -- cache -----------------------------------------------------------------------

    def evict(self, stream_id: str) -> None:
        """Drop the stream's state from this handler's in-process cache (``cache_size``),
        so its next command loads it again. Not needed after a forget when the store's
        codec has a protector (`eventfold.privacy.enable`): the handler then drops the
        cached states that hold the forgotten subject itself (in other processes, once
        their `Privacy.follow` sees the forget)."""
        self._cache.pop(stream_id, None)

    def _remember(self, stream_id: str, loaded: Loaded[S], forgets: int) -> None:
        """Cache ``loaded``, folded from what was read when `_forgets` was ``forgets``:
        not if it holds data subjects and a subject was forgotten since (it may be one
        of them, forgotten before the state was cached)."""
        size = self.options.cache_size
        if size == 0:
            return
        if loaded.subjects and self._forgets != forgets:
            self._cache.pop(stream_id, None)
            return
        self._cache[stream_id] = loaded
        self._cache.move_to_end(stream_id)
        while len(self._cache) > size:
            self._cache.popitem(last=False)

    def _hook(self) -> None:
        """Have the codec's protector tell this handler of forgotten subjects, holding it
        weakly (a handler made per request is collected, and its listener removed)."""
        protector = self._codec.protector if self._codec is not None else None
        if protector is None or protector is self._hooked:
            return
        if self._unhook is not None:
            self._unhook()
        ref = weakref.ref(self)

        def forgotten(subject: str) -> None:
            handler = ref()
            if handler is not None:
                handler._forgotten(subject)

        self._hooked = protector
        self._unhook = weakref.finalize(self, protector.on_forget(forgotten))

    def _forgotten(self, subject: str) -> None:
        """Drop the cached states that hold ``subject`` (just forgotten)."""
        self._forgets += 1
        for stream_id in [s for s, loaded in self._cache.items() if subject in loaded.subjects]:
            del self._cache[stream_id]


class _CorruptSnapshot(Exception):
    """Internal: a snapshot did not decode; the load folds from scratch instead."""


async def _close(pages: AsyncIterator[Any]) -> None:
    """Close a load's further pages (a generator holding a read open) early or at the end."""
    aclose = getattr(pages, "aclose", None)
    if aclose is not None:
        await aclose()
