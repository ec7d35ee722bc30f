"""Stopping the projection daemon within a bound, whatever its workers wait on.

A cancellation can be lost (on Python 3.11 ``asyncio.wait_for``, which psycopg uses to
wait for a connection, swallows one that lands as the connection arrives), so the
daemon is started and stopped many times over SQLite and PostgreSQL, partitioned and
not, with a pool too small for its workers, and each stop must return within the bound
with nothing left running and nothing lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import msgspec
import pytest

import eventfold
from eventfold import ANY
from eventfold._cancel import cancel_and_wait
from eventfold.projections import (
    DaemonOptions,
    DocumentProjection,
    PoisonPolicy,
    ProjectionDaemon,
    ReadModelStore,
)
from eventfold.projections import read_models_for as models_for

STOP_TIMEOUT = 2.0
SLACK = 3.0
"""Generous: the machine may be busy; the bug this guards against hung for minutes."""


async def test_a_task_that_swallows_one_cancellation_still_stops() -> None:
    async def swallows_once() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # a lost cancellation
            await asyncio.sleep(60)
        await asyncio.sleep(60)

    task = asyncio.create_task(swallows_once(), name="swallower")
    await asyncio.sleep(0)
    assert await cancel_and_wait([task], timeout=30) == []
    assert task.cancelled()


async def test_a_task_that_never_stops_is_named_once_the_bound_has_passed() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    started = time.monotonic()
    assert await cancel_and_wait([task], timeout=0.3) == ["stubborn"]
    assert 0.3 <= time.monotonic() - started < 0.3 + SLACK
    release.set()
    task.cancel()
    await asyncio.wait([task])


def counter(partitions: int) -> DocumentProjection[dict[str, int]]:
    p: DocumentProjection[dict[str, int]] = DocumentProjection(
        "counts", document=dict, partitions=partitions
    )

    @p.on("Tick")
    def tick(doc: dict[str, int], event: eventfold.RecordedEvent) -> dict[str, int]:
        return {"n": doc.get("n", 0) + 1}

    return p


@pytest.mark.parametrize("partitions", [1, 4])
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_the_daemon_stops_within_the_bound_every_time(
    backend: str, partitions: int, request: pytest.FixtureRequest
) -> None:
    url: str = request.getfixturevalue(f"{backend}_url")
    if backend == "postgres":
        url += "&pool_min_size=1&pool_max_size=2"  # fewer connections than workers
    projection = counter(partitions)
    options = DaemonOptions(stop_timeout=STOP_TIMEOUT, poll_interval=0.02)
    streams = [f"s-{i}" for i in range(8)]
    async with eventfold.connect(url) as store:
        models = models_for(store)
        appended = 0
        for cycle in range(12):
            for stream in streams[: 1 + cycle % len(streams)]:
                result = await store.append(
                    stream, [eventfold.NewEvent({}, type="Tick")], expected_version=ANY
                )
                appended += 1
            daemon = ProjectionDaemon(store, models, [projection], options=options)
            await daemon.start()
            # Stop at different moments: at once, mid catch-up, and at the tail.
            if cycle % 3 == 1:
                await asyncio.sleep(0.01 * cycle)
            elif cycle % 3 == 2:
                await daemon.catch_up(timeout=60)
            started = time.monotonic()
            stuck = await daemon.stop()
            elapsed = time.monotonic() - started
            assert stuck == [], f"cycle {cycle}: {stuck} did not stop"
            assert elapsed < STOP_TIMEOUT + SLACK, f"cycle {cycle}: stop took {elapsed:.1f} s"
            assert not daemon.running
        # Whatever was interrupted, a last run applies every event exactly once.
        async with ProjectionDaemon(store, models, [projection], options=options) as daemon:
            # Our own last append: on PostgreSQL the head waits for the whole cluster.
            await daemon.catch_up(result.position, timeout=60)
        counts = {doc_id: doc["n"] async for doc_id, doc in _documents(models)}
        assert sum(counts.values()) == appended
        assert set(counts) == set(streams)


async def _documents(models: ReadModelStore) -> AsyncIterator[tuple[str, dict[str, int]]]:
    async for doc_id, data in models.iter_documents("counts", 1):
        yield doc_id, msgspec.json.decode(data)


@pytest.mark.parametrize("partitions", [1, 3])
async def test_an_event_that_does_not_decode_is_parked_by_its_partition(
    store_url: str, partitions: int
) -> None:
    kind = f"undecodable{partitions}{store_url.split(':')[0]}.Placed"
    async with eventfold.connect(store_url) as store:
        positions = {}
        for i, order_id in enumerate(["a", 1, "b", "c", 2, "d"]):
            event = eventfold.NewEvent({"order_id": order_id}, type=kind)
            result = await store.append(f"order-{i}", [event], expected_version=0)
            positions[f"order-{i}"] = result.position
        tick = eventfold.NewEvent({}, type="Tick")
        last = await store.append("other-1", [tick], expected_version=0)

        # The class comes later (a producer wrote ints where it now expects str).
        class Placed(eventfold.Event):
            __event_type__ = kind
            order_id: str

        orders: DocumentProjection[dict[str, str]] = DocumentProjection(
            "orders", document=dict, partitions=partitions, poison=PoisonPolicy(action="park")
        )

        @orders.on(Placed)
        def placed(doc: dict[str, str], event: eventfold.RecordedEvent) -> dict[str, str]:
            return {"id": event.data.order_id}

        models = models_for(store)
        ticks = counter(1)
        async with ProjectionDaemon(store, models, [orders, ticks]) as daemon:
            await daemon.catch_up(last.position, timeout=60)
            parked = await daemon.parked("orders")
            status = await daemon.status("orders")
        assert sorted((p.stream_id, p.position) for p in parked) == [
            ("order-1", positions["order-1"]),
            ("order-4", positions["order-4"]),
        ]
        assert {p.partition for p in parked} <= set(range(partitions))
        docs = {doc_id async for doc_id, _ in models.iter_documents("orders", 1)}
        assert docs == {"order-0", "order-2", "order-3", "order-5"}
        assert (status.lag_events, status.parked) == (0, 2)
        assert [n async for _, n in _documents(models)] == [{"n": 1}]
