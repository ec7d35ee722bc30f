"""What the metrics and the health check are built from: one reading of the head, and of
each projection's and relay's checkpoint, lag and parked list, taken cheaply.

A reading reads the head once and every projection's checkpoints, parked count and
oldest parked time at once (one query, when the read-model store offers
`SupportsProjectionSummaries`; else two reads per projection), then for each projection
that is behind the matching events after its checkpoints (at most ``count_limit``); the
recorded time of the event at the head is read once, and only when something is behind.
A relay is read with `eventfold.relay.relay_status`.

A projection or relay is **stalled** when events are waiting for it (its lag is above 0)
and its checkpoint has not moved for ``stall_seconds``, over successive readings of the
same `Observer`: the clock starts at the first reading that finds it behind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .._position import START, Position
from ..errors import DecodeError, InvalidInput
from ..projections import (
    PartitionState,
    ProjectionBase,
    ProjectionSummary,
    ReadModelStore,
    SupportsProjectionSummaries,
    measure_lag,
    partition_of,
    read_models_for,
)
from ..relay import Relay, relay_status
from ..store import EventStore

__all__ = [
    "DEFAULT_COUNT_LIMIT",
    "Health",
    "Kind",
    "Observer",
    "Problem",
    "Reading",
    "Snapshot",
]

DEFAULT_COUNT_LIMIT = 1000
"""Matching events a reading counts exactly per projection; beyond, its lag is the upper
bound (the events in the log after its checkpoint)."""


class Kind(enum.StrEnum):
    """What a reading is of."""

    PROJECTION = "projection"
    RELAY = "relay"


@dataclass(frozen=True, slots=True)
class Reading:
    """One projection or relay, as read at one time."""

    kind: Kind
    name: str
    """The projection's name, or the relay's destination."""
    position: Position
    """The lowest checkpoint (a relay: its events' checkpoint)."""
    lag_events: int
    """Matching events after the checkpoint (a relay: plus its outbox messages)."""
    lag_exact: bool
    lag_seconds: float
    """How much older the oldest waiting event is than the event at the head (both times
    are the store's, so no clock skew enters); 0 when nothing waits."""
    parked: int
    oldest_parked_seconds: float | None
    failed: bool
    """Stopped on a poison event (a projection whose policy is ``stop``)."""
    error: str | None
    stalled_seconds: float = 0.0
    """How long it has been behind without its checkpoint moving (0 when it moves)."""
    stalled: bool = False
    """``stalled_seconds`` reached the observer's ``stall_seconds``."""
    marker: tuple[Position | None, ...] = field(default=(), repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One reading of everything an `Observer` watches."""

    backend: str
    head: Position
    readings: tuple[Reading, ...]
    duration_seconds: float
    """How long the reading took."""

    @property
    def stalled(self) -> list[Reading]:
        return [r for r in self.readings if r.stalled]

    @property
    def failed(self) -> list[Reading]:
        return [r for r in self.readings if r.failed]


class Problem(msgspec.Struct, frozen=True):
    """A stalled or failed projection or relay, as the health check names it."""

    kind: str
    name: str
    problem: str
    """``stalled`` or ``failed``."""
    position: str
    lag_events: int
    lag_seconds: float
    stalled_seconds: float
    error: str | None


class Health(msgspec.Struct, frozen=True):
    """The health check's answer: ``ok`` unless something is stalled or failed."""

    status: str
    """``ok`` or ``unhealthy``."""
    head: str
    stall_seconds: float
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class _Watch:
    marker: tuple[Position | None, ...]
    since: float


class Observer:
    """Reads the head and each projection's and relay's checkpoint, lag and parked list
    (`observe`), and keeps, between readings, how long each has been stalled.

    - ``projections``: the projection definitions to watch (their definition's version);
    - ``relays``: the relays to watch;
    - ``models``: where the projections' checkpoints are (default: `read_models_for`);
    - ``stall_seconds``: how long a projection or relay may be behind without its
      checkpoint moving before it counts as stalled;
    - ``count_limit``: matching events counted exactly per projection;
    - ``concurrency``: projections and relays read at once (their round trips overlap
      on a pooled backend such as PostgreSQL).
    """

    def __init__(
        self,
        store: EventStore,
        *,
        projections: Sequence[ProjectionBase] = (),
        relays: Sequence[Relay] = (),
        models: ReadModelStore | None = None,
        stall_seconds: float = 60.0,
        count_limit: int = DEFAULT_COUNT_LIMIT,
        concurrency: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(stall_seconds, bool) or not stall_seconds > 0:
            raise InvalidInput(f"stall_seconds must be a number > 0, got {stall_seconds!r}")
        if isinstance(count_limit, bool) or not isinstance(count_limit, int) or count_limit < 1:
            raise InvalidInput(f"count_limit must be an int >= 1, got {count_limit!r}")
        names = [p.name for p in projections]
        if len(set(names)) != len(names):
            raise InvalidInput(f"projection names must be unique, got {sorted(names)}")
        self.store = store
        self.projections = tuple(projections)
        self.relays = tuple(relays)
        self._models = models
        self.stall_seconds = float(stall_seconds)
        self.count_limit = count_limit
        self.concurrency = max(1, int(concurrency))
        self._clock = clock
        self._watches: dict[tuple[Kind, str], _Watch] = {}

    @property
    def models(self) -> ReadModelStore:
        if self._models is None:
            self._models = read_models_for(self.store)
        return self._models

    async def observe(self) -> Snapshot:
        """Read everything once, and update how long each has been stalled."""
        started = time.perf_counter()
        if self.projections and isinstance(self.models, SupportsProjectionSummaries):
            # Two reads in all for the projections' rows and the head (they overlap on a
            # pooled backend), however many projections there are.
            slots = [(p.name, p.version) for p in self.projections]
            head, found_rows = await asyncio.gather(self.store.head(), self.models.summaries(slots))
            summaries: Sequence[ProjectionSummary | None] = found_rows
        else:
            head = await self.store.head()
            summaries = [None] * len(self.projections)
        head_time = _HeadTime(self.store, head)
        # Read concurrently (a pooled backend overlaps its round trips), a few at a time.
        gate = asyncio.Semaphore(self.concurrency)

        async def one(read: Awaitable[Reading]) -> Reading:
            async with gate:
                return await read

        found = await asyncio.gather(
            *(
                one(self._projection(p, head, head_time, summary))
                for p, summary in zip(self.projections, summaries, strict=True)
            ),
            *(one(self._relay(relay)) for relay in self.relays),
        )
        readings = [self._track(r) for r in found]
        return Snapshot(
            backend=str(getattr(self.store, "backend", "") or "unknown"),
            head=head,
            readings=tuple(readings),
            duration_seconds=time.perf_counter() - started,
        )

    async def health(self) -> Health:
        """`observe`, summed up: what is stalled or failed."""
        snapshot = await self.observe()
        problems = [
            Problem(
                kind=str(r.kind),
                name=r.name,
                problem="failed" if r.failed else "stalled",
                position=str(r.position),
                lag_events=r.lag_events,
                lag_seconds=r.lag_seconds,
                stalled_seconds=round(r.stalled_seconds, 3),
                error=r.error,
            )
            for r in snapshot.readings
            if r.failed or r.stalled
        ]
        return Health(
            status="unhealthy" if problems else "ok",
            head=str(snapshot.head),
            stall_seconds=self.stall_seconds,
            problems=problems,
        )

    # -- readings ----------------------------------------------------------------------

    def _track(self, reading: Reading) -> Reading:
        key = (reading.kind, reading.name)
        if reading.lag_events <= 0:
            self._watches.pop(key, None)
            return reading
        now = self._clock()
        watch = self._watches.get(key)
        if watch is None or watch.marker != reading.marker:
            self._watches[key] = watch = _Watch(reading.marker, now)
        waited = max(0.0, now - watch.since)
        return _replace(reading, stalled_seconds=waited, stalled=waited >= self.stall_seconds)

    async def _projection(
        self,
        p: ProjectionBase,
        head: Position,
        head_time: _HeadTime,
        summary: ProjectionSummary | None,
    ) -> Reading:
        if summary is None:
            models = self.models
            rows = tuple(await models.checkpoints(p.name, p.version))
            parked_list = await models.parked(p.name, p.version)
            parked = len(parked_list)
            oldest = min((e.parked_us for e in parked_list), default=None)
        else:
            rows, parked, oldest = summary.checkpoints, summary.parked, summary.oldest_parked_us
        found = {c.partition: c.position for c in rows}
        positions = [found.get(k, START) for k in range(p.partitions)]
        failed = [r for r in rows if r.state is PartitionState.FAILED]
        error = next((r.error for r in (*failed, *rows) if r.error), None)
        low = min(positions)
        events, exact, seconds = 0, True, 0.0
        if low < head:
            events, exact, seconds = await self._lag(p, positions, low, head, head_time)
        return Reading(
            kind=Kind.PROJECTION,
            name=p.name,
            position=low,
            lag_events=events,
            lag_exact=exact,
            lag_seconds=seconds,
            parked=parked,
            oldest_parked_seconds=_age(oldest),
            failed=bool(failed),
            error=error,
            marker=tuple(positions),
        )

    async def _lag(
        self,
        p: ProjectionBase,
        positions: list[Position],
        low: Position,
        head: Position,
        head_time: _HeadTime,
    ) -> tuple[int, bool, float]:
        n = len(positions)
        count = 0
        first: int | None = None
        limit = self.count_limit
        reader = self.store.read_all(
            after=low, types=p.event_types, categories=p.categories, limit=limit + 1
        )
        try:
            async for event in reader:
                if event.position > head:
                    limit = -1  # read past the head: what was read is exact
                    break
                if count >= self.count_limit:
                    break
                k = partition_of(event.stream_id, n) if n > 1 else 0
                if event.position > positions[k]:
                    count += 1
                    if first is None:
                        first = event.recorded_us
            else:
                limit = -1
        except DecodeError:
            # An event ahead that does not decode: the slow path reports what it can.
            lag = await measure_lag(self.store, p, positions, count_limit=self.count_limit)
            return lag.events, lag.exact, lag.seconds
        finally:
            await _close(reader)
        exact = limit == -1
        events = count if exact else max(count, head.seq - low.seq)
        seconds = 0.0
        if events and first is not None:
            at_head = await head_time.get()
            if at_head is not None:
                seconds = max(0, at_head - first) / 1e6
        return events, exact, seconds

    async def _relay(self, relay: Relay) -> Reading:
        status = await relay_status(relay, count_limit=self.count_limit)
        events = status.events
        return Reading(
            kind=Kind.RELAY,
            name=relay.destination,
            position=events.position,
            lag_events=status.lag_events,
            lag_exact=events.lag_exact,
            lag_seconds=status.lag_seconds,
            parked=status.parked,
            oldest_parked_seconds=status.oldest_parked_seconds,
            failed=False,
            error=status.last_error,
            marker=(events.position, status.outbox_position),
        )


class _HeadTime:
    """The recorded time of the event at the head, read at most once per reading."""

    def __init__(self, store: EventStore, head: Position) -> None:
        self.store = store
        self.head = head
        self.value: int | None = None
        self.read = False
        self.lock = asyncio.Lock()

    async def get(self) -> int | None:
        async with self.lock:
            return await self._get()

    async def _get(self) -> int | None:
        if not self.read:
            self.read = True
            head = self.head
            reader = self.store.read_all(after=Position(head.tx, head.seq - 1), limit=1)
            try:
                async for event in reader:
                    if event.position == head:
                        self.value = event.recorded_us
            except DecodeError:
                self.value = None
            finally:
                await _close(reader)
        return self.value


def _age(us: int | None) -> float | None:
    return None if us is None else max(0.0, time.time() - us / 1e6)


def _replace(reading: Reading, **changes: Any) -> Reading:
    return dataclasses.replace(reading, **changes)


async def _close(reader: AsyncIterator[Any]) -> None:
    close = getattr(reader, "aclose", None)
    if close is not None:
        await close()
