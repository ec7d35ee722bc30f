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
    PartitionState,
    PoisonPolicy,
    ProjectionDaemon,
    ProjectionState,
    StaleRead,
    SupportsProjectionSummaries,
    VersionState,
    measure_lag,
    projection_status,
    projection_statuses,
    read_models_for,
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


def picky(name: str, action: str, partitions: int = 1) -> DocumentProjection[dict[str, Any]]:
    """A projection that cannot apply a placement of 2 cents (``action``: stop or park)."""
    policy = PoisonPolicy(retries=0, action=action)  # type: ignore[arg-type]
    p = DocumentProjection(name, document=dict, poison=policy, partitions=partitions)

    @p.on(LagPlaced)
    def placed(doc: dict[str, Any], event: eventfold.RecordedEvent) -> dict[str, Any]:
        if event.data.cents == 2:
            raise ValueError("two cents refused")
        return {"cents": doc.get("cents", 0) + event.data.cents}

    return p


async def test_statuses_read_at_once_equal_each_status(store: eventfold.EventStore) -> None:
    for i in range(3):
        r = await store.append(
            f"order-{i}", [LagPlaced(cents=i + 1), LagNoise()], expected_version=0
        )
    await settle(store, r.position)
    models = read_models_for(store)
    assert isinstance(models, SupportsProjectionSummaries)
    ok, parking, failing = totals(), picky("s_park", "park"), picky("s_fail", "stop")

    async def settled() -> bool:
        rows = await models.checkpoints("s_fail", 1)
        return bool(rows) and rows[0].state is PartitionState.FAILED

    async with ProjectionDaemon(store, models, [ok, parking, failing], options=FAST) as daemon:
        await daemon.wait_for("totals", r.position, timeout=10)
        await daemon.wait_for("s_park", r.position, timeout=10)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not await settled():
            assert loop.time() < deadline, "s_fail did not stop"
            await asyncio.sleep(0.02)
    halves = picky("s_parts", "stop", partitions=2)
    log = [e.position async for e in store.read_all()]
    async with models.transaction() as tx:
        await tx.set_checkpoint("s_parts", 1, 0, log[-1], expected=None)
        await tx.set_checkpoint("s_parts", 1, 1, log[2], expected=None)
        await tx.set_version("s_old", 2, VersionState.BUILDING, expected=None)
        await tx.activate("s_old", 2)
    r = await store.append("order-9", [LagPlaced(cents=9)], expected_version=0)
    await settle(store, r.position)
    watched = [ok, parking, failing, halves, picky("s_new", "stop"), picky("s_old", "stop")]

    at_once = await projection_statuses(store, models, watched)
    each = [await projection_status(store, models, p) for p in watched]
    assert at_once == each
    assert await projection_statuses(store, models, []) == []
    found = {s.name: s for s in at_once}
    assert [found[n].state for n in ("totals", "s_fail", "s_new", "s_old")] == [
        ProjectionState.ACTIVE,
        ProjectionState.FAILED,
        ProjectionState.NEW,
        ProjectionState.SUPERSEDED,
    ]
    assert (found["s_park"].parked, found["s_park"].lag_events) == (1, 1)
    assert found["s_fail"].last_error is not None
    assert "two cents refused" in found["s_fail"].last_error
    assert found["s_parts"].position == log[2]
    assert [len(s.partitions) for s in at_once] == [1, 1, 1, 2, 0, 0]
    # A read-model store without the port gives the same, one version at a time.
    assert await projection_statuses(store, SingleReads(models), watched) == each


class SingleReads:
    """A read-model store's single reads only (no `SupportsProjectionSummaries`)."""

    def __init__(self, models: Any) -> None:
        self._models = models
        self.backend = models.backend

    def __getattr__(self, name: str) -> Any:
        if name == "summaries":
            raise AttributeError(name)
        return getattr(self._models, name)
