"""Blue/green rebuilds: a new version builds beside the live one and swaps in whole."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

import eventfold
from eventfold.cli.progress import format_progress
from eventfold.projections import (
    BuildProgress,
    DaemonOptions,
    DocumentProjection,
    DocumentView,
    InvalidProjection,
    MemoryReadModelStore,
    PoisonPolicy,
    ProjectionDaemon,
    ProjectionState,
    ProjectionStopped,
    ProjectionTransaction,
    SwapPolicy,
    VersionState,
    WorkerState,
    activate,
    drop_retired,
    live,
    read_models_for,
    rebuild,
)
from eventfold.testing import settle


class RbPlaced(eventfold.Event):
    cents: int


def totals(version: int, factor: int = 1, **options: Any) -> DocumentProjection[dict[str, int]]:
    p = DocumentProjection("totals", document=dict, version=version, **options)

    @p.on(RbPlaced)
    def placed(doc: dict[str, int], e: eventfold.RecordedEvent) -> dict[str, int]:
        if e.data.cents < 0:
            raise ValueError("negative")
        return {"cents": doc.get("cents", 0) + factor * e.data.cents}

    return p


# Swap only at the head, so a finished rebuild's model is the whole log's.
OPTIONS = DaemonOptions(
    batch_size=4, poll_interval=0.01, lease_retry=0.02, swap=SwapPolicy(max_lag_events=0)
)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[eventfold.EventStore]:
    async with eventfold.connect(store_url) as store:
        for r in range(5):
            for s in range(8):
                last = await store.append(f"order-{s}", [RbPlaced(cents=s + r)], expected_version=r)
        await settle(store, last.position)
        yield store


@pytest.fixture
async def memory_store() -> AsyncIterator[eventfold.EventStore]:
    async with eventfold.connect("memory://") as store:
        for s in range(6):
            await store.append(f"order-{s}", [RbPlaced(cents=s)], expected_version=0)
        yield store


async def test_a_first_build_becomes_active_when_caught_up(store: eventfold.EventStore) -> None:
    v1 = totals(1)
    models = read_models_for(store)
    view = DocumentView(models, v1)
    assert await view.version() is None
    assert await view.get("order-1") is None  # nothing half-built to read meanwhile
    status = await rebuild(store, models, v1, options=OPTIONS)
    assert (status.state, status.active_version, status.lag_events) == (
        ProjectionState.ACTIVE,
        1,
        0,
    )
    assert await view.all() == await live(store, v1).all()


async def test_readers_see_the_old_model_or_the_new_one_never_half(
    store: eventfold.EventStore,
) -> None:
    v1, v2 = totals(1), totals(2, factor=100)
    models = read_models_for(store)
    await rebuild(store, models, v1, options=OPTIONS)
    old, new = await live(store, v1).all(), await live(store, v2).all()
    assert old != new
    reader = DocumentView(models, v2)  # the new code reads whatever is active
    building = DocumentView(models, v2, version=2)
    seen: list[dict[str, Any]] = []
    partial = 0
    done = asyncio.Event()

    async def read() -> None:
        nonlocal partial
        while not done.is_set():
            seen.append(await reader.all())
            under_way = await building.all()
            partial += len(under_way) > 0 and under_way != new
            await asyncio.sleep(0)

    progress: list[BuildProgress] = []
    task = asyncio.create_task(read())
    status = await rebuild(
        store,
        models,
        v2,
        options=DaemonOptions(batch_size=3, poll_interval=0.01, swap=SwapPolicy(max_lag_events=0)),
        progress=progress.append,
    )
    done.set()
    await task
    seen.append(await reader.all())
    assert all(s in (old, new) for s in seen)
    assert seen[0] == old
    assert seen[-1] == new
    assert partial > 0  # the new version really was half-built while readers read
    assert (status.state, status.active_version) == (ProjectionState.ACTIVE, 2)
    versions = {r.version: r.state for r in await models.versions("totals")}
    assert versions == {1: VersionState.RETIRED, 2: VersionState.ACTIVE}
    assert await DocumentView(models, v1, version=1).all() == old  # kept for the grace period
    assert progress
    assert progress[-1].fraction == 1.0
    assert progress[-1].applied == 40
    assert all(p.rate > 0 for p in progress)
    assert format_progress(progress[-1]).startswith("totals v2 p0: 100% (")


async def test_rebuild_refuses_the_active_version_and_older_ones(
    memory_store: eventfold.EventStore,
) -> None:
    models = MemoryReadModelStore()
    await rebuild(memory_store, models, totals(2), options=OPTIONS)
    with pytest.raises(InvalidProjection, match="bump its version"):
        await rebuild(memory_store, models, totals(2), options=OPTIONS)
    with pytest.raises(InvalidProjection, match="activate v1 explicitly"):
        await rebuild(memory_store, models, totals(1), options=OPTIONS)


async def test_a_poison_event_stops_a_rebuild_without_a_swap(
    memory_store: eventfold.EventStore,
) -> None:
    models = MemoryReadModelStore()
    await rebuild(memory_store, models, totals(1), options=OPTIONS)
    await memory_store.append("order-9", [RbPlaced(cents=-1)], expected_version=0)
    v2 = totals(2, poison=PoisonPolicy(retries=0))
    with pytest.raises(ProjectionStopped, match="negative"):
        await rebuild(memory_store, models, v2, options=OPTIONS)
    assert await models.active_version("totals") == 1


async def test_retired_versions_are_dropped_after_the_grace_period(
    memory_store: eventfold.EventStore,
) -> None:
    models = MemoryReadModelStore()
    v1, v2 = totals(1), totals(2, factor=2)
    dropped: list[int] = []

    @v2.on_drop
    async def drop_tables(tx: ProjectionTransaction) -> None:
        dropped.append(tx.version)

    await rebuild(memory_store, models, v1, options=OPTIONS)
    await rebuild(memory_store, models, v2, options=OPTIONS)
    assert await drop_retired(models, v2, grace_period=3600) == []
    options = DaemonOptions(poll_interval=0.01, grace_period=0, janitor_interval=0.01)
    async with ProjectionDaemon(memory_store, models, [v2], options=options):
        for _ in range(200):
            if dropped:
                break
            await asyncio.sleep(0.01)
    assert dropped == [1]
    assert [r.version for r in await models.versions("totals")] == [2]
    assert [d async for d in models.iter_documents("totals", 1)] == []
    assert len([d async for d in models.iter_documents("totals", 2)]) == 6


async def test_old_code_stands_by_while_a_newer_version_is_active(
    memory_store: eventfold.EventStore,
) -> None:
    models = MemoryReadModelStore()
    v1, v2 = totals(1), totals(2, factor=2)
    await rebuild(memory_store, models, v1, options=OPTIONS)
    await rebuild(memory_store, models, v2, options=OPTIONS)
    before = await DocumentView(models, v1, version=1).all()
    async with ProjectionDaemon(memory_store, models, [v1], options=OPTIONS) as old:
        await memory_store.append("order-1", [RbPlaced(cents=1000)], expected_version=1)
        await old.catch_up(timeout=10)
        assert {w.state for w in old.workers()} == {WorkerState.SUPERSEDED}
    assert await DocumentView(models, v1, version=1).all() == before
    assert await models.active_version("totals") == 2


async def test_activate_rolls_back_and_a_newer_version_rolls_forward(
    memory_store: eventfold.EventStore,
) -> None:
    models = MemoryReadModelStore()
    v1, v2 = totals(1), totals(2, factor=2)
    setups: list[int] = []

    @v2.on_setup
    async def create(tx: ProjectionTransaction) -> None:
        setups.append(tx.version)

    await rebuild(memory_store, models, v1, options=OPTIONS)
    await rebuild(memory_store, models, v2, options=OPTIONS)
    assert await activate(models, "totals", 1) == 2
    assert await models.active_version("totals") == 1
    with pytest.raises(eventfold.InvalidInput, match="no version 7"):
        await activate(models, "totals", 7)
    async with ProjectionDaemon(memory_store, models, [v2], options=OPTIONS) as daemon:
        await daemon.catch_up(timeout=10)  # v2 resumes from its checkpoint and swaps back in
    assert await models.active_version("totals") == 2
    assert setups == [2]


async def test_restart_builds_again_from_the_start(memory_store: eventfold.EventStore) -> None:
    models = MemoryReadModelStore()
    v1 = totals(1)
    async with models.transaction() as tx:  # a half-done, wrong build
        await tx.set_version("totals", 1, VersionState.BUILDING, expected=None)
        await tx.put_document("totals", 1, "order-1", b'{"cents": 999}')
        head = await memory_store.head()
        await tx.set_checkpoint("totals", 1, 0, head, expected=None)
    await rebuild(memory_store, models, v1, options=OPTIONS, restart=True)
    assert await DocumentView(models, v1).all() == await live(memory_store, v1).all()
