"""The read-model store contract, over every read-model backend (memory for now).

Written against `ReadModelStore` only, so the SQLite and PostgreSQL read-model stores
join by adding a parameter to the ``models`` fixture.
"""

from __future__ import annotations

import msgspec
import pytest

import eventfold
from eventfold import Position
from eventfold.projections import (
    CheckpointConflict,
    MemoryReadModelStore,
    ParkedEvent,
    PartitionState,
    ReadModelStore,
    ReadModelTransaction,
    VersionState,
)


@pytest.fixture(params=["memory"])
async def models(request: pytest.FixtureRequest) -> ReadModelStore:
    return MemoryReadModelStore()


def P(seq: int) -> Position:
    return Position(0, seq)


async def test_the_memory_store_keeps_the_protocol(models: ReadModelStore) -> None:
    assert isinstance(models, ReadModelStore)
    async with models.transaction() as tx:
        assert isinstance(tx, ReadModelTransaction)


async def test_writes_are_visible_only_after_commit(models: ReadModelStore) -> None:
    async with models.transaction() as tx:
        await tx.put_document("docs", 1, "a", b'{"n":1}')
        await tx.put_document("docs", 1, "b", b'{"n":2}')
        assert await tx.get_documents("docs", 1, ["a", "b", "c"]) == {
            "a": b'{"n":1}',
            "b": b'{"n":2}',
        }
        assert await models.get_documents("docs", 1, ["a"]) == {}
    assert await models.get_documents("docs", 1, ["a", "b"]) == {"a": b'{"n":1}', "b": b'{"n":2}'}
    assert await models.get_documents("docs", 2, ["a"]) == {}  # versions are apart
    async with models.transaction() as tx:
        await tx.delete_document("docs", 1, "a")
        await tx.delete_document("docs", 1, "missing")
        assert await tx.get_documents("docs", 1, ["a"]) == {}
    assert await models.get_documents("docs", 1, ["a", "b"]) == {"b": b'{"n":2}'}


async def test_an_exception_rolls_everything_back(models: ReadModelStore) -> None:
    ended: list[ReadModelTransaction] = []

    async def crash() -> None:
        async with models.transaction() as tx:
            ended.append(tx)
            await tx.put_document("docs", 1, "a", b"{}")
            await tx.set_checkpoint("docs", 1, 0, P(5), expected=None)
            await tx.park(_parked(P(3)))
            await tx.activate("docs", 1)
            raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        await crash()
    assert await models.get_documents("docs", 1, ["a"]) == {}
    assert await models.checkpoints("docs", 1) == []
    assert await models.parked("docs", 1) == []
    assert await models.active_version("docs") is None
    with pytest.raises(eventfold.InvalidInput, match="has ended"):
        await ended[0].put_document("docs", 1, "a", b"{}")


async def test_checkpoints_are_compare_and_set(models: ReadModelStore) -> None:
    async with models.transaction() as tx:
        await tx.set_checkpoint("docs", 1, 0, P(10), expected=None)
        assert (await tx.get_checkpoint("docs", 1, 0)) is not None

    async def stale() -> None:
        async with models.transaction() as tx:
            await tx.put_document("docs", 1, "a", b"{}")
            await tx.set_checkpoint("docs", 1, 0, P(20), expected=P(5))

    with pytest.raises(CheckpointConflict) as info:
        await stale()
    assert (info.value.expected, info.value.actual, info.value.partition) == (P(5), P(10), 0)
    assert "another worker" in str(info.value)
    assert await models.get_documents("docs", 1, ["a"]) == {}
    async with models.transaction() as tx:
        await tx.set_checkpoint("docs", 1, 0, P(20), expected=P(10))
        await tx.set_checkpoint("docs", 1, 0, P(30), expected=P(20))  # its own write
    (row,) = await models.checkpoints("docs", 1)
    assert (row.position, row.state, row.error) == (P(30), PartitionState.RUNNING, None)
    assert row.updated_us > 0


async def test_two_transactions_from_one_checkpoint_commit_once(models: ReadModelStore) -> None:
    """The fence: both read checkpoint 10, the second to commit is rolled back whole."""
    async with models.transaction() as tx:
        await tx.set_checkpoint("docs", 1, 0, P(10), expected=None)
    first = models.transaction()
    second = models.transaction()
    tx1 = await first.__aenter__()
    tx2 = await second.__aenter__()
    for tx in (tx1, tx2):
        await tx.put_document("docs", 1, "n", b"1")
        await tx.set_checkpoint("docs", 1, 0, P(20), expected=P(10))
    await first.__aexit__(None, None, None)
    with pytest.raises(CheckpointConflict):
        await second.__aexit__(None, None, None)
    assert (await models.checkpoints("docs", 1))[0].position == P(20)


async def test_partition_states_and_listing(models: ReadModelStore) -> None:
    async with models.transaction() as tx:
        await tx.set_checkpoint("docs", 1, 2, P(7), expected=None)
        await tx.set_state("docs", 1, 0, PartitionState.FAILED, "boom")
        await tx.set_checkpoint("docs", 2, 0, P(1), expected=None)
    rows = await models.checkpoints("docs", 1)
    assert [(r.partition, r.position, r.state, r.error) for r in rows] == [
        (0, eventfold.START, PartitionState.FAILED, "boom"),
        (2, P(7), PartitionState.RUNNING, None),
    ]
    async with models.transaction() as tx:  # a successful checkpoint clears the failure
        await tx.set_checkpoint("docs", 1, 0, P(3), expected=eventfold.START)
    assert (await models.checkpoints("docs", 1))[0].state is PartitionState.RUNNING


def _parked(position: Position, error: str = "boom") -> ParkedEvent:
    return ParkedEvent(
        name="docs",
        version=1,
        partition=0,
        position=position,
        stream_id="a-1",
        event_id="00000000-0000-0000-0000-000000000001",
        type="Deposited",
        error=error,
        attempts=3,
        parked_us=1,
    )


async def test_parked_events_in_log_order(models: ReadModelStore) -> None:
    async with models.transaction() as tx:
        await tx.park(_parked(P(9)))
        await tx.park(_parked(P(4)))
        await tx.park(_parked(P(9), error="again"))  # replaces
    assert [(p.position, p.error) for p in await models.parked("docs", 1)] == [
        (P(4), "boom"),
        (P(9), "again"),
    ]
    async with models.transaction() as tx:
        await tx.unpark("docs", 1, P(4))
    assert [p.position for p in await models.parked("docs", 1)] == [P(9)]


async def test_versions_activate_and_retire(models: ReadModelStore) -> None:
    async with models.transaction() as tx:
        await tx.set_version("docs", 1, VersionState.BUILDING, expected=None)

    async def create() -> None:
        async with models.transaction() as tx:
            await tx.set_version("docs", 1, VersionState.BUILDING, expected=None)

    with pytest.raises(CheckpointConflict, match="state of projection 'docs' v1"):
        await create()
    async with models.transaction() as tx:
        assert await tx.activate("docs", 1) is None
    assert await models.active_version("docs") == 1
    async with models.transaction() as tx:
        await tx.set_version("docs", 2, VersionState.BUILDING, expected=None)
    async with models.transaction() as tx:
        assert await tx.activate("docs", 2) == 1
    assert await models.active_version("docs") == 2
    states = [(r.version, r.state) for r in await models.versions("docs")]
    assert states == [(1, VersionState.RETIRED), (2, VersionState.ACTIVE)]
    assert await models.versions("other") == []


async def test_drop_deletes_one_version_entirely(models: ReadModelStore) -> None:
    async with models.transaction() as tx:
        for v in (1, 2):
            await tx.put_document("docs", v, "a", b"{}")
            await tx.set_checkpoint("docs", v, 0, P(v), expected=None)
            await tx.park(msgspec.structs.replace(_parked(P(1)), version=v))
            await tx.set_version("docs", v, VersionState.BUILDING, expected=None)
        await tx.activate("docs", 1)
    async with models.transaction() as tx:
        await tx.drop("docs", 1)
        assert await tx.get_documents("docs", 1, ["a"]) == {}
        assert await tx.get_checkpoint("docs", 1, 0) is None
        await tx.put_document("docs", 1, "b", b"{}")  # writes after a drop survive it
    assert await models.get_documents("docs", 1, ["a", "b"]) == {"b": b"{}"}
    assert await models.checkpoints("docs", 1) == []
    assert await models.parked("docs", 1) == []
    assert await models.active_version("docs") is None
    assert [r.version for r in await models.versions("docs")] == [2]
    assert await models.get_documents("docs", 2, ["a"]) == {"a": b"{}"}


async def test_iter_documents_orders_by_id_and_pages(models: ReadModelStore) -> None:
    async with models.transaction() as tx:
        for i in range(2500):
            await tx.put_document("docs", 1, f"{i:05}", b"%d" % i)
    ids = [i async for i, _ in models.iter_documents("docs", 1)]
    assert ids == [f"{i:05}" for i in range(2500)]
    page = [i async for i, _ in models.iter_documents("docs", 1, after="00010", limit=3)]
    assert page == ["00011", "00012", "00013"]
    with pytest.raises(eventfold.InvalidInput):
        [i async for i in models.iter_documents("docs", 1, limit=-1)]
