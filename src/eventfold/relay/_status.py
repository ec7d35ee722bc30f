"""The relay's status (through the projections' status API) and its parked messages."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec

from .._position import Position
from ..errors import InvalidInput, SinkRejected
from ..projections import ParkedEvent, ProjectionStatus, projection_status
from ..store import SupportsOutbox
from ._relay import EVENTS, OUTBOX, Relay, _acked
from ._sink import Message

__all__ = ["RelayStatus", "ReplayResult", "relay_parked", "relay_status", "replay_parked"]


@dataclass(frozen=True, slots=True)
class RelayStatus:
    """Where a relay is: lag behind the log and the outbox, parked messages, errors."""

    destination: str
    events: ProjectionStatus
    """The events' checkpoint, lag (events and seconds) and parked count, as the
    projections report theirs."""
    outbox_position: Position | None
    """The outbox checkpoint (None when the store keeps no outbox)."""
    outbox_head: Position | None
    outbox_lag: int | None
    """Outbox messages of this destination after its checkpoint (None: no outbox)."""
    parked: int
    parked_streams: int
    oldest_parked_seconds: float | None
    last_error: str | None

    @property
    def lag_events(self) -> int:
        return self.events.lag_events + (self.outbox_lag or 0)

    @property
    def lag_seconds(self) -> float:
        return self.events.lag_seconds


async def relay_status(relay: Relay, *, count_limit: int = 10_000) -> RelayStatus:
    """The stored status of ``relay`` (any process can ask; an error this process's relay
    is retrying shows as ``last_error`` too)."""
    events = await projection_status(
        relay.store, relay.models, relay.definition, count_limit=count_limit
    )
    parked = await relay_parked(relay)
    outbox_position = outbox_head = None
    outbox_lag = None
    store = relay.store
    if relay.has_outbox and isinstance(store, SupportsOutbox):
        outbox_position = await relay.checkpoint(OUTBOX)
        outbox_head = await store.outbox_head(relay.destination)
        outbox_lag = 0
        if outbox_head > outbox_position:
            after = outbox_position
            while outbox_lag < count_limit:
                page = await store.read_outbox(after, 1000, destination=relay.destination)
                outbox_lag += len(page)
                if len(page) < 1000:
                    break
                after = page[-1].position
    oldest = min((p.parked_us for p in parked), default=None)
    return RelayStatus(
        destination=relay.destination,
        events=events,
        outbox_position=outbox_position,
        outbox_head=outbox_head,
        outbox_lag=outbox_lag,
        parked=len(parked),
        parked_streams=len({(p.partition, p.stream_id) for p in parked}),
        oldest_parked_seconds=None if oldest is None else max(0.0, time.time() - oldest / 1e6),
        last_error=relay.error or events.last_error,
    )


async def relay_parked(relay: Relay) -> list[ParkedEvent]:
    """The parked messages, events first, each stream's in order (``stream_id`` holds the
    outbox key for outbox messages, ``partition`` says which: `EVENTS` or `OUTBOX`)."""
    rows = await relay.models.parked(relay.name, 1)
    rows += await relay.models.parked(relay.outbox_name, 1)
    return sorted(rows, key=lambda p: (p.partition, p.position))


@dataclass(frozen=True)
class ReplayResult:
    """What a replay of parked messages did."""

    replayed: list[ParkedEvent] = field(default_factory=list)
    failed: list[ParkedEvent] = field(default_factory=list)
    """The first message of each stream that failed again (it and the rest of its
    stream stay parked)."""


async def _message_for(relay: Relay, parked: ParkedEvent) -> Message | None:
    if parked.partition == EVENTS:
        if not parked.event_id:
            return None
        found = await relay.store.find_events(parked.stream_id, [uuid.UUID(parked.event_id)])
        return relay.event_message(found[0]) if found else None
    store = relay.store
    if not isinstance(store, SupportsOutbox):
        return None
    at = parked.position
    page = await store.read_outbox(Position(at.tx, at.seq - 1), 1, destination=relay.destination)
    return relay.outbox_message(page[0]) if page and page[0].position == at else None


@contextlib.asynccontextmanager
async def _guard(relay: Relay, partition: int, key: str) -> AsyncIterator[list[bool]]:
    """Hold the running pump's parking while a stream is replayed; if the replay emptied
    the stream's list, the pump sends its next messages again instead of parking them."""
    pump = relay._pump(partition)
    cleared = [False]
    if pump is None:
        yield cleared
        return
    async with pump.park_lock:
        yield cleared
        if cleared[0]:
            pump.parked_keys.discard(key)
            pump._local_parks.pop(key, None)


async def replay_parked(
    relay: Relay,
    *,
    stream_id: str | None = None,
    timeout: float = 30.0,  # noqa: ASYNC109
) -> ReplayResult:
    """Send parked messages again, each stream's in order (all streams, or one), and
    remove each from the list once the bus acknowledged it. A stream whose message fails
    again stays parked from that message on. Messages the relay parks meanwhile behind a
    replayed stream are replayed too, so the stream's order holds."""
    rows = await relay_parked(relay)
    keys = sorted({(p.partition, p.stream_id) for p in rows if stream_id in (None, p.stream_id)})
    if stream_id is not None and not keys:
        there = ", ".join(sorted({p.stream_id for p in rows})) or "none"
        raise InvalidInput(
            f"relay {relay.destination!r} has no parked message of stream {stream_id!r} "
            f"(parked streams: {there})"
        )
    result = ReplayResult()
    opened = relay._pump(EVENTS) is None
    if opened:
        await relay.sink.open()
    try:
        for partition, key in keys:
            async with _guard(relay, partition, key) as cleared:
                cleared[0] = await _replay_stream(relay, partition, key, result, timeout)
    finally:
        if opened:
            await relay.sink.close()
    return result


async def _replay_stream(
    relay: Relay,
    partition: int,
    key: str,
    result: ReplayResult,
    timeout: float,  # noqa: ASYNC109
) -> bool:
    """Replay one stream's parked messages; True once none is left."""
    while True:
        rows = [
            p
            for p in await relay.models.parked(relay.parked_name(partition), 1)
            if p.stream_id == key
        ]
        if not rows:
            return True
        for parked in sorted(rows, key=lambda p: p.position):
            message = await _message_for(relay, parked)
            error = None
            if message is None:
                error = (
                    f"message {parked.event_id or parked.position} is no longer in the store; "
                    "it cannot be sent again"
                )
            else:
                try:
                    await _acked(await relay.sink.send(message), timeout)
                except SinkRejected as exc:
                    error = exc.reason
            if error is not None:
                again = msgspec.structs.replace(
                    parked,
                    error=error,
                    attempts=parked.attempts + 1,
                    parked_us=parked.parked_us,
                )
                async with relay.models.transaction() as tx:
                    await tx.park(again)
                result.failed.append(again)
                return False
            async with relay.models.transaction() as tx:
                await tx.unpark(relay.parked_name(partition), 1, parked.position)
            result.replayed.append(parked)
