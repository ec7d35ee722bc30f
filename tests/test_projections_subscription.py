"""Subscriptions over every backend: catch-up in batches, the live tail, filters, partitions."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator

import pytest

import eventfold
from eventfold import Position
from eventfold.projections import Batch, Signal, Subscription, partition_of
from eventfold.testing import settle


class SubPlaced(eventfold.Event):
    n: int


class SubNoise(eventfold.Event):
    n: int


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[eventfold.EventStore]:
    async with eventfold.connect(store_url) as store:
        yield store


async def take(subscription: Subscription, count: int, within: float = 10.0) -> list[Batch]:
    """Batches until ``count`` events have come (or the subscription ends)."""
    batches: list[Batch] = []
    seen = 0

    async def run() -> None:
        nonlocal seen
        async for batch in subscription:
            if not batch.events:
                continue  # the tail reached, or only other events passed
            batches.append(batch)
            seen += len(batch.events)
            if seen >= count:
                return

    await asyncio.wait_for(run(), within)
    return batches


async def test_catch_up_in_batches_then_follow_the_tail(store: eventfold.EventStore) -> None:
    for i in range(7):
        r = await store.append(f"order-{i}", [SubPlaced(n=i)], expected_version=eventfold.ANY)
    await settle(store, r.position)
    sub = Subscription(store, batch_size=3, poll_interval=0.01)
    batches = await take(sub, 7)
    assert [len(b.events) for b in batches] == [3, 3, 1]
    assert [b.tail for b in batches] == [False, False, True]
    assert [e.data.n for b in batches for e in b.events] == list(range(7))
    assert sub.position == batches[-1].through == await store.head()

    async def later() -> None:
        await asyncio.sleep(0.05)
        await store.append("order-9", [SubPlaced(n=9)], expected_version=eventfold.ANY)

    appender = asyncio.create_task(later())
    (tail,) = await take(sub, 1)
    await appender
    assert [e.data.n for e in tail.events] == [9]
    assert tail.through == await store.head()


async def test_resuming_after_a_checkpoint_skips_what_was_done(
    store: eventfold.EventStore,
) -> None:
    results = [
        await store.append(f"order-{i}", [SubPlaced(n=i)], expected_version=eventfold.ANY)
        for i in range(5)
    ]
    await settle(store, results[-1].position)
    sub = Subscription(store, after=str(results[2].position), follow=False)
    batches = [b async for b in sub]
    assert [e.data.n for b in batches for e in b.events] == [3, 4]


async def test_filters_skip_events_but_through_reaches_the_head(
    store: eventfold.EventStore,
) -> None:
    await store.append("order-1", [SubPlaced(n=1)], expected_version=eventfold.ANY)
    await store.append("order-1", [SubNoise(n=2)], expected_version=eventfold.ANY)
    await store.append("cart-1", [SubPlaced(n=3)], expected_version=eventfold.ANY)
    last = await store.append("order-2", [SubNoise(n=4)], expected_version=eventfold.ANY)
    await settle(store, last.position)
    sub = Subscription(store, types=[SubPlaced], categories=["order"], follow=False)
    batches = [b async for b in sub]
    assert [e.data.n for b in batches for e in b.events] == [1]
    assert batches[-1].through == await store.head()  # past the unrelated tail


async def test_partitions_cover_every_event_once_in_stream_order(
    store: eventfold.EventStore,
) -> None:
    for round_ in range(3):
        for s in range(12):
            last = await store.append(
                f"cart-{s}", [SubPlaced(n=round_)], expected_version=eventfold.ANY
            )
    await settle(store, last.position)
    seen: list[tuple[str, int]] = []
    for k in range(4):
        sub = Subscription(store, partition=(k, 4), batch_size=5, follow=False)
        mine = [e async for b in sub for e in b.events]
        assert all(partition_of(e.stream_id, 4) == k for e in mine)
        for stream in {e.stream_id for e in mine}:
            assert [e.version for e in mine if e.stream_id == stream] == [1, 2, 3]
        seen += [(e.stream_id, e.version) for e in mine]
    assert sorted(seen) == sorted((f"cart-{s}", v) for s in range(12) for v in (1, 2, 3))


def test_partition_of_is_crc32_and_stable() -> None:
    # A pinned value: every process, machine and Python version must agree on it.
    assert zlib.crc32(b"order-1") == 3769860079
    assert partition_of("order-1", 8) == 7
    assert partition_of("order-2", 8) == zlib.crc32(b"order-2") % 8
    assert {partition_of(f"s-{i}", 4) for i in range(100)} == {0, 1, 2, 3}


async def test_a_signal_wakes_the_tail_before_the_poll_interval(
    store: eventfold.EventStore,
) -> None:
    signal = Signal()
    sub = Subscription(store, poll_interval=30.0, wake=signal.subscribe())

    async def later() -> None:
        await asyncio.sleep(0.1)
        r = await store.append("order-1", [SubPlaced(n=1)], expected_version=eventfold.ANY)
        await settle(store, r.position)  # as a backend would: notify once it is readable
        signal.notify()

    appender = asyncio.create_task(later())
    (batch,) = await take(sub, 1, within=5.0)
    await appender
    assert [e.data.n for e in batch.events] == [1]


async def test_a_ceiling_holds_the_subscription_back(store: eventfold.EventStore) -> None:
    results = [
        await store.append(f"order-{i}", [SubPlaced(n=i)], expected_version=eventfold.ANY)
        for i in range(4)
    ]
    limit = results[1].position
    await settle(store, results[-1].position)

    async def ceiling() -> Position:
        return limit

    sub = Subscription(store, ceiling=ceiling, follow=False)
    batches = [b async for b in sub]
    assert [e.data.n for b in batches for e in b.events] == [0, 1]
    assert sub.position == limit


def test_bad_arguments_are_refused() -> None:
    store = eventfold.connect("memory://")
    with pytest.raises(eventfold.InvalidInput, match="batch_size"):
        Subscription(store, batch_size=0)
    with pytest.raises(eventfold.InvalidInput, match="partition"):
        Subscription(store, partition=(4, 4))
    with pytest.raises(eventfold.InvalidInput, match="poll_interval"):
        Subscription(store, poll_interval=0)
