"""Metrics and health over SQLite and PostgreSQL: lag, parked counts, appends, conflicts,
stalls, and the app's /metrics and /health."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import eventfold
from eventfold import InvalidInput, Position, WrongExpectedVersion
from eventfold.metrics import Metrics, Observer
from eventfold.projections import (
    Checkpoint,
    DaemonOptions,
    DocumentProjection,
    ParkedEvent,
    PartitionState,
    PoisonPolicy,
    ProjectionDaemon,
    ProjectionSummary,
    ReadModelStore,
    SupportsProjectionSummaries,
    read_models_for,
)
from eventfold.relay import InProcessSink, Relay
from eventfold.store import SupportsUnitOfWork
from eventfold.testing import settle
from eventfold.testing.unit_of_work import SQLUnitOfWorkConformance, UnitOfWorkConformance
from eventfold.web import create_app

FAST = DaemonOptions(poll_interval=0.01, lease_retry=0.02)


class MetPlaced(eventfold.Event):
    cents: int


class MetNoise(eventfold.Event):
    pass


def totals(
    name: str = "met_totals", fail_on: int | None = None, action: str = "stop"
) -> DocumentProjection[Any]:
    policy = PoisonPolicy(retries=0, action=action)  # type: ignore[arg-type]
    p = DocumentProjection(name, document=dict, poison=policy)

    @p.on(MetPlaced)
    def placed(doc: dict[str, Any], event: eventfold.RecordedEvent) -> dict[str, Any]:
        if event.data.cents == fail_on:
            raise ValueError("cannot place")
        return {"cents": doc.get("cents", 0) + event.data.cents}

    return p


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(sql_url: str) -> AsyncIterator[eventfold.EventStore]:
    async with eventfold.connect(sql_url) as store:
        yield store


async def fill(store: eventfold.EventStore, n: int, prefix: str = "order") -> Position:
    last = None
    for i in range(n):
        events = [MetPlaced(cents=i + 1), MetNoise()]
        last = await store.append(f"{prefix}-{i}", events, expected_version=0)
    assert last is not None
    await settle(store, last.position)
    return last.position


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


async def until(check: Callable[[], Any], timeout: float = 15.0) -> None:  # noqa: ASYNC109
    """Wait until ``await check()`` is true, or fail after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)


async def test_lag_head_and_position_before_and_after_the_daemon(
    store: eventfold.EventStore,
) -> None:
    p = totals()
    head = await fill(store, 3)
    metrics = Metrics(store, projections=[p])
    found = samples(await metrics.exposition())
    b = store.backend
    assert value(found, "eventfold_log_head_position", backend=b) == head.seq
    labels = {"backend": b, "projection": "met_totals"}
    # Only the matching events count: three MetPlaced among six events.
    assert value(found, "eventfold_projection_lag_events", **labels) == 3
    assert value(found, "eventfold_projection_lag_seconds", **labels) >= 0
    assert value(found, "eventfold_projection_position", **labels) == 0
    assert value(found, "eventfold_projection_parked_events", **labels) == 0

    models = read_models_for(store)
    async with ProjectionDaemon(store, models, [p], options=FAST) as daemon:
        await daemon.wait_for("met_totals", head, timeout=10)
    found = samples(await metrics.exposition())
    assert value(found, "eventfold_projection_lag_events", **labels) == 0
    assert value(found, "eventfold_projection_lag_seconds", **labels) == 0
    assert value(found, "eventfold_projection_position", **labels) == head.seq


async def test_lag_seconds_is_how_much_older_the_oldest_waiting_event_is(
    store: eventfold.EventStore,
) -> None:
    await store.append("order-a", [MetPlaced(cents=1)], expected_version=0)
    await asyncio.sleep(0.3)
    last = await store.append("order-b", [MetPlaced(cents=2)], expected_version=0)
    await settle(store, last.position)
    snapshot = await Observer(store, projections=[totals()]).observe()
    events = [e async for e in store.read_all()]
    (reading,) = snapshot.readings
    expected = (events[-1].recorded_us - events[0].recorded_us) / 1e6
    assert reading.lag_seconds == pytest.approx(expected)
    assert reading.lag_seconds >= 0.3
    assert (reading.lag_events, reading.lag_exact) == (2, True)


async def test_beyond_the_count_limit_lag_is_the_upper_bound(store: eventfold.EventStore) -> None:
    head = await fill(store, 5)
    snapshot = await Observer(store, projections=[totals()], count_limit=2).observe()
    (reading,) = snapshot.readings
    assert (reading.lag_events, reading.lag_exact) == (head.seq, False)


async def test_instrumented_appends_conflicts_and_latency(store: eventfold.EventStore) -> None:
    metrics = Metrics(store)
    remove = metrics.instrument()
    assert metrics.instrument() is not None  # a second time does nothing
    await store.append("acct-1", [MetPlaced(cents=1), MetPlaced(cents=2)], expected_version=0)
    await store.append("acct-1", [MetPlaced(cents=3)], expected_version=2)
    with pytest.raises(WrongExpectedVersion):
        await store.append("acct-1", [MetPlaced(cents=4)], expected_version=1)
    text = await metrics.exposition()
    found = samples(text)
    b = store.backend
    assert value(found, "eventfold_appends_total", backend=b) == 2
    assert value(found, "eventfold_events_appended_total", backend=b) == 3
    assert value(found, "eventfold_append_conflicts_total", backend=b) == 1
    assert value(found, "eventfold_append_duration_seconds_count", backend=b) == 3
    assert value(found, "eventfold_append_duration_seconds_sum", backend=b) > 0
    # Never a stream id in a label.
    assert b"acct-1" not in text
    assert [e.data.cents async for e in store.read_stream("acct-1")] == [1, 2, 3]

    remove()
    await store.append("acct-1", [MetPlaced(cents=5)], expected_version=3)
    found = samples(await metrics.exposition())
    assert value(found, "eventfold_appends_total", backend=b) == 2


def append_figures(found: dict[Any, float], backend: str) -> tuple[float, ...]:
    """Appends, events, conflicts and timed appends, as scraped."""
    return tuple(
        value(found, name, backend=backend)
        for name in (
            "eventfold_appends_total",
            "eventfold_events_appended_total",
            "eventfold_append_conflicts_total",
            "eventfold_append_duration_seconds_count",
        )
    )


async def test_appends_in_a_unit_of_work_count_once_it_commits(store_url: str) -> None:
    async with eventfold.connect(store_url) as store:
        assert isinstance(store, SupportsUnitOfWork)
        metrics = Metrics(store)
        remove = metrics.instrument()
        b = store.backend

        async def figures() -> tuple[float, ...]:
            return append_figures(samples(await metrics.exposition()), b)

        async with store.unit_of_work() as uow:
            await uow.append("uow-1", [MetPlaced(cents=1), MetPlaced(cents=2)], expected_version=0)
            await uow.append("uow-2", [MetPlaced(cents=3)], expected_version=0)
            assert await figures() == (0, 0, 0, 2)  # timed, but not stored yet
        assert await figures() == (2, 3, 0, 2)
        sums = samples(await metrics.exposition())
        assert value(sums, "eventfold_append_duration_seconds_sum", backend=b) > 0

        # A conflict caught in the unit counts; the unit's other append commits.
        async with store.unit_of_work() as uow:
            with pytest.raises(WrongExpectedVersion):
                await uow.append("uow-1", [MetPlaced(cents=4)], expected_version=0)
            await uow.append("uow-1", [MetPlaced(cents=4)], expected_version=2)
        assert await figures() == (3, 4, 1, 4)

        async def refused() -> None:
            async with store.unit_of_work() as uow:
                await uow.append("uow-3", [MetPlaced(cents=5)], expected_version=0)
                await uow.append("uow-1", [MetPlaced(cents=6)], expected_version=0)

        # One that is not caught rolls the unit back: its first append stored nothing,
        # and the conflict counts once.
        with pytest.raises(WrongExpectedVersion):
            await refused()
        assert await figures() == (3, 4, 2, 6)

        async def abandoned() -> None:
            async with store.unit_of_work() as uow:
                await uow.append("uow-3", [MetPlaced(cents=7)], expected_version=0)
                raise RuntimeError("changed my mind")

        # A unit that fails otherwise counts its timed append only.
        with pytest.raises(RuntimeError, match="changed my mind"):
            await abandoned()
        assert await figures() == (3, 4, 2, 7)
        assert [e async for e in store.read_stream("uow-3")] == []
        assert [e.data.cents async for e in store.read_stream("uow-1")] == [1, 2, 4]

        remove()
        assert "unit_of_work" not in vars(store)
        async with store.unit_of_work() as uow:
            await uow.append("uow-4", [MetPlaced(cents=8)], expected_version=0)
        assert await figures() == (3, 4, 2, 7)


async def test_a_retry_in_a_unit_of_work_is_not_counted_again(store_url: str) -> None:
    async with eventfold.connect(store_url) as store:
        assert isinstance(store, SupportsUnitOfWork)
        metrics = Metrics(store)
        metrics.instrument()
        event = eventfold.NewEvent(MetPlaced(cents=3), event_id=uuid.uuid4())
        for _ in range(2):
            async with store.unit_of_work() as uow:
                await uow.append("uow-1", [event], expected_version=0)
        found = samples(await metrics.exposition())
        assert append_figures(found, store.backend) == (1, 1, 0, 2)
        assert len([e async for e in store.read_stream("uow-1")]) == 1


async def test_an_append_repeated_in_a_unit_of_work_is_counted_once(store_url: str) -> None:
    async with eventfold.connect(store_url) as store:
        assert isinstance(store, SupportsUnitOfWork)
        metrics = Metrics(store)
        metrics.instrument()
        batch = [eventfold.NewEvent(MetPlaced(cents=n), event_id=uuid.uuid4()) for n in (1, 2)]
        async with store.unit_of_work() as uow:
            first = await uow.append("uow-1", batch, expected_version=0)
            again = await uow.append("uow-1", batch, expected_version=eventfold.ANY)
        assert (again, again.retry) == (first, True)
        found = samples(await metrics.exposition())
        assert append_figures(found, store.backend) == (1, 2, 0, 2)
        assert len([e async for e in store.read_stream("uow-1")]) == 2


async def test_a_unit_of_work_refused_at_its_commit_counts_a_conflict() -> None:
    # The memory store checks a unit's appends again when it commits: an append made
    # outside the unit meanwhile makes the commit raise.
    async with eventfold.connect("memory://") as store:
        assert isinstance(store, SupportsUnitOfWork)
        metrics = Metrics(store)
        metrics.instrument()

        async def overtaken() -> None:
            async with store.unit_of_work() as uow:
                await uow.append("uow-1", [MetPlaced(cents=1)], expected_version=0)
                await store.append("uow-1", [MetPlaced(cents=2)], expected_version=0)

        with pytest.raises(WrongExpectedVersion):
            await overtaken()
        found = samples(await metrics.exposition())
        assert append_figures(found, store.backend) == (1, 1, 1, 2)


class TestInstrumentedSQLUnitOfWork(SQLUnitOfWorkConformance):
    """Units of work keep their contract when their appends are counted."""

    @pytest.fixture
    async def store(self, sql_url: str) -> AsyncIterator[eventfold.EventStore]:
        async with eventfold.connect(sql_url) as store:
            Metrics(store).instrument()
            yield store


class TestInstrumentedMemoryUnitOfWork(UnitOfWorkConformance):
    @pytest.fixture
    async def store(self) -> AsyncIterator[eventfold.EventStore]:
        async with eventfold.connect("memory://") as store:
            Metrics(store).instrument()
            yield store


async def test_a_projection_behind_whose_checkpoint_does_not_move_is_stalled(
    store: eventfold.EventStore,
) -> None:
    clock = Clock()
    p = totals()
    observer = Observer(store, projections=[p], stall_seconds=30, clock=clock)
    assert (await observer.health()).ok  # nothing to do: healthy

    head = await fill(store, 2)
    first = await observer.health()
    assert first.ok  # behind, but only just seen behind
    clock.now += 29
    assert (await observer.health()).ok
    clock.now += 1
    stalled = await observer.health()
    assert not stalled.ok
    (problem,) = stalled.problems
    assert (problem.kind, problem.name, problem.problem) == ("projection", "met_totals", "stalled")
    assert (problem.lag_events, problem.stalled_seconds) == (2, 30.0)

    models = read_models_for(store)
    async with ProjectionDaemon(store, models, [p], options=FAST) as daemon:
        await daemon.wait_for("met_totals", head, timeout=10)
    assert (await observer.health()).ok
    # Behind again: the clock starts again from this reading.
    await fill(store, 1, prefix="more")
    clock.now += 1000
    assert (await observer.health()).ok


async def test_a_checkpoint_that_moves_is_not_stalled(store: eventfold.EventStore) -> None:
    clock = Clock()
    p = totals()
    observer = Observer(store, projections=[p], stall_seconds=10, clock=clock)
    await fill(store, 3)
    await observer.observe()
    models = read_models_for(store)
    events = [e async for e in store.read_all()]
    async with models.transaction() as tx:
        await tx.set_checkpoint(p.name, p.version, 0, events[0].position, expected=None)
    clock.now += 20
    (reading,) = (await observer.observe()).readings
    assert (reading.lag_events, reading.stalled, reading.stalled_seconds) == (2, False, 0.0)
    clock.now += 10
    (reading,) = (await observer.observe()).readings
    assert reading.stalled


async def test_a_failed_projection_makes_health_fail_and_metrics_say_so(
    store: eventfold.EventStore,
) -> None:
    p = totals("met_failing", fail_on=2)
    head = await fill(store, 3)
    models = read_models_for(store)
    metrics = Metrics(store, projections=[p])

    async def failed() -> bool:
        found = samples(await metrics.exposition())
        labels = {"backend": store.backend, "projection": "met_failing"}
        return value(found, "eventfold_projection_failed", **labels) == 1

    daemon = ProjectionDaemon(store, models, [p], options=FAST)
    await daemon.start()
    try:
        await until(failed)
    finally:
        await daemon.stop()
    health = await metrics.observer.health()
    (problem,) = health.problems
    assert (problem.name, problem.problem) == ("met_failing", "failed")
    assert problem.error is not None
    assert "cannot place" in problem.error
    # Stopped at the second of three matching events: two still wait.
    assert problem.lag_events == 2
    assert problem.position != str(head)


async def test_parked_events_are_counted(store: eventfold.EventStore) -> None:
    p = totals("met_parking", fail_on=2, action="park")
    head = await fill(store, 3)
    models = read_models_for(store)
    async with ProjectionDaemon(store, models, [p], options=FAST) as daemon:
        await daemon.wait_for("met_parking", head, timeout=10)
    (reading,) = (await Observer(store, projections=[p]).observe()).readings
    assert (reading.parked, reading.lag_events, reading.failed) == (1, 0, False)
    assert reading.oldest_parked_seconds is not None


class SingleReads:
    """A read-model store's single reads only (no `SupportsProjectionSummaries`),
    counting them."""

    def __init__(self, models: ReadModelStore) -> None:
        self.models = models
        self.backend = models.backend
        self.reads = 0

    def transaction(self) -> Any:
        return self.models.transaction()

    async def get_documents(self, name: str, version: int, ids: Sequence[str]) -> dict[str, bytes]:
        return await self.models.get_documents(name, version, ids)

    def iter_documents(self, name: str, version: int, **kwargs: Any) -> Any:
        return self.models.iter_documents(name, version, **kwargs)

    async def checkpoints(self, name: str, version: int) -> list[Checkpoint]:
        self.reads += 1
        return await self.models.checkpoints(name, version)

    async def active_version(self, name: str) -> int | None:
        return await self.models.active_version(name)

    async def versions(self, name: str | None = None) -> list[Any]:
        return await self.models.versions(name)

    async def parked(self, name: str, version: int) -> list[ParkedEvent]:
        self.reads += 1
        return await self.models.parked(name, version)


class BatchedReads(SingleReads):
    """`SingleReads` with the batched read too, counting those."""

    def __init__(self, models: ReadModelStore) -> None:
        super().__init__(models)
        self.batches = 0

    async def summaries(self, slots: Sequence[tuple[str, int]]) -> list[ProjectionSummary]:
        self.batches += 1
        assert isinstance(self.models, SupportsProjectionSummaries)
        return await self.models.summaries(slots)


async def test_the_batched_reading_equals_the_reading_of_each_projection(
    store: eventfold.EventStore,
) -> None:
    caught_up = totals("met_b_ok")
    parking = totals("met_b_parking", fail_on=2, action="park")
    failing = totals("met_b_failing", fail_on=2)
    head = await fill(store, 3)
    models = read_models_for(store)

    async def settled() -> bool:
        rows = await models.checkpoints("met_b_failing", 1)
        done = await models.checkpoints("met_b_parking", 1)
        return bool(rows and rows[0].state is PartitionState.FAILED and done)

    async with ProjectionDaemon(
        store, models, [caught_up, parking, failing], options=FAST
    ) as daemon:
        await daemon.wait_for("met_b_ok", head, timeout=10)
        await daemon.wait_for("met_b_parking", head, timeout=10)
        await until(settled)
    halves = DocumentProjection("met_b_parts", document=dict, partitions=2)
    halves.on(MetPlaced)(lambda doc, event: doc)
    log = [e.position async for e in store.read_all()]
    async with models.transaction() as tx:
        await tx.set_checkpoint("met_b_parts", 1, 0, log[-1], expected=None)
        await tx.set_checkpoint("met_b_parts", 1, 1, log[1], expected=None)
    never_run = totals("met_b_new")
    await fill(store, 2, prefix="later")  # all of them behind again
    watched = [caught_up, parking, failing, halves, never_run]

    single, batched = SingleReads(models), BatchedReads(models)
    assert isinstance(models, SupportsProjectionSummaries)
    assert not isinstance(single, SupportsProjectionSummaries)
    assert isinstance(batched, SupportsProjectionSummaries)
    by_one = await Observer(store, projections=watched, models=single).observe()
    at_once = await Observer(store, projections=watched, models=batched).observe()
    assert (single.reads, batched.reads, batched.batches) == (10, 0, 1)

    def comparable(snapshot: Any) -> list[Any]:
        return [
            (dataclasses.replace(r, oldest_parked_seconds=None), r.marker)
            for r in snapshot.readings
        ]

    assert at_once.head == by_one.head
    assert comparable(at_once) == comparable(by_one)
    for one, both in zip(by_one.readings, at_once.readings, strict=True):
        assert (one.oldest_parked_seconds is None) == (both.oldest_parked_seconds is None)
        if one.oldest_parked_seconds is not None and both.oldest_parked_seconds is not None:
            assert both.oldest_parked_seconds == pytest.approx(one.oldest_parked_seconds, abs=1)
    # What the readings say, so that equal readings are not equally empty.
    found = {r.name: r for r in at_once.readings}
    assert (found["met_b_parking"].parked, found["met_b_parking"].failed) == (1, False)
    assert found["met_b_parking"].oldest_parked_seconds is not None
    failed = found["met_b_failing"]
    assert failed.failed
    assert failed.error is not None
    assert "cannot place" in failed.error
    assert found["met_b_parts"].position == log[1]
    assert found["met_b_new"].position == eventfold.START
    assert all(r.lag_events > 0 for r in at_once.readings)
    assert [r.lag_events for r in at_once.readings] == [2, 2, 4, 4, 5]


async def test_a_relay_that_does_not_deliver_is_stalled(store: eventfold.EventStore) -> None:
    clock = Clock()
    relay = Relay(store, InProcessSink(), destination="met_bus", outbox=False)
    metrics = Metrics(store, relays=[relay], stall_seconds=5)
    metrics.observer._clock = clock
    await fill(store, 2)
    found = samples(await metrics.exposition())
    labels = {"backend": store.backend, "relay": "met_bus"}
    assert value(found, "eventfold_relay_lag_events", **labels) == 4
    assert value(found, "eventfold_relay_stalled", **labels) == 0
    clock.now += 5
    found = samples(await metrics.exposition())
    assert value(found, "eventfold_relay_stalled", **labels) == 1
    health = await metrics.observer.health()
    assert [(p.kind, p.name, p.problem) for p in health.problems] == [
        ("relay", "met_bus", "stalled")
    ]

    async with relay:
        head = await store.head()
        await relay.wait_for(head, timeout=10)
    found = samples(await metrics.exposition())
    assert value(found, "eventfold_relay_lag_events", **labels) == 0
    assert value(found, "eventfold_relay_stalled", **labels) == 0
    assert (await metrics.observer.health()).ok


def test_bad_options_are_refused(sqlite_url: str) -> None:
    async def go() -> None:
        async with eventfold.connect(sqlite_url) as store:
            with pytest.raises(InvalidInput, match="stall_seconds"):
                Observer(store, stall_seconds=0)
            with pytest.raises(InvalidInput, match="count_limit"):
                Observer(store, count_limit=0)
            with pytest.raises(InvalidInput, match="unique"):
                Observer(store, projections=[totals(), totals()])

    asyncio.run(go())


async def test_the_app_serves_metrics_and_health(store: eventfold.EventStore) -> None:
    clock = Clock()
    p = totals()
    observer = Observer(store, projections=[p], stall_seconds=60, clock=clock)
    app = create_app(store, projections=[p], metrics=Metrics(store, observer=observer))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            ok = await http.get("/health")
            assert ok.status_code == 200
            assert ok.json()["status"] == "ok"
            await fill(store, 2)
            await http.get("/health")
            clock.now += 61
            bad = await http.get("/health")
            assert bad.status_code == 503
            body = bad.json()
            assert body["status"] == "unhealthy"
            assert [(x["name"], x["problem"]) for x in body["problems"]] == [
                ("met_totals", "stalled")
            ]
            scraped = await http.get("/metrics")
            assert scraped.status_code == 200
            assert scraped.headers["content-type"].startswith("text/plain")
            found = samples(scraped.content)
            labels = {"backend": store.backend, "projection": "met_totals"}
            assert value(found, "eventfold_projection_lag_events", **labels) == 2
            assert value(found, "eventfold_projection_stalled", **labels) == 1
    finally:
        await app.state.eventfold.close()


async def test_the_default_app_counts_its_appends(store: eventfold.EventStore) -> None:
    from web_client import TOKENS, WRITE, bearer

    app = create_app(store, tokens=TOKENS)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            body = {"events": [{"type": "WebPlaced", "data": {"n": 1}}]}
            headers = {**bearer(WRITE), "If-Match": 'W/"0"'}
            assert (await http.post("/streams/s-1/events", json=body, headers=headers)).is_success
            stale = await http.post("/streams/s-1/events", json=body, headers=headers)
            assert stale.status_code == 412
            found = samples((await http.get("/metrics")).content)
            b = store.backend
            assert value(found, "eventfold_appends_total", backend=b) == 1
            assert value(found, "eventfold_append_conflicts_total", backend=b) == 1
    finally:
        await app.state.eventfold.close()


async def test_two_metrics_on_one_store_both_count(store: eventfold.EventStore) -> None:
    first, second = Metrics(store), Metrics(store)
    remove_first = first.instrument()
    remove_second = second.instrument()
    await store.append("acct-2", [MetPlaced(cents=1)], expected_version=0)
    b = store.backend
    for m in (first, second):
        assert value(samples(await m.exposition()), "eventfold_appends_total", backend=b) == 1
    remove_second()
    await store.append("acct-2", [MetPlaced(cents=2)], expected_version=1)
    assert value(samples(await first.exposition()), "eventfold_appends_total", backend=b) == 2
    assert value(samples(await second.exposition()), "eventfold_appends_total", backend=b) == 1
    remove_first()
    assert "append" not in vars(store)
