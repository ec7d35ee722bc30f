"""Transaction hooks over every SQL backend: the shipped conformance suite, and what
differs between backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

import eventfold
from conftest import postgres_base_url
from eventfold import EventStore, StoreError, UnsupportedCapability
from eventfold.store import (
    HookOrder,
    HookTransaction,
    SupportsTransactionHooks,
    TransactionParticipant,
    capability,
)
from eventfold.testing import TransactionHookConformance
from eventfold.testing.hooks import Booked


class TestTransactionHooks(TransactionHookConformance):
    @pytest.fixture
    async def store(self, sql_url: str) -> AsyncIterator[EventStore]:
        async with eventfold.connect(sql_url) as store:
            yield store


class Sleeper(TransactionParticipant):
    name = "sleeper"
    order = HookOrder.UNIT_OF_WORK

    def __init__(self) -> None:
        self.seen = 0

    async def apply(self, tx: HookTransaction, events: Sequence[eventfold.RecordedEvent]) -> None:
        await asyncio.sleep(0)
        self.seen += len(events)


async def test_only_postgres_participants_may_await_io(sql_url: str) -> None:
    async with eventfold.connect(sql_url) as store:
        sleeper = Sleeper()
        await capability(store, SupportsTransactionHooks).transaction_hooks.add(sleeper)
        append = store.append("s-1", [Booked(n=1)], expected_version=eventfold.NO_STREAM)
        if store.backend == "sqlite":
            with pytest.raises(StoreError, match="'sleeper' awaited something other than"):
                await append
            assert await store.stream_version("s-1") == 0
        else:
            await append
            assert sleeper.seen == 1


async def test_the_memory_store_has_no_transaction_hooks() -> None:
    async with eventfold.connect("memory://") as store:
        assert not isinstance(store, SupportsTransactionHooks)
        with pytest.raises(UnsupportedCapability, match="SupportsTransactionHooks"):
            capability(store, SupportsTransactionHooks)


async def test_sqlite_participants_are_forgotten_when_the_store_closes(sqlite_url: str) -> None:
    store = eventfold.connect(sqlite_url)
    hooks = capability(store, SupportsTransactionHooks).transaction_hooks
    async with store:
        await hooks.add(Sleeper())
        assert [p.name for p in hooks.participants] == ["sleeper"]
    assert list(hooks.participants) == []
    await hooks.remove("sleeper")  # closed: nothing to do


@pytest.mark.postgres
async def test_a_postgres_attach_catches_up_past_a_transaction_open_elsewhere(
    postgres_url: str,
) -> None:
    import psycopg

    from eventfold.testing.hooks import Recorder

    async with eventfold.connect(postgres_url) as store:
        # An unrelated transaction that holds an id: the log's read horizon stays behind it.
        async with await psycopg.AsyncConnection.connect(postgres_base_url()) as other:
            await other.execute("SELECT pg_current_xact_id()")
            appended = [
                await store.append(f"s-{i}", [Booked(n=i)], expected_version=eventfold.NO_STREAM)
                for i in range(3)
            ]
            late = Recorder("late", "run")
            await capability(store, SupportsTransactionHooks).transaction_hooks.add(late)
            await other.rollback()
        assert [e.position for e in late.caught_up] == [r.position for r in appended]
