"""Lag, status and freshness: how far behind the head a projection is, and waiting for it.

Lag is measured against the event store, so any process can report it:

- **events**: matching events after the checkpoint up to the head, counted exactly by
  reading them (each partition against its own checkpoint), up to ``count_limit``
  events read; beyond that it is the upper bound ``head.seq - checkpoint.seq`` and
  ``lag_exact`` is False. Exact where it matters (near the head, for SLOs and
  ``max_lag``), cheap where it does not (a rebuild millions of events behind).
- **seconds**: the recorded time of the event at the head minus that of the event at
  the checkpoint (both stamped by the store, so no clock skew enters), 0 when nothing
  matching is pending.

`projection_statuses` gives many projections' statuses with their stored rows read at
once (one query on a read-model store with `SupportsProjectionSummaries`) and the head
read once; `projection_status` reads one projection's rows by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Sequence
from dataclasses import dataclass

from .._events import RecordedEvent
from .._position import START, Position
from ..errors import DecodeError, InvalidInput, StaleRead
from ..store import event_at
from ..store.ports import (
    Checkpoint,
    PartitionState,
    ProjectionSummary,
    ReadModelStore,
    SupportsProjectionSummaries,
    VersionState,
)
from ..store.protocol import EventStore
from ._definition import ProjectionBase
from ._subscription import WakeUp, aclose, partition_of

__all__ = [
    "DEFAULT_COUNT_LIMIT",
    "Lag",
    "ProjectionState",
    "ProjectionStatus",
    "checkpoint_positions",
    "measure_lag",
    "projection_status",
    "projection_statuses",
    "summary_of",
    "wait_for",
    "wait_for_version",
]

DEFAULT_COUNT_LIMIT = 10_000
"""Events a status reads at most to count a lag exactly (beyond it the lag is an upper
bound, ``lag_exact`` False); the metrics scrape uses a smaller limit of its own."""


class ProjectionState(enum.StrEnum):
    """A projection version's state as operators see it."""

    NEW = "new"
    """Nothing written yet."""
    BUILDING = "building"
    """Catching up beside the active version (or before the first swap)."""
    ACTIVE = "active"
    """The version readers read."""
    FAILED = "failed"
    """Stopped on a poison event; ``last_error`` says which."""
    RETIRED = "retired"
    """Replaced by a newer version; dropped after the grace period."""
    SUPERSEDED = "superseded"
    """A newer version is active; this one is not run."""
    INLINE = "inline"
    """The version readers read, written by the appends themselves (`attach_inline`)."""


@dataclass(frozen=True, slots=True)
class Lag:
    """How far behind the head a projection version is."""

    events: int
    exact: bool
    seconds: float
    head: Position


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """One projection version: where it is, how far behind, and what went wrong."""

    name: str
    version: int
    active_version: int | None
    """The version readers read (may be another one)."""
    state: ProjectionState
    position: Position
    """The lowest checkpoint over its partitions."""
    head: Position
    lag_events: int
    lag_exact: bool
    lag_seconds: float
    last_error: str | None
    parked: int
    """Events in the dead-letter list."""
    partitions: tuple[Checkpoint, ...]


async def checkpoint_positions(
    models: ReadModelStore, name: str, version: int, partitions: int
) -> list[Position]:
    """Each partition's checkpoint (`START` for one that has written none)."""
    found = {c.partition: c.position for c in await models.checkpoints(name, version)}
    return [found.get(k, START) for k in range(partitions)]


async def _decodable_at(store: EventStore, position: Position) -> RecordedEvent | None:
    # Lag in seconds is a hint: an event that does not decode just leaves it unknown.
    try:
        return await event_at(store, position)
    except DecodeError:
        return None


async def measure_lag(
    store: EventStore,
    projection: ProjectionBase,
    positions: Sequence[Position],
    *,
    count_limit: int = DEFAULT_COUNT_LIMIT,
    head: Position | None = None,
) -> Lag:
    """The lag of a version whose partitions stand at ``positions`` (behind ``head``, by
    default the store's head, read now)."""
    if head is None:
        head = await store.head()
    low = min(positions)
    if low >= head:
        return Lag(0, True, 0.0, head)
    n = len(positions)
    count = scanned = 0
    exact = True
    first: RecordedEvent | None = None
    reader = store.read_all(
        after=low, types=projection.event_types, categories=projection.categories
    )
    try:
        async for event in reader:
            if event.position > head:
                break
            scanned += 1
            if scanned > count_limit:
                exact = False
                break
            k = partition_of(event.stream_id, n) if n > 1 else 0
            if event.position > positions[k]:
                count += 1
                first = first or event
    except DecodeError:
        # A stored event that does not decode (a poison event ahead of a checkpoint) must
        # not hide the status: the count becomes the upper bound.
        exact = False
    finally:
        await aclose(reader)
    if exact and count == 0:
        return Lag(0, True, 0.0, head)
    events = count if exact else max(count, head.seq - low.seq)
    at_head = await _decodable_at(store, head)
    base = await _decodable_at(store, low) or first
    if base is None:
        reader = store.read_all(limit=1)
        with contextlib.suppress(DecodeError):
            base = next(iter([e async for e in reader]), None)
    seconds = 0.0
    if at_head is not None and base is not None:
        seconds = max(0, at_head.recorded_us - base.recorded_us) / 1e6
    return Lag(events, exact, seconds, head)


async def summary_of(models: ReadModelStore, name: str, version: int) -> ProjectionSummary:
    """One version's `ProjectionSummary` through the store's single reads (what
    `SupportsProjectionSummaries.summaries` reads for many at once)."""
    parked = await models.parked(name, version)
    return ProjectionSummary(
        name=name,
        version=version,
        checkpoints=tuple(await models.checkpoints(name, version)),
        parked=len(parked),
        oldest_parked_us=min((p.parked_us for p in parked), default=None),
        active_version=await models.active_version(name),
        record=next((r for r in await models.versions(name) if r.version == version), None),
    )


async def projection_status(
    store: EventStore,
    models: ReadModelStore,
    projection: ProjectionBase,
    *,
    version: int | None = None,
    count_limit: int = DEFAULT_COUNT_LIMIT,
) -> ProjectionStatus:
    """The status of one version of ``projection`` (default: the definition's version)."""
    version = projection.version if version is None else version
    summary = await summary_of(models, projection.name, version)
    return await _status(store, projection, summary, count_limit=count_limit)


async def projection_statuses(
    store: EventStore,
    models: ReadModelStore,
    projections: Sequence[ProjectionBase],
    *,
    count_limit: int = DEFAULT_COUNT_LIMIT,
) -> list[ProjectionStatus]:
    """The status of each projection's definition version, in the order given: the same
    as `projection_status` of each, with their rows read at once (`summaries`, when
    ``models`` offers `SupportsProjectionSummaries`) and the head read once."""
    slots = [(p.name, p.version) for p in projections]
    if not slots:
        return []
    if isinstance(models, SupportsProjectionSummaries):
        summaries = await models.summaries(slots)
    else:
        summaries = [await summary_of(models, name, version) for name, version in slots]
    head = await store.head()
    return [
        await _status(store, p, summary, count_limit=count_limit, head=head)
        for p, summary in zip(projections, summaries, strict=True)
    ]


async def _status(
    store: EventStore,
    projection: ProjectionBase,
    summary: ProjectionSummary,
    *,
    count_limit: int,
    head: Position | None = None,
) -> ProjectionStatus:
    name, version = summary.name, summary.version
    active = summary.active_version
    record = summary.record
    rows = summary.checkpoints
    found = {c.partition: c.position for c in rows}
    positions = [found.get(k, START) for k in range(projection.partitions)]
    failed = [r for r in rows if r.state is PartitionState.FAILED]
    newer_active = active is not None and active > version
    if failed:
        state = ProjectionState.FAILED
    elif record is not None and record.state is VersionState.ACTIVE:
        inline = any(r.state is PartitionState.INLINE for r in rows)
        state = ProjectionState.INLINE if inline else ProjectionState.ACTIVE
    elif record is not None and record.state is VersionState.RETIRED:
        state = ProjectionState.RETIRED
    elif newer_active:
        state = ProjectionState.SUPERSEDED
    elif record is None:
        state = ProjectionState.NEW
    else:
        state = ProjectionState.BUILDING
    lag = await measure_lag(store, projection, positions, count_limit=count_limit, head=head)
    return ProjectionStatus(
        name=name,
        version=version,
        active_version=active,
        state=state,
        position=min(positions),
        head=lag.head,
        lag_events=lag.events,
        lag_exact=lag.exact,
        lag_seconds=lag.seconds,
        last_error=next((r.error for r in (*failed, *rows) if r.error), None),
        parked=summary.parked,
        partitions=rows,
    )


async def wait_for(
    models: ReadModelStore,
    projection: ProjectionBase,
    position: Position | str | None = None,
    *,
    store: EventStore | None = None,
    max_lag: int | None = None,
    timeout: float = 5.0,  # noqa: ASYNC109 - StaleRead reports it
    version: int | None = None,
    wake: WakeUp | None = None,
    poll_interval: float = 0.05,
) -> Position:
    """Wait until the version readers read has applied everything up to ``position``
    (read-your-writes: pass an append's ``result.position``) and, with ``max_lag``, is
    at most that many matching events behind the head (which needs ``store``).

    ``version`` waits for that version instead of the active one. Returns the position
    reached; raises `StaleRead` after ``timeout`` seconds.
    """
    _, reached = await wait_for_version(
        models,
        projection,
        position,
        store=store,
        max_lag=max_lag,
        timeout=timeout,
        version=version,
        wake=wake,
        poll_interval=poll_interval,
    )
    return reached


async def wait_for_version(
    models: ReadModelStore,
    projection: ProjectionBase,
    position: Position | str | None = None,
    *,
    store: EventStore | None = None,
    max_lag: int | None = None,
    timeout: float = 5.0,  # noqa: ASYNC109 - StaleRead reports it
    version: int | None = None,
    wake: WakeUp | None = None,
    poll_interval: float = 0.05,
) -> tuple[int, Position]:
    """`wait_for`, returning the version that is fresh enough too (readers then read
    that version, even if the pointer has swapped since)."""
    if position is None and max_lag is None:
        raise InvalidInput("wait_for needs a position, a max_lag, or both")
    if max_lag is not None and (store is None or max_lag < 0):
        raise InvalidInput("max_lag needs the event store (store=...) and must be >= 0")
    target = None if position is None else Position.parse(position)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        current = version if version is not None else await models.active_version(projection.name)
        reached, lag = START, None
        if current is not None:
            positions = await checkpoint_positions(
                models, projection.name, current, projection.partitions
            )
            reached = min(positions)
            done = target is None or reached >= target
            if done and max_lag is not None and store is not None:
                lag = await measure_lag(
                    store, projection, positions, count_limit=max(max_lag + 1, 1000)
                )
                done = lag.events <= max_lag
            if done:
                return current, reached
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise StaleRead(
                projection.name,
                current,
                wanted=target,
                reached=reached,
                lag_events=None if lag is None else lag.events,
                max_lag=max_lag,
                timeout=timeout,
            )
        delay = min(poll_interval, remaining)
        if wake is not None:
            await wake.wait(delay)
        else:
            await asyncio.sleep(delay)
