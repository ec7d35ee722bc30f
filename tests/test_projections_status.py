"""Lag figures, status, and freshness (wait_for, StaleRead) over every event store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

import eventfold
from eventfold import Position
from eventfold.projections import (
    DaemonOptions,
    DocumentProjection,
    DocumentView,
    MemoryReadModelStore,
    ProjectionDaemon,
    ProjectionState,
    StaleRead,
    measure_lag,
    projection_status,
    wait_for,
)
from eventfold.testing import settle


class LagPlaced(eventfold.Event):
    cents: int


class LagNoise(eventfold.Event):
    pass


def totals(partitions: int = 1) -> DocumentProjection[dict[str, Any]]:
    p = DocumentProjection("totals", document=dict, partitions=partitions)

    @p.on(LagPlaced)
    def placed(doc: dict[str, Any], event: eventfold.RecordedEvent) -> dict[str, Any]:
        return {"cents": doc.get("cents", 0) + event.data.cents}

    return p


FAST = DaemonOptions(poll_interval=0.01, lease_retry=0.02)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[eventfold.EventStore]:
    async with eventfold.connect(store_url) as store:
        yield store


async def set_checkpoints(models: MemoryReadModelStore, *positions: Position) -> None:
    async with models.transaction() as tx:
        for k, position in enumerate(positions):
            row = await tx.get_checkpoint("totals", 1, k)
            await tx.set_checkpoint(
                "totals", 1, k, position, expected=None if row is None else row.position
            )


async def test_lag_in_events_and_seconds(store: eventfold.EventStore) -> None:
    for i, event in enumerate([LagPlaced(cents=1), LagNoise(), LagPlaced(cents=2), LagNoise()]):
        r = await store.append(f"order-{i}", [event], expected_version=0)
        await asyncio.sleep(0.02)
    await settle(store, r.position)
    e = [x async for x in store.read_all()]
    models = MemoryReadModelStore()
    p = totals()

    status = await projection_status(store, models, p)
    assert (status.state, status.active_version, status.position) == (
        ProjectionState.NEW,
        None,
        eventfold.START,
    )
    assert (status.lag_events, status.lag_exact, status.head) == (2, True, e[3].position)
    # Nothing applied yet: behind since the first pending event.
    assert status.lag_seconds == (e[3].recorded_us - e[0].recorded_us) / 1e6 > 0

    await set_checkpoints(models, e[0].position)
    status = await projection_status(store, models, p)
    assert (status.lag_events, status.lag_seconds) == (
        1,
        (e[3].recorded_us - e[0].recorded_us) / 1e6,
    )
    await set_checkpoints(models, e[1].position)  # a checkpoint on a skipped event
    lag = await measure_lag(store, p, [e[1].position])
    assert (lag.events, lag.seconds) == (1, (e[3].recorded_us - e[1].recorded_us) / 1e6)

    await set_checkpoints(models, e[3].position)
    status = await projection_status(store, models, p)
    assert (status.lag_events, status.lag_exact, status.lag_seconds) == (0, True, 0.0)

    rough = await measure_lag(store, p, [eventfold.START], count_limit=1)
    assert not rough.exact
    assert rough.events >= 2  # an upper bound from the head's sequence number


async def test_partitioned_lag_counts_each_partition_from_its_own_checkpoint(
    store: eventfold.EventStore,
) -> None:
    for s in range(8):
        r = await store.append(f"order-{s}", [LagPlaced(cents=s)], expected_version=0)
    await settle(store, r.position)
    p = totals(partitions=2)
    head = await store.head()
    lag = await measure_lag(store, p, [head, eventfold.START])
    ones = [e async for e in store.read_all() if eventfold.projections.partition_of(e.stream_id, 2)]
    assert lag.events == len(ones) > 0
    assert (await measure_lag(store, p, [head, head])).events == 0


async def test_wait_for_without_a_running_daemon_is_a_stale_read(
    store: eventfold.EventStore,
) -> None:
    r = await store.append("order-1", [LagPlaced(cents=1)], expected_version=0)
    models = MemoryReadModelStore()
    with pytest.raises(StaleRead) as info:
        await wait_for(models, totals(), r.position, timeout=0.1)
    assert (info.value.name, info.value.wanted, info.value.reached) == (
        "totals",
        r.position,
        eventfold.START,
    )
    assert "check that a projection daemon runs it" in str(info.value)
    with pytest.raises(eventfold.InvalidInput, match="position, a max_lag"):
        await wait_for(models, totals())
    with pytest.raises(eventfold.InvalidInput, match="store"):
        await wait_for(models, totals(), max_lag=1)


async def test_read_your_writes_through_the_daemon(store: eventfold.EventStore) -> None:
    p = totals()
    models = MemoryReadModelStore()
    async with ProjectionDaemon(store, models, [p], options=FAST) as daemon:
        view = DocumentView(models, p, store=store, wake=daemon.committed.subscribe())
        for i in range(1, 6):
            r = await store.append("order-1", [LagPlaced(cents=1)], expected_version=i - 1)
            assert await view.get("order-1", after=r.position, timeout=10) == {"cents": i}
            assert await daemon.wait_for("totals", str(r.position), timeout=10) >= r.position
        noise = await store.append("other-1", [LagNoise()], expected_version=0)
        # Unrelated events still move the checkpoint, so a freshness wait returns.
        assert await daemon.wait_for("totals", noise.position, timeout=10) >= noise.position


async def test_max_lag_bounds_a_read(store: eventfold.EventStore) -> None:
    p = totals()
    models = MemoryReadModelStore()
    async with ProjectionDaemon(store, models, [p], options=FAST) as daemon:
        first = await store.append("order-1", [LagPlaced(cents=1)], expected_version=0)
        await daemon.catch_up(first.position, timeout=10)
    for i in range(3):
        r = await store.append("order-2", [LagPlaced(cents=1)], expected_version=i)
    await settle(store, r.position)
    view = DocumentView(models, p, store=store)
    assert await view.get("order-1", max_lag=3, timeout=1) == {"cents": 1}
    with pytest.raises(StaleRead) as info:
        await view.get("order-1", max_lag=1, timeout=0.1)
    assert (info.value.lag_events, info.value.max_lag) == (3, 1)
    assert "a lag of at most 1 events (it is 3)" in str(info.value)
    status = await projection_status(store, models, p)
    assert (status.state, status.lag_events) == (ProjectionState.ACTIVE, 3)
