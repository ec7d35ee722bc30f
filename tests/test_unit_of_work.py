"""Units of work and the outbox over every backend: the shipped suites, and what differs
between backends."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import psycopg
import pytest

import eventfold
from conftest import postgres_base_url
from eventfold import ANY, NO_STREAM, START, AppendResult, EventStore
from eventfold.relay import OUTBOX, InProcessSink, Relay, RelayOptions
from eventfold.store import SupportsOutbox, SupportsUnitOfWork, capability
from eventfold.testing.conformance import settle
from eventfold.testing.unit_of_work import (
    Charged,
    SQLUnitOfWorkConformance,
    UnitOfWorkConformance,
    check_no_sql,
    messages,
)

FAST = RelayOptions(checkpoint_interval=0.01, poll_interval=0.02, retry_delay=0.01)


class TestSQLUnitOfWork(SQLUnitOfWorkConformance):
    @pytest.fixture
    async def store(self, sql_url: str) -> AsyncIterator[EventStore]:
        async with eventfold.connect(sql_url) as store:
            yield store


class TestMemoryUnitOfWork(UnitOfWorkConformance):
    @pytest.fixture
    async def store(self) -> AsyncIterator[EventStore]:
        async with eventfold.connect("memory://") as store:
            yield store


async def test_memory_has_no_sql() -> None:
    async with eventfold.connect("memory://") as store:
        await check_no_sql(store)


def test_every_backend_declares_the_ports() -> None:
    for url in ("memory://", "sqlite:///unused.db"):
        store = eventfold.connect(url)
        assert isinstance(store, SupportsUnitOfWork)
        assert isinstance(store, SupportsOutbox)


@pytest.mark.postgres
async def test_postgres_never_skips_a_message_that_commits_late(postgres_url: str) -> None:
    async with eventfold.connect(postgres_url) as store:
        units = capability(store, SupportsUnitOfWork)
        box = capability(store, SupportsOutbox)
        units.declare_destination("late")
        async with units.unit_of_work() as uow:
            await uow.execute("CREATE TABLE late_t (n int)")
        holding = asyncio.Event()
        release = asyncio.Event()

        async def early() -> None:
            async with units.unit_of_work() as uow:
                # Its transaction id is taken here, before the other unit's.
                await uow.execute("INSERT INTO late_t VALUES (1)")
                holding.set()
                await asyncio.wait_for(release.wait(), 30)
                uow.publish("late", b"early")

        task = asyncio.create_task(early())
        await asyncio.wait_for(holding.wait(), 30)
        async with units.unit_of_work() as uow:
            uow.publish("late", b"later")
        # The later unit has committed, but the earlier one is still open: a reader must
        # not see the later message yet, or it would skip the earlier one.
        for _ in range(5):
            seen = await box.read_outbox(START, 100, destination="late")
            assert seen == [], seen
            assert await box.outbox_head("late") == START
            await asyncio.sleep(0.01)
        release.set()
        await task
        found = await messages(store, 2, "late")
        assert [m.payload for m in found] == [b"early", b"later"]
        assert found[0].position < found[1].position
        assert await box.read_outbox(found[0].position, 100, destination="late") == found[1:]


@pytest.mark.postgres
async def test_postgres_a_write_is_sent_with_the_next_statement_and_its_error_surfaces_there(
    postgres_url: str,
) -> None:
    async with eventfold.connect(postgres_url) as store:
        units = capability(store, SupportsUnitOfWork)
        run = uuid.uuid4().hex[:8]
        steps: list[str] = []

        async def attempt() -> None:
            async with units.unit_of_work() as uow:
                await uow.write("INSERT INTO no_such_table VALUES (%s)", (1,))
                steps.append("written")  # queued: nothing sent, nothing failed yet
                await uow.append(f"a-{run}", [Charged(cents=1)], expected_version=NO_STREAM)
                steps.append("appended")

        with pytest.raises(eventfold.StoreError, match=r"written with uow\.write") as info:
            await attempt()
        assert steps == ["written"]
        assert "no_such_table" in str(info.value)
        assert info.value.__cause__ is not None
        assert [e async for e in store.read_stream(f"a-{run}")] == []

        async def caught() -> None:
            async with units.unit_of_work() as uow:
                await uow.write("INSERT INTO no_such_table VALUES (%s)", (1,))
                with pytest.raises(eventfold.StoreError, match=r"written with uow\.write"):
                    await uow.execute("SELECT 1")
                await uow.append(f"a-{run}", [Charged(cents=1)], expected_version=NO_STREAM)

        # Caught or not, a failed statement aborts the transaction: the unit refuses more.
        with pytest.raises(eventfold.StoreError, match="earlier statement"):
            await caught()
        assert [e async for e in store.read_stream(f"a-{run}")] == []
        written = await store.append(f"a-{run}", [Charged(cents=2)], expected_version=NO_STREAM)
        await settle(store, written.position)
        assert written.version == 1


@pytest.mark.postgres
async def test_postgres_unit_after_a_failed_statement_refuses_more_work(
    postgres_url: str,
) -> None:
    async with eventfold.connect(postgres_url) as store:
        units = capability(store, SupportsUnitOfWork)
        run = uuid.uuid4().hex[:8]

        async def attempt() -> None:
            async with units.unit_of_work() as uow:
                await uow.append(f"a-{run}", [Charged(cents=1)], expected_version=NO_STREAM)
                with pytest.raises(eventfold.StoreError, match="statement failed"):
                    await uow.execute("SELECT * FROM no_such_table")
                await uow.execute("SELECT 1")

        with pytest.raises(eventfold.StoreError, match="earlier statement"):
            await attempt()
        assert [e async for e in store.read_stream(f"a-{run}")] == []
        written = await store.append(f"a-{run}", [Charged(cents=2)], expected_version=NO_STREAM)
        await settle(store, written.position)


async def test_sqlite_units_share_group_commits(tmp_path: object) -> None:
    async with eventfold.connect(f"sqlite:///{tmp_path}/g.db") as store:
        units = capability(store, SupportsUnitOfWork)
        before = store.commits  # type: ignore[attr-defined]

        async def unit(n: int) -> None:
            async with units.unit_of_work() as uow:
                await uow.append(f"s-{n}", [Charged(cents=n)], expected_version=NO_STREAM)

        await asyncio.gather(*(unit(n) for n in range(50)))
        # Fifty units started in one turn of the loop commit in far fewer transactions.
        assert 1 <= store.commits - before < 10  # type: ignore[attr-defined]
        assert (await store.stats()).events == 50


async def test_sqlite_units_commit_off_the_loop_when_it_is_busy(tmp_path: object) -> None:
    async with eventfold.connect(f"sqlite:///{tmp_path}/b.db") as store:
        units = capability(store, SupportsUnitOfWork)
        units.declare_destination("busy")
        stop = asyncio.Event()
        spins = 0

        async def spinner() -> None:
            # Keeps another task ready, so the loop is never idle at a commit.
            nonlocal spins
            while not stop.is_set():
                spins += 1
                await asyncio.sleep(0)

        async def unit(n: int) -> None:
            async with units.unit_of_work() as uow:
                m = "?"
                await uow.execute(f"INSERT INTO busy_t VALUES ({m})", (n,))
                await uow.append(f"s-{n}", [Charged(cents=n)], expected_version=NO_STREAM)
                uow.publish("busy", str(n))

        async with units.unit_of_work() as uow:
            await uow.execute("CREATE TABLE busy_t (n INTEGER)")
        task = asyncio.create_task(spinner())
        try:
            for _ in range(3):
                await asyncio.gather(*(unit(n) for n in range(_ * 20, _ * 20 + 20)))
        finally:
            stop.set()
            await task
        assert spins > 0
        async with units.unit_of_work() as uow:
            assert await uow.execute("SELECT count(*) FROM busy_t") == [(60,)]
        assert (await store.stats()).events == 60
        assert len(await messages(store, 60, "busy")) == 60


async def test_sqlite_refuses_a_plain_write_inside_a_unit_instead_of_waiting_forever(
    tmp_path: object,
) -> None:
    async with eventfold.connect(f"sqlite:///{tmp_path}/w.db") as store:
        units = capability(store, SupportsUnitOfWork)
        async with units.unit_of_work() as uow:
            with pytest.raises(eventfold.InvalidInput, match=r"use uow\.append"):
                await store.append("s-1", [Charged(cents=1)], expected_version=NO_STREAM)
            await uow.append("s-2", [Charged(cents=2)], expected_version=NO_STREAM)
        # Outside the block the store takes plain appends again.
        await store.append("s-1", [Charged(cents=1)], expected_version=NO_STREAM)
        assert (await store.stats()).events == 2


class Refusing(eventfold.store.TransactionParticipant):
    name = "refusing"
    order = eventfold.store.HookOrder.UNIT_OF_WORK

    async def apply(self, tx: object, events: object) -> None:
        raise eventfold.InvalidInput("refused by the participant")


async def test_sqlite_a_caught_refusal_still_rolls_the_unit_back(tmp_path: object) -> None:
    async with eventfold.connect(f"sqlite:///{tmp_path}/r.db") as store:
        units = capability(store, SupportsUnitOfWork)
        hooks = capability(store, eventfold.store.SupportsTransactionHooks).transaction_hooks
        units.declare_destination("r")
        await store.append("kept", [Charged(cents=1)], expected_version=NO_STREAM)
        await hooks.add(Refusing())

        async def attempt() -> None:
            async with units.unit_of_work() as uow:
                uow.publish("r", b"lost")
                with pytest.raises(eventfold.InvalidInput, match="refused by the participant"):
                    await uow.append("s-1", [Charged(cents=2)], expected_version=NO_STREAM)
                # The events were written before the participant refused: the unit can
                # no longer commit, whatever the block does next.
                with pytest.raises(eventfold.StoreError, match="failed after writing"):
                    await uow.execute("SELECT 1")

        with pytest.raises(eventfold.StoreError, match="rolled back"):
            await attempt()
        await hooks.remove("refusing")
        assert (await store.stats()).events == 1
        assert await capability(store, SupportsOutbox).read_outbox(START, 10) == []


async def test_sqlite_units_sharing_a_transaction_see_each_others_versions(
    tmp_path: object,
) -> None:
    async with eventfold.connect(f"sqlite:///{tmp_path}/v.db") as store:
        units = capability(store, SupportsUnitOfWork)
        commits = store.commits  # type: ignore[attr-defined]

        async def unit(first: int, fail: bool = False) -> None:
            async with units.unit_of_work() as uow:
                expected = first if first else NO_STREAM
                await uow.append("s", [Charged(cents=first)], expected_version=expected)
                await uow.append("s", [Charged(cents=first + 1)], expected_version=first + 1)
                if fail:
                    raise ValueError("abandoned")

        # Started in one turn of the loop, the units take turns in one transaction.
        outcomes = await asyncio.gather(
            unit(0), unit(2), unit(4, fail=True), unit(4), unit(7), return_exceptions=True
        )
        assert [type(o).__name__ for o in outcomes] == [
            "NoneType", "NoneType", "ValueError", "NoneType", "WrongExpectedVersion"
        ]  # fmt: skip
        assert store.commits - commits == 1  # type: ignore[attr-defined]
        assert [e.data.cents async for e in store.read_stream("s")] == [0, 1, 2, 3, 4, 5]
        assert await store.stream_version("s") == 6
        info = await store.stream_info("s")
        assert info.version == 6
        await store.append("s", [Charged(cents=6)], expected_version=6)


async def test_sqlite_a_unit_cancelled_while_waiting_for_its_turn_leaves_no_trace(
    tmp_path: object,
) -> None:
    async with eventfold.connect(f"sqlite:///{tmp_path}/c.db") as store:
        units = capability(store, SupportsUnitOfWork)
        holding, release = asyncio.Event(), asyncio.Event()

        async def first() -> None:
            async with units.unit_of_work() as uow:
                await uow.append("a", [Charged(cents=1)], expected_version=NO_STREAM)
                holding.set()
                await asyncio.wait_for(release.wait(), 10)

        async def waiting() -> None:
            async with units.unit_of_work() as uow:
                await uow.append("b", [Charged(cents=2)], expected_version=NO_STREAM)

        one = asyncio.create_task(first())
        await asyncio.wait_for(holding.wait(), 10)
        two = asyncio.create_task(waiting())
        await asyncio.sleep(0.01)  # let it queue for its turn (it cannot get one yet)
        assert not two.done()
        two.cancel()
        release.set()
        await one
        with pytest.raises(asyncio.CancelledError):
            await two
        async with units.unit_of_work() as uow:
            await uow.append("c", [Charged(cents=3)], expected_version=NO_STREAM)
        assert [s.stream_id async for s in store.streams()] == ["a", "c"]


@pytest.mark.postgres
async def test_postgres_unit_racing_a_concurrent_append_of_the_same_ids_fails_clearly(
    postgres_url: str,
) -> None:
    # The unit checks its ids before inserting them; a transaction holding the same ids
    # uncommitted passes that check and commits first: the unit's insert then collides.
    schema = dict(p.split("=", 1) for p in urlsplit(postgres_url).query.split("&"))["schema"]
    async with eventfold.connect(f"{postgres_url}&pool_max_size=4") as store:
        units = capability(store, SupportsUnitOfWork)
        run = uuid.uuid4().hex[:8]
        event = eventfold.NewEvent(Charged(cents=1), event_id=uuid.uuid4())
        holding = asyncio.Event()
        release = asyncio.Event()

        async def first() -> None:
            async with units.unit_of_work() as uow:
                await uow.append(f"a-{run}", [event], expected_version=ANY)
                holding.set()
                await asyncio.wait_for(release.wait(), 30)

        async def second() -> AppendResult:
            async with units.unit_of_work() as uow:
                return await uow.append(f"a-{run}", [event], expected_version=ANY)

        held = asyncio.create_task(first())
        await asyncio.wait_for(holding.wait(), 30)
        racing = asyncio.create_task(second())
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s"
        )
        for _ in range(3000):
            async with units.unit_of_work() as uow:
                if await uow.execute(waiting, (f"%{schema}%",)) == [(1,)]:
                    break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the second unit never waited for the first")
        release.set()
        await held
        with pytest.raises(eventfold.StoreError, match="concurrent append stored") as info:
            await racing
        assert info.value.__cause__ is not None
        # Run again, the unit is a retry.
        assert (await second()).retry
        assert [e.event_id async for e in store.read_stream(f"a-{run}")] == [event.event_id]


async def test_the_relay_waits_for_a_units_message_by_its_outbox_position(store_url: str) -> None:
    async with eventfold.connect(store_url) as store:
        units = capability(store, SupportsUnitOfWork)
        units.declare_destination("own")
        sink = InProcessSink()
        async with Relay(store, sink, destination="own", options=FAST) as relay:
            for n in range(3):
                async with units.unit_of_work() as uow:
                    first = uow.publish("own", b"first %d" % n)
                    mine = uow.publish("own", b"mine %d" % n)
                position = uow.outbox_position(mine)
                assert uow.outbox_position(first) < position
                await relay.wait_for(position, partition=OUTBOX)
                assert sink.messages[-1].message_id == str(mine)
                assert len(sink.messages) == 2 * n + 2


@pytest.mark.postgres
async def test_postgres_the_relay_waits_for_a_units_message_behind_an_older_transaction(
    postgres_url: str,
) -> None:
    async with eventfold.connect(postgres_url) as store:
        units = capability(store, SupportsUnitOfWork)
        box = capability(store, SupportsOutbox)
        units.declare_destination("own")
        sink = InProcessSink()
        async with (
            Relay(store, sink, destination="own", options=FAST) as relay,
            await psycopg.AsyncConnection.connect(postgres_base_url()) as older,
        ):
            # A write transaction elsewhere in the cluster, older than the unit, stays open:
            # readers (the relay, outbox_head) do not see the unit's commit meanwhile.
            await older.execute("SELECT pg_current_xact_id()")
            async with units.unit_of_work() as uow:
                mid = uow.publish("own", b"mine")
            position = uow.outbox_position(mid)
            assert await box.outbox_head("own") < position
            waiting = asyncio.create_task(relay.wait_for(position, partition=OUTBOX, timeout=30))
            await asyncio.sleep(0.3)
            assert not waiting.done()
            assert sink.messages == []
            await older.commit()
            assert await waiting >= position
            assert [m.message_id for m in sink.messages] == [str(mid)]
            assert sink.messages[0].headers["Eventfold-Position"] == str(position)
