"""Parked events: the dead-letter list of a projection, listed and replayed.

A replay applies each parked event on its own, in log order, in a transaction that also
removes it from the list; one that fails again stays parked with the new error. An event
parked because it did not decode is read again by its position (once an upcaster or a
fixed class reads it, it replays like any other). A
replayed event lands after events that came later in the log (its checkpoint has long
moved on), which is the price of parking; projections whose results depend on order
should use the ``stop`` policy instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field

import msgspec

from .._events import RecordedEvent
from .._position import Position
from ..errors import DecodeError, HandlerFailed, InvalidInput
from ..store import event_at
from ..store.ports import ParkedEvent, ReadModelStore, now_us
from ..store.protocol import EventStore
from ._definition import ProjectionBase

__all__ = ["ReplayResult", "replay_parked"]


@dataclass(frozen=True)
class ReplayResult:
    """What a replay of parked events did."""

    replayed: list[Position] = field(default_factory=list)
    failed: list[ParkedEvent] = field(default_factory=list)
    """Events still parked, with their new error."""


async def replay_parked(
    store: EventStore,
    models: ReadModelStore,
    projection: ProjectionBase,
    *,
    positions: Collection[Position] | None = None,
    guard: Callable[[int], AbstractAsyncContextManager[object]] | None = None,
) -> ReplayResult:
    """Apply the definition version's parked events again (all, or those at ``positions``).

    ``guard(partition)`` is held around each replay so it does not interleave with the
    batch of a worker running in this process (the daemon passes its partition locks).
    """
    result = ReplayResult()
    name, version = projection.name, projection.version
    listed = await models.parked(name, version)
    if positions is not None:
        missing = sorted(set(positions) - {p.position for p in listed})
        if missing:
            there = ", ".join(str(p.position) for p in listed) or "none"
            raise InvalidInput(
                f"projection {name!r} v{version} has no parked event at position "
                f"{', '.join(map(str, missing))} (parked: {there}); pass the position of a "
                "parked event, or none to replay them all"
            )
    for parked in listed:
        if positions is not None and parked.position not in positions:
            continue
        async with guard(parked.partition) if guard else nullcontext():
            try:
                found = await _parked_event(store, parked)
            except DecodeError as exc:
                found, error = [], f"it still does not decode: {exc}"
            else:
                error = (
                    f"event {parked.event_id or 'at ' + str(parked.position)} is no longer in "
                    f"stream {parked.stream_id!r}; remove it from the list by dropping the "
                    "version, or leave it"
                )
            if found:
                try:
                    async with models.transaction() as tx:
                        await projection.apply(found, tx)
                        await tx.unpark(name, version, parked.position)
                except HandlerFailed as exc:
                    error = str(exc)
                else:
                    result.replayed.append(parked.position)
                    continue
            again = msgspec.structs.replace(
                parked, error=error, attempts=parked.attempts + 1, parked_us=now_us()
            )
            async with models.transaction() as tx:
                await tx.park(again)
            result.failed.append(again)
    return result


async def _parked_event(store: EventStore, parked: ParkedEvent) -> list[RecordedEvent]:
    if parked.event_id:
        return await store.find_events(parked.stream_id, [uuid.UUID(parked.event_id)])
    # Parked because it did not decode, so its id was never read: it is where it was.
    found = await event_at(store, parked.position)
    return [] if found is None else [found]
