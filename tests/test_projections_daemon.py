"""The projection daemon over every backend, its read models beside its events.

Exactly-once effects under duplicate delivery and crashes, poison events (stop and park),
parked replay, partitions, dependencies, and ownership through leases.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

import eventfold
from eventfold.projections import (
    CheckpointConflict,
    DaemonOptions,
    DocumentProjection,
    DocumentView,
    MemoryLeases,
    PoisonPolicy,
    Projection,
    ProjectionDaemon,
    ProjectionState,
    ProjectionStopped,
    ProjectionTransaction,
    ReadModelStore,
    Subscription,
    WorkerState,
    live,
    partition_of,
    read_models_for,
    replay,
)
from eventfold.testing import settle


class ShopPlaced(eventfold.Event):
    cents: int


class ShopPaid(eventfold.Event):
    pass


class ShopNoise(eventfold.Event):
    pass


class Summary(msgspec.Struct):
    total: int = 0
    paid: bool = False
    placed: int = 0


def summary_projection(**options: Any) -> DocumentProjection[Summary]:
    p = DocumentProjection("summary", document=Summary, **options)

    @p.on(ShopPlaced)
    def placed(doc: Summary, event: eventfold.RecordedEvent) -> Summary:
        if event.data.cents < 0 and not broken.fixed:
            raise ValueError(f"negative amount {event.data.cents}")
        return Summary(total=doc.total + event.data.cents, paid=doc.paid, placed=doc.placed + 1)

    @p.on(ShopPaid)
    def paid(doc: Summary, event: eventfold.RecordedEvent) -> Summary:
        return Summary(total=doc.total, paid=True, placed=doc.placed)

    return p


class Broken:
    fixed = False


broken = Broken()


@pytest.fixture(autouse=True)
def _reset() -> None:
    broken.fixed = False


def counter_projection(name: str = "counter") -> Projection:
    """Not idempotent on purpose: a duplicate delivery would show as a wrong count."""
    p = Projection(name)

    @p.on(ShopPlaced, ShopPaid)
    async def count(event: eventfold.RecordedEvent, tx: ProjectionTransaction) -> None:
        doc = await tx.get("all") or {"n": 0, "positions": []}
        doc["n"] += 1
        doc["positions"].append(str(event.position))
        await tx.put("all", doc)

    return p


# Workers poll here: the daemon's default wake-ups are tested with the wake-ups
# themselves, and a poll keeps these tests' timing the same on every backend.
FAST = DaemonOptions(
    batch_size=10,
    poll_interval=0.01,
    lease_retry=0.02,
    poison=PoisonPolicy(retries=1, backoff=0.001),
)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[eventfold.EventStore]:
    async with eventfold.connect(store_url) as store:
        yield store


async def fill(store: eventfold.EventStore, streams: int = 6, rounds: int = 3) -> None:
    for r in range(rounds):
        for s in range(streams):
            await store.append(f"shop-{s}", [ShopPlaced(cents=10 * s + r)], expected_version=r)
    last = await store.append("shop-0", [ShopPaid(), ShopNoise()], expected_version=rounds)
    await settle(store, last.position)


async def documents(models: ReadModelStore, name: str, version: int = 1) -> dict[str, Any]:
    return {i: msgspec.json.decode(d) async for i, d in models.iter_documents(name, version)}


async def test_the_daemon_builds_what_live_and_a_clean_replay_build(
    store: eventfold.EventStore,
) -> None:
    await fill(store)
    summary = summary_projection()
    models = read_models_for(store)
    async with ProjectionDaemon(store, models, [summary], options=FAST) as daemon:
        head = await daemon.catch_up(timeout=20)
        assert head == await store.head()
        stored = await DocumentView(models, summary).all()
        assert stored == await live(store, summary).all()
        assert stored == await DocumentView(await replay(store, summary), summary).all()
        assert stored["shop-0"] == Summary(total=0 + 1 + 2, paid=True, placed=3)
        status = await daemon.status("summary")
        assert status.state is ProjectionState.ACTIVE
        assert (status.position, status.lag_events, status.lag_seconds) == (head, 0, 0.0)


async def test_a_batch_delivered_twice_is_applied_once(store: eventfold.EventStore) -> None:
    await fill(store)
    counter = counter_projection()
    models = read_models_for(store)
    (batch,) = [b async for b in Subscription(store, types=counter.event_types, follow=False)]

    async def deliver() -> None:
        async with models.transaction() as tx:
            await counter.apply(batch.events, tx)
            await tx.set_checkpoint("counter", 1, 0, batch.through, expected=None)

    await deliver()
    with pytest.raises(CheckpointConflict):
        await deliver()  # a replay from the same checkpoint
    assert (await documents(models, "counter"))["all"]["n"] == len(batch.events) == 19


async def test_two_owners_at_once_still_apply_each_event_once(
    store: eventfold.EventStore,
) -> None:
    """Split brain: each daemon believes it holds the lease; the checkpoint fences."""
    models = read_models_for(store)
    counter = counter_projection()
    one = ProjectionDaemon(store, models, [counter], options=FAST, leases=MemoryLeases())
    two = ProjectionDaemon(store, models, [counter], options=FAST, leases=MemoryLeases())
    async with one, two:
        for i in range(60):
            r = await store.append(
                f"shop-{i % 7}", [ShopPlaced(cents=i)], expected_version=eventfold.ANY
            )
        await settle(store, r.position)
        await one.catch_up(timeout=20)
        await two.catch_up(timeout=20)
    doc = (await documents(models, "counter"))["all"]
    assert doc["n"] == 60
    assert len(set(doc["positions"])) == 60


async def test_a_crash_mid_batch_then_a_restart_equals_a_clean_rebuild(
    store: eventfold.EventStore,
) -> None:
    await fill(store)
    positions = [e.position async for e in store.read_all()]
    stop_at = positions[7]  # in the middle of the first batch of 10
    reached, gate = asyncio.Event(), asyncio.Event()
    crash = {"armed": True}
    counter = Projection("counter")

    @counter.on(ShopPlaced, ShopPaid)
    async def count(event: eventfold.RecordedEvent, tx: ProjectionTransaction) -> None:
        doc = await tx.get("all") or {"n": 0}
        await tx.put("all", {"n": doc["n"] + 1})
        await tx.put(event.stream_id, {"last": event.version})
        if crash["armed"] and event.position == stop_at:
            reached.set()
            await gate.wait()  # the process dies here, before the batch commits

    models = read_models_for(store)
    summary = summary_projection()
    daemon = ProjectionDaemon(store, models, [counter, summary], options=FAST)
    await daemon.start()
    await asyncio.wait_for(reached.wait(), 10)
    await daemon.stop()
    assert await documents(models, "counter") == {}  # nothing of the batch is visible
    assert await models.checkpoints("counter", 1) == []
    crash["armed"] = False
    async with ProjectionDaemon(store, models, [counter, summary], options=FAST) as again:
        await again.catch_up(timeout=20)
    for p in (counter, summary):
        clean = await replay(store, p)
        assert await documents(models, p.name) == await documents(clean, p.name)
    assert (await documents(models, "counter"))["all"] == {"n": 19}


async def test_a_poison_event_stops_the_projection_with_a_clear_status(
    store: eventfold.EventStore,
) -> None:
    await store.append("shop-a", [ShopPlaced(cents=10)], expected_version=0)
    bad = await store.append("shop-b", [ShopPlaced(cents=-1)], expected_version=0)
    last = await store.append("shop-c", [ShopPlaced(cents=5)], expected_version=0)
    await settle(store, last.position)
    summary = summary_projection()
    models = read_models_for(store)
    async with ProjectionDaemon(store, models, [summary], options=FAST) as daemon:
        with pytest.raises(ProjectionStopped, match="negative amount -1"):
            await daemon.catch_up(timeout=20)
        status = await daemon.status("summary")
        assert status.state is ProjectionState.FAILED
        assert status.last_error is not None
        assert "ValueError: negative amount -1" in status.last_error
        assert f"at position {bad.position} (stream 'shop-b'" in status.last_error
        assert status.position < bad.position  # the events before it were committed
        assert status.lag_events == 2
        assert list(await DocumentView(models, summary, version=1).all()) == ["shop-a"]
        assert [w.state for w in daemon.workers("summary")] == [WorkerState.FAILED]
        broken.fixed = True
        daemon.resume("summary")
        await daemon.catch_up(timeout=20)
        status = await daemon.status("summary")
        assert (status.state, status.last_error, status.lag_events) == (
            ProjectionState.ACTIVE,
            None,
            0,
        )
        docs = await DocumentView(models, summary).all()
        assert sorted(docs) == ["shop-a", "shop-b", "shop-c"]


async def test_a_poison_event_is_parked_listed_and_replayed(store: eventfold.EventStore) -> None:
    await store.append("shop-a", [ShopPlaced(cents=10)], expected_version=0)
    bad = await store.append("shop-b", [ShopPlaced(cents=-1)], expected_version=0)
    last = await store.append("shop-c", [ShopPlaced(cents=5)], expected_version=0)
    await settle(store, last.position)
    summary = summary_projection(poison=PoisonPolicy(action="park", retries=2, backoff=0.001))
    models = read_models_for(store)
    async with ProjectionDaemon(store, models, [summary], options=FAST) as daemon:
        await daemon.catch_up(timeout=20)
        (parked,) = await daemon.parked("summary")
        assert (parked.position, parked.stream_id, parked.type) == (
            bad.position,
            "shop-b",
            "ShopPlaced",
        )
        assert parked.attempts == 3
        assert "negative amount -1" in parked.error
        status = await daemon.status("summary")
        assert (status.state, status.parked, status.lag_events) == (ProjectionState.ACTIVE, 1, 0)
        assert sorted(await DocumentView(models, summary).all()) == ["shop-a", "shop-c"]

        still = await daemon.replay_parked("summary")
        assert still.replayed == []
        assert [p.attempts for p in still.failed] == [4]
        assert [p.attempts for p in await daemon.parked("summary")] == [4]

        broken.fixed = True
        done = await daemon.replay_parked("summary", positions=[bad.position])
        assert (done.replayed, done.failed) == ([bad.position], [])
        assert await daemon.parked("summary") == []
        docs = await DocumentView(models, summary).all()
        assert docs["shop-b"] == Summary(total=-1, placed=1)


async def test_a_transient_handler_error_is_retried_not_parked(
    store: eventfold.EventStore,
) -> None:
    await fill(store, streams=2, rounds=1)
    failures = {"left": 2}
    p = Projection("flaky", poison=PoisonPolicy(action="park", retries=3, backoff=0.001))

    @p.on(ShopPlaced)
    async def placed(event: eventfold.RecordedEvent, tx: ProjectionTransaction) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise TimeoutError("the search index did not answer")
        await tx.put(event.stream_id, {"cents": event.data.cents})

    models = read_models_for(store)
    async with ProjectionDaemon(store, models, [p], options=FAST) as daemon:
        await daemon.catch_up(timeout=20)
        assert await daemon.parked("flaky") == []
    assert await documents(models, "flaky") == {"shop-0": {"cents": 0}, "shop-1": {"cents": 10}}


async def test_store_errors_are_retried_until_the_store_answers(
    store: eventfold.EventStore,
) -> None:
    await fill(store, streams=2, rounds=1)
    failures = {"left": 2}
    p = Projection("outage", poison=PoisonPolicy(action="park", retries=0))

    @p.on(ShopPlaced)
    async def placed(event: eventfold.RecordedEvent, tx: ProjectionTransaction) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise eventfold.StoreError("the read-model database went away")
        await tx.put(event.stream_id, {"ok": True})

    models = read_models_for(store)
    async with ProjectionDaemon(store, models, [p], options=FAST) as daemon:
        await daemon.catch_up(timeout=20)
        assert await daemon.parked("outage") == []
    assert sorted(await documents(models, "outage")) == ["shop-0", "shop-1"]


async def test_partitions_keep_stream_order_and_cover_every_event_once(
    store: eventfold.EventStore,
) -> None:
    p = DocumentProjection("streams", document=dict, partitions=4)

    @p.on(ShopPlaced)
    def placed(doc: dict[str, Any], event: eventfold.RecordedEvent) -> dict[str, Any]:
        return {
            "versions": [*doc.get("versions", []), event.version],
            "partition": partition_of(event.stream_id, 4),
        }

    models = read_models_for(store)
    leases = MemoryLeases()
    one = ProjectionDaemon(store, models, [p], options=FAST, leases=leases, owner="one")
    two = ProjectionDaemon(store, models, [p], options=FAST, leases=leases, owner="two")
    async with one:
        await asyncio.sleep(0.05)  # one takes every lease; two stands by
        async with two:
            for r in range(3):
                for s in range(20):
                    last = await store.append(
                        f"shop-{s}", [ShopPlaced(cents=r)], expected_version=r
                    )
            await settle(store, last.position)
            await one.catch_up(timeout=20)
            await two.catch_up(timeout=20)
            assert {w.state for w in two.workers()} == {WorkerState.STANDBY}
    docs = await documents(models, "streams")
    assert sorted(docs) == sorted(f"shop-{s}" for s in range(20))
    assert all(d["versions"] == [1, 2, 3] for d in docs.values())
    assert len({d["partition"] for d in docs.values()}) == 4
    assert [c.partition for c in await models.checkpoints("streams", 1)] == [0, 1, 2, 3]


async def test_a_standby_takes_over_when_the_owner_goes_away(
    store: eventfold.EventStore,
) -> None:
    counter = counter_projection()
    models = read_models_for(store)
    leases = MemoryLeases()
    one = ProjectionDaemon(store, models, [counter], options=FAST, leases=leases, owner="one")
    two = ProjectionDaemon(store, models, [counter], options=FAST, leases=leases, owner="two")
    await one.start()
    await asyncio.sleep(0.05)
    async with two:
        await fill(store, streams=3, rounds=2)
        await one.catch_up(timeout=20)
        assert leases.owner("counter/v1/p0of1") == "one"
        await one.stop()
        late = await store.append("shop-9", [ShopPlaced(cents=1)], expected_version=0)
        await two.catch_up(late.position, timeout=20)
        assert leases.owner("counter/v1/p0of1") == "two"
    assert (await documents(models, "counter"))["all"]["n"] == 3 * 2 + 1 + 1


async def test_a_worker_that_lost_its_lease_is_fenced(store: eventfold.EventStore) -> None:
    counter = counter_projection()
    models = read_models_for(store)
    leases = MemoryLeases()
    one = ProjectionDaemon(store, models, [counter], options=FAST, leases=leases, owner="one")
    two = ProjectionDaemon(store, models, [counter], options=FAST, leases=leases, owner="two")
    async with one:
        await fill(store, streams=3, rounds=2)
        await one.catch_up(timeout=20)
        leases.revoke("counter/v1/p0of1")  # one's database session dropped
        async with two:
            for i in range(30):
                last = await store.append("shop-x", [ShopPlaced(cents=i)], expected_version=i)
            await two.catch_up(last.position, timeout=20)
            await one.catch_up(last.position, timeout=20)
    doc = (await documents(models, "counter"))["all"]
    assert doc["n"] == 3 * 2 + 1 + 30
    assert len(set(doc["positions"])) == doc["n"]


async def test_a_projection_never_runs_ahead_of_its_dependencies(
    store: eventfold.EventStore,
) -> None:
    base = counter_projection("base")
    models = read_models_for(store)
    behind: list[str] = []
    dependent = Projection("dependent", depends_on=[base])

    @dependent.on(ShopPlaced)
    async def placed(event: eventfold.RecordedEvent, tx: ProjectionTransaction) -> None:
        (cp,) = await models.checkpoints("base", 1)
        if cp.position < event.position:
            behind.append(str(event.position))
        await tx.put(event.stream_id, {"seen": True})

    @base.on_setup
    async def slow_start(tx: ProjectionTransaction) -> None:
        await asyncio.sleep(0.1)

    await fill(store)
    async with ProjectionDaemon(store, models, [dependent, base], options=FAST) as daemon:
        await daemon.catch_up(timeout=20)
    assert behind == []
    assert len(await documents(models, "dependent")) == 6
