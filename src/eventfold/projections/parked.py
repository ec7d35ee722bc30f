"""Parked events: the dead-letter list of a projection, listed and replayed.

A replay applies each parked event on its own, in log order, in a transaction that also
removes it from the list; one that fails again stays parked with the new error. A
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

from ..position import Position
from ..store.protocol import EventStore
from .definition import ProjectionBase
from .errors import HandlerFailed
from .store import ParkedEvent, ReadModelStore, now_us

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
    for parked in await models.parked(name, version):
        if positions is not None and parked.position not in positions:
            continue
        async with guard(parked.partition) if guard else nullcontext():
            found = await store.find_events(parked.stream_id, [uuid.UUID(parked.event_id)])
            if not found:
                error = (
                    f"event {parked.event_id} is no longer in stream {parked.stream_id!r}; "
                    "remove it from the list by dropping the version, or leave it"
                )
            else:
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
