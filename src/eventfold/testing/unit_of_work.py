"""The conformance suites of units of work and the outbox (`eventfold.store.
SupportsUnitOfWork`, `eventfold.store.SupportsOutbox`).

Subclass `UnitOfWorkConformance` (appends and outbox messages; any backend) or
`SQLUnitOfWorkConformance` (also the caller's own SQL; SQL backends) in a test module
and provide a ``store`` fixture that yields an open, empty store. The SQL tests create
their own tables (names unique per test). Async tests need pytest-asyncio with
``asyncio_mode = "auto"``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from .._events import Event, NewEvent, RecordedEvent
from .._position import ANY, NO_STREAM, START, STREAM_EXISTS, Position
from ..errors import (
    ConfigurationError,
    DuplicateEventId,
    EventfoldError,
    InvalidInput,
    StoreError,
    UnknownDestination,
    WrongExpectedVersion,
)
from ..store.ports import (
    HookOrder,
    HookTransaction,
    OutboxMessage,
    SupportsOutbox,
    SupportsTransactionHooks,
    SupportsUnitOfWork,
    TransactionParticipant,
    UnitOfWork,
    capability,
)
from ..store.protocol import EventStore
from ..write import CommandHandler, Decider, HandlerOptions
from .conformance import settle

__all__ = ["SQLUnitOfWorkConformance", "UnitOfWorkConformance"]


class Charged(Event):
    """The suite's event."""

    __event_type__ = "conformance.Charged"
    cents: int


class Invoice(msgspec.Struct):
    """A payload the suite publishes."""

    number: int
    lines: list[str]


class Charge(msgspec.Struct):
    """The suite's command."""

    cents: int


def _decide(command: Charge, state: int) -> list[Charged]:
    return [Charged(cents=command.cents)]


def _evolve(state: int, event: Charged) -> int:
    return state + event.cents


CHARGES: Decider[Charge, int, Charged] = Decider(initial_state=0, evolve=_evolve, decide=_decide)


class Boom(Exception):
    """What the suite's blocks raise to abandon a unit."""


class Refused(EventfoldError):
    """What the suite's participant raises to refuse an append."""


def units(store: EventStore) -> SupportsUnitOfWork:
    return capability(store, SupportsUnitOfWork)


def outbox(store: EventStore) -> SupportsOutbox:
    return capability(store, SupportsOutbox)


async def messages(
    store: EventStore, count: int, destination: str | None = None, wait: float = 30.0
) -> list[OutboxMessage]:
    """The outbox's messages once at least ``count`` are readable (bounded wait: on
    PostgreSQL a message is readable once every older transaction has finished)."""
    box = outbox(store)
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        found = await box.read_outbox(START, 1000, destination=destination)
        if len(found) >= count:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{count} outbox messages not readable after {wait} s: {found}")
        await asyncio.sleep(0.01)


async def events_of(store: EventStore, stream_id: str) -> list[int]:
    return [e.data.cents async for e in store.read_stream(stream_id)]


async def empty_outbox(store: EventStore, destination: str) -> None:
    """Assert no message of ``destination`` is stored, committed or about to be (a
    marker unit committed after it must be the first readable message)."""
    async with units(store).unit_of_work() as uow:
        uow.publish(destination, b"marker")
    found = await messages(store, 1, destination)
    assert [m.payload for m in found] == [b"marker"], found


class UnitOfWorkConformance:
    """What every store with units of work does (no SQL needed)."""

    @pytest.fixture
    def dest(self, store: EventStore) -> str:
        name = f"d-{uuid.uuid4().hex[:12]}"
        units(store).declare_destination(name)
        return name

    async def test_commits_appends_and_messages_together(
        self, store: EventStore, dest: str
    ) -> None:
        run = uuid.uuid4().hex[:8]
        given = uuid.uuid4()
        async with units(store).unit_of_work(
            correlation_id="corr-1", causation_id=uuid.UUID(int=7), traceparent="00-ab-cd-01"
        ) as uow:
            first = await uow.append(f"a-{run}", [Charged(cents=1)], expected_version=NO_STREAM)
            second = await uow.append(
                f"b-{run}", [Charged(cents=2), Charged(cents=3)], expected_version=NO_STREAM
            )
            mid = uow.publish(dest, Invoice(1, ["x"]), key="k-1", headers={"tenant": "t1"})
            own = uow.publish(dest, b"raw", message_id=given)
            text = uow.publish(dest, "h\u00e9", headers={"correlation_id": "mine"})
        assert (first.version, second.version) == (1, 2)
        assert own == given
        assert isinstance(mid, uuid.UUID)
        await settle(store, second.position)
        assert await events_of(store, f"a-{run}") == [1]
        assert await events_of(store, f"b-{run}") == [2, 3]
        found = await messages(store, 3, dest)
        assert [m.message_id for m in found] == [mid.bytes, given.bytes, text.bytes]
        assert [m.payload for m in found] == [
            b'{"number":1,"lines":["x"]}',
            b"raw",
            "h\u00e9".encode(),
        ]
        assert [m.key for m in found] == ["k-1", None, None]
        assert {m.destination for m in found} == {dest}
        assert found[0].headers == {
            "correlation_id": "corr-1",
            "causation_id": str(uuid.UUID(int=7)),
            "traceparent": "00-ab-cd-01",
            "tenant": "t1",
        }
        assert found[2].headers["correlation_id"] == "mine"
        positions = [m.position for m in found]
        assert positions == sorted(positions)
        assert len(set(positions)) == 3
        assert await outbox(store).outbox_head(dest) == positions[-1]
        assert found[0].recorded_us > 0

    async def test_a_unit_tells_the_outbox_positions_of_its_messages(
        self, store: EventStore, dest: str
    ) -> None:
        run = uuid.uuid4().hex[:8]
        again = uuid.uuid4()
        async with units(store).unit_of_work() as uow:
            first = uow.publish(dest, b"one")
            assert uow.publish(dest, b"two", message_id=again) == again
            await uow.append(f"a-{run}", [Charged(cents=1)], expected_version=NO_STREAM)
            uow.publish(dest, b"three", message_id=again)
            with pytest.raises(StoreError, match="after the unit's `async with` block"):
                uow.outbox_position(first)
        found = await messages(store, 3, dest)
        assert [m.payload for m in found] == [b"one", b"two", b"three"]
        assert uow.outbox_position(first) == found[0].position
        assert uow.outbox_position(again) == found[2].position  # an id sent twice: the later
        with pytest.raises(InvalidInput, match="not published in this unit"):
            uow.outbox_position(uuid.uuid4())
        with pytest.raises(InvalidInput, match=r"uuid\.UUID"):
            uow.outbox_position(str(first))  # type: ignore[arg-type]

        async with units(store).unit_of_work() as later:
            other = later.publish(dest, b"four")
        found = await messages(store, 4, dest)
        assert later.outbox_position(other) == found[3].position > found[2].position
        assert await outbox(store).read_outbox(found[2].position, 10, destination=dest) == [
            found[3]
        ]

    async def test_a_rolled_back_unit_has_no_outbox_positions(
        self, store: EventStore, dest: str
    ) -> None:
        run = uuid.uuid4().hex[:8]
        kept: list[tuple[UnitOfWork, uuid.UUID]] = []

        async def failing() -> None:
            async with units(store).unit_of_work() as uow:
                kept.append((uow, uow.publish(dest, b"lost")))
                raise Boom

        async def stale() -> None:
            async with units(store).unit_of_work() as uow:
                kept.append((uow, uow.publish(dest, b"lost too")))
                await uow.append(f"b-{run}", [Charged(cents=2)], expected_version=NO_STREAM)

        with pytest.raises(Boom):
            await failing()
        await store.append(f"b-{run}", [Charged(cents=9)], expected_version=NO_STREAM)
        with pytest.raises(WrongExpectedVersion):
            await stale()
        assert len(kept) == 2
        for uow, mid in kept:
            with pytest.raises(StoreError, match="rolled back"):
                uow.outbox_position(mid)
        async with units(store).unit_of_work() as silent:
            await silent.append(f"c-{run}", [Charged(cents=3)], expected_version=NO_STREAM)
        with pytest.raises(InvalidInput, match="not published in this unit"):
            silent.outbox_position(kept[0][1])
        await empty_outbox(store, dest)

    async def test_a_conflict_on_a_later_append_rolls_everything_back(
        self, store: EventStore, dest: str
    ) -> None:
        run = uuid.uuid4().hex[:8]
        taken = await store.append(f"b-{run}", [Charged(cents=9)], expected_version=NO_STREAM)

        async def attempt() -> None:
            async with units(store).unit_of_work() as uow:
                await uow.append(f"a-{run}", [Charged(cents=1)], expected_version=NO_STREAM)
                uow.publish(dest, b"lost")
                await uow.append(f"b-{run}", [Charged(cents=2)], expected_version=NO_STREAM)

        with pytest.raises(WrongExpectedVersion):
            await attempt()
        await settle(store, taken.position)
        assert await events_of(store, f"a-{run}") == []
        assert await events_of(store, f"b-{run}") == [9]
        await empty_outbox(store, dest)

    async def test_an_exception_in_the_block_rolls_everything_back(
        self, store: EventStore, dest: str
    ) -> None:
        run = uuid.uuid4().hex[:8]

        async def attempt() -> None:
            async with units(store).unit_of_work() as uow:
                await uow.append(f"a-{run}", [Charged(cents=1)], expected_version=NO_STREAM)
                uow.publish(dest, b"lost")
                raise Boom

        with pytest.raises(Boom):
            await attempt()
        assert await events_of(store, f"a-{run}") == []
        await empty_outbox(store, dest)

    async def test_an_undeclared_destination_fails_at_publish_and_nothing_is_stored(
        self, store: EventStore, dest: str
    ) -> None:
        run = uuid.uuid4().hex[:8]

        async def attempt() -> None:
            async with units(store).unit_of_work() as uow:
                await uow.append(f"a-{run}", [Charged(cents=1)], expected_version=NO_STREAM)
                uow.publish(dest, b"lost")
                uow.publish("nowhere", b"x")

        with pytest.raises(UnknownDestination, match=f"'nowhere'.*declared: .*{dest}") as info:
            await attempt()
        assert isinstance(info.value, InvalidInput)
        assert dest in info.value.declared
        assert await events_of(store, f"a-{run}") == []
        await empty_outbox(store, dest)

    async def test_a_payload_that_is_not_json_fails_at_publish_and_nothing_is_stored(
        self, store: EventStore, dest: str
    ) -> None:
        run = uuid.uuid4().hex[:8]

        async def attempt() -> None:
            async with units(store).unit_of_work() as uow:
                await uow.append(f"a-{run}", [Charged(cents=1)], expected_version=NO_STREAM)
                uow.publish(dest, b"lost")
                uow.publish(dest, object())

        with pytest.raises(InvalidInput, match="payload of type object cannot be encoded"):
            await attempt()
        assert await events_of(store, f"a-{run}") == []
        await empty_outbox(store, dest)

    async def test_a_retry_of_stored_events_returns_their_result_and_stores_nothing(
        self, store: EventStore, dest: str
    ) -> None:
        run = uuid.uuid4().hex[:8]
        batch = [NewEvent(Charged(cents=n), event_id=uuid.uuid4()) for n in (1, 2)]
        async with units(store).unit_of_work() as uow:
            first = await uow.append(f"a-{run}", batch, expected_version=NO_STREAM)
        # The same unit run again (its caller did not learn that it committed).
        async with units(store).unit_of_work() as uow:
            again = await uow.append(f"a-{run}", batch, expected_version=NO_STREAM)
            other = await uow.append(f"b-{run}", [Charged(cents=3)], expected_version=NO_STREAM)
            uow.publish(dest, b"sent")
        assert again == first
        assert (first.retry, again.retry) == (False, True)
        await settle(store, other.position)
        assert await events_of(store, f"a-{run}") == [1, 2]
        assert await events_of(store, f"b-{run}") == [3]
        assert [m.payload for m in await messages(store, 1, dest)] == [b"sent"]
        # Still a retry once the stream has moved on.
        later = await store.append(f"a-{run}", [Charged(cents=4)], expected_version=2)
        async with units(store).unit_of_work() as uow:
            again = await uow.append(f"a-{run}", batch, expected_version=NO_STREAM)
        assert again == first
        assert again.retry
        await settle(store, later.position)
        assert await events_of(store, f"a-{run}") == [1, 2, 4]

    async def test_stored_ids_in_an_append_that_is_not_a_retry_are_refused(
        self, store: EventStore, dest: str
    ) -> None:
        run = uuid.uuid4().hex[:8]
        batch = [NewEvent(Charged(cents=n), event_id=uuid.uuid4()) for n in (1, 2)]
        await store.append(f"a-{run}", batch, expected_version=NO_STREAM)
        extra = NewEvent(Charged(cents=9), event_id=uuid.uuid4())
        changed = NewEvent(Charged(cents=5), event_id=batch[0].event_id)
        async with units(store).unit_of_work() as uow:
            for events, taken in (
                ([batch[1], extra], batch[1]),  # only some of them stored
                ([batch[1], batch[0]], batch[1]),  # in another order
                ([changed, batch[1]], batch[0]),  # one with other data
            ):
                with pytest.raises(DuplicateEventId) as info:
                    await uow.append(f"a-{run}", events, expected_version=NO_STREAM)
                assert info.value.event_id == taken.event_id
            # Nothing was appended: the unit goes on.
            other = await uow.append(f"b-{run}", [Charged(cents=3)], expected_version=NO_STREAM)
            uow.publish(dest, b"sent")
        await settle(store, other.position)
        assert await events_of(store, f"a-{run}") == [1, 2]
        assert await events_of(store, f"b-{run}") == [3]
        assert [m.payload for m in await messages(store, 1, dest)] == [b"sent"]

    async def test_a_retry_whose_expected_version_still_matches_is_a_retry(
        self, store: EventStore, dest: str
    ) -> None:
        run = uuid.uuid4().hex[:8]
        batch = [NewEvent(Charged(cents=n), event_id=uuid.uuid4()) for n in (1, 2)]
        first = await store.append(f"a-{run}", batch, expected_version=NO_STREAM)
        extra = NewEvent(Charged(cents=9), event_id=uuid.uuid4())
        changed = NewEvent(Charged(cents=5), event_id=batch[0].event_id)
        async with units(store).unit_of_work() as uow:
            for expected in (ANY, STREAM_EXISTS, 2):
                again = await uow.append(f"a-{run}", batch, expected_version=expected)
                assert (again, again.retry) == (first, True), expected
                for events, taken in (
                    ([batch[1], extra], batch[1]),
                    ([changed, batch[1]], batch[0]),
                ):
                    with pytest.raises(DuplicateEventId) as info:
                        await uow.append(f"a-{run}", events, expected_version=expected)
                    assert info.value.event_id == taken.event_id, expected
            # Nothing was appended: the unit goes on.
            more = await uow.append(f"a-{run}", [Charged(cents=3)], expected_version=2)
            assert more.version == 3
            other = await uow.append(f"b-{run}", [Charged(cents=4)], expected_version=NO_STREAM)
            uow.publish(dest, b"sent")
        await settle(store, other.position)
        assert await events_of(store, f"a-{run}") == [1, 2, 3]
        assert await events_of(store, f"b-{run}") == [4]
        assert [m.payload for m in await messages(store, 1, dest)] == [b"sent"]

    async def test_a_unit_sees_its_own_appends_so_a_repeat_is_a_retry(
        self, store: EventStore, dest: str
    ) -> None:
        run = uuid.uuid4().hex[:8]
        batch = [NewEvent(Charged(cents=n), event_id=uuid.uuid4()) for n in (1, 2)]
        extra = NewEvent(Charged(cents=9), event_id=uuid.uuid4())
        changed = NewEvent(Charged(cents=5), event_id=batch[0].event_id)
        async with units(store).unit_of_work() as uow:
            first = await uow.append(f"a-{run}", batch, expected_version=NO_STREAM)
            assert (first.version, first.retry) == (2, False)
            for expected in (NO_STREAM, ANY, STREAM_EXISTS, 2):
                again = await uow.append(f"a-{run}", batch, expected_version=expected)
                assert (again, again.retry) == (first, True), expected
                for events, taken in (
                    ([batch[1], extra], batch[1]),  # only some of them appended
                    ([batch[1], batch[0]], batch[1]),  # in another order
                    ([changed, batch[1]], batch[0]),  # one with other data
                ):
                    with pytest.raises(DuplicateEventId) as info:
                        await uow.append(f"a-{run}", events, expected_version=expected)
                    assert info.value.event_id == taken.event_id, expected
            # The repeats and refusals appended nothing: the stream is at 2, the unit goes on.
            with pytest.raises(WrongExpectedVersion, match="is at version 2"):
                await uow.append(f"a-{run}", [Charged(cents=7)], expected_version=1)
            more = await uow.append(f"a-{run}", [Charged(cents=3)], expected_version=2)
            assert more.version == 3
            other = await uow.append(f"b-{run}", [Charged(cents=4)], expected_version=NO_STREAM)
            uow.publish(dest, b"sent")
        await settle(store, other.position)
        assert await events_of(store, f"a-{run}") == [1, 2, 3]
        assert await events_of(store, f"b-{run}") == [4]
        assert [m.payload for m in await messages(store, 1, dest)] == [b"sent"]
        # Once committed, the same append is still a retry, with the same result.
        async with units(store).unit_of_work() as uow:
            again = await uow.append(f"a-{run}", batch, expected_version=NO_STREAM)
        assert (again.version, again.retry) == (2, True)

    async def test_bad_input_is_refused_with_what_to_do(self, store: EventStore, dest: str) -> None:
        with pytest.raises(InvalidInput, match="not a valid name"):
            units(store).declare_destination("has space")
        with pytest.raises(InvalidInput, match="not a valid name"):
            units(store).declare_destination("")
        with pytest.raises(InvalidInput, match="correlation_id"):
            units(store).unit_of_work(correlation_id="")
        run = uuid.uuid4().hex[:8]
        async with units(store).unit_of_work() as uow:
            await uow.append(f"a-{run}", [Charged(cents=1)], expected_version=NO_STREAM)
            with pytest.raises(InvalidInput, match="header"):
                uow.publish(dest, b"x", headers={"n": 1})  # type: ignore[dict-item]
            with pytest.raises(InvalidInput, match="key"):
                uow.publish(dest, b"x", key=5)  # type: ignore[arg-type]
            with pytest.raises(InvalidInput, match="message_id"):
                uow.publish(dest, b"x", message_id="abc")  # type: ignore[arg-type]
            kept = uow.publish(dest, b"kept")
        assert await events_of(store, f"a-{run}") == [1]
        found = await messages(store, 1, dest)
        assert [m.message_id for m in found] == [kept.bytes]
        with pytest.raises(InvalidInput, match="limit"):
            await outbox(store).read_outbox(START, -1)
        with pytest.raises(StoreError, match="over"):
            uow.publish(dest, b"late")
        with pytest.raises(StoreError, match="over"):
            await uow.append(f"a-{run}", [Charged(cents=2)], expected_version=1)
        assert dest in units(store).destinations

    async def test_two_units_on_one_stream_one_wins(self, store: EventStore, dest: str) -> None:
        run = uuid.uuid4().hex[:8]
        gate = asyncio.Event()

        async def unit(n: int) -> int:
            async with units(store).unit_of_work() as uow:
                await uow.append(f"a-{run}", [Charged(cents=n)], expected_version=NO_STREAM)
                uow.publish(dest, str(n))
                if n == 1:
                    gate.set()
                else:
                    await asyncio.wait_for(gate.wait(), 10)
            return n

        outcomes = await asyncio.gather(unit(1), unit(2), return_exceptions=True)
        won = [o for o in outcomes if isinstance(o, int)]
        lost = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(won) == 1, outcomes
        assert len(lost) == 1, outcomes
        assert isinstance(lost[0], WrongExpectedVersion)
        assert await events_of(store, f"a-{run}") == won
        found = await messages(store, 1, dest)
        assert [m.payload for m in found] == [str(won[0]).encode()]

    async def test_read_outbox_pages_filters_and_prunes(self, store: EventStore) -> None:
        one, two = f"p-{uuid.uuid4().hex[:8]}", f"q-{uuid.uuid4().hex[:8]}"
        units(store).declare_destination(one)
        units(store).declare_destination(two)
        for n in range(5):
            async with units(store).unit_of_work() as uow:
                uow.publish(one, str(n))
                uow.publish(two, str(n))
        box = outbox(store)
        mine = await messages(store, 5, one)
        assert [m.payload for m in mine] == [b"0", b"1", b"2", b"3", b"4"]
        page = await box.read_outbox(mine[1].position, 2, destination=one)
        assert [m.payload for m in page] == [b"2", b"3"]
        both = await box.read_outbox(mine[0].position, 1000)
        ours = [m for m in both if m.destination in (one, two)]
        assert [(m.destination, m.payload) for m in ours][:3] == [
            (two, b"0"),
            (one, b"1"),
            (two, b"1"),
        ]
        assert await box.outbox_head(one) == mine[-1].position
        assert await box.outbox_head(f"z-{uuid.uuid4().hex}") == START
        assert await units(store).prune_outbox(one, mine[2].position) == 3
        left = await box.read_outbox(START, 1000, destination=one)
        assert [m.payload for m in left] == [b"3", b"4"]
        assert len(await box.read_outbox(START, 1000, destination=two)) == 5

    async def test_a_command_handler_appends_inside_a_unit(
        self, store: EventStore, dest: str
    ) -> None:
        run = uuid.uuid4().hex[:8]
        handler = CommandHandler(store, CHARGES)
        async with units(store).unit_of_work() as uow:
            result = await handler.handle(f"a-{run}", Charge(5), unit_of_work=uow)
            uow.publish(dest, b"charged")
        assert (result.version, result.state) == (1, 5)
        assert await events_of(store, f"a-{run}") == [5]
        # A conflict is not retried inside a unit: it propagates and rolls it all back.
        stale = CommandHandler(store, CHARGES, options=HandlerOptions(cache_size=10))
        await stale.handle(f"a-{run}", Charge(2))  # cached at version 2
        other = await store.append(f"a-{run}", [Charged(cents=1)], expected_version=2)

        async def attempt() -> None:
            async with units(store).unit_of_work() as uow:
                await stale.handle(f"b-{run}", Charge(7), unit_of_work=uow)
                uow.publish(dest, b"lost")
                await stale.handle(f"a-{run}", Charge(6), unit_of_work=uow)

        with pytest.raises(WrongExpectedVersion):
            await attempt()
        await settle(store, other.position)
        assert await events_of(store, f"a-{run}") == [5, 2, 1]
        assert await events_of(store, f"b-{run}") == []
        found = await messages(store, 1, dest)
        assert [m.payload for m in found] == [b"charged"]


def _mark(uow: UnitOfWork | HookTransaction) -> str:
    return "?" if uow.paramstyle == "qmark" else "%s"


class _Recorder(TransactionParticipant):
    """An inline-projection-like participant: one row per event, refuses by prefix."""

    order = HookOrder.INLINE_PROJECTIONS

    def __init__(self, table: str, refuse: str | None = None) -> None:
        self.name = f"recorder-{table}"
        self.table = table
        self.refuse = refuse

    async def attach(self, tx: HookTransaction) -> None:
        await tx.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (stream TEXT, cents INT)")

    async def apply(self, tx: HookTransaction, events: Sequence[RecordedEvent]) -> None:
        m = _mark(tx)
        for e in events:
            if self.refuse is not None and e.stream_id.startswith(self.refuse):
                raise Refused(f"{self.name} refuses {e.stream_id}")
            await tx.execute(
                f"INSERT INTO {self.table} VALUES ({m}, {m})", (e.stream_id, e.data.cents)
            )


class SQLUnitOfWorkConformance(UnitOfWorkConformance):
    """What a store with SQL units of work does besides: the caller's own statements."""

    @pytest.fixture
    async def table(self, store: EventStore) -> str:
        name = f"ef_uow_{uuid.uuid4().hex[:12]}"
        async with units(store).unit_of_work() as uow:
            await uow.execute(f"CREATE TABLE {name} (id TEXT PRIMARY KEY, n INT NOT NULL)")
        return name

    async def rows(self, store: EventStore, table: str) -> list[tuple[Any, ...]]:
        async with units(store).unit_of_work() as uow:
            return await uow.execute(f"SELECT id, n FROM {table} ORDER BY id")

    async def test_execute_reads_its_own_writes_and_commits_with_the_rest(
        self, store: EventStore, table: str, dest: str
    ) -> None:
        run = uuid.uuid4().hex[:8]
        async with units(store).unit_of_work() as uow:
            m = _mark(uow)
            assert await uow.execute(f"INSERT INTO {table} VALUES ({m}, {m})", ("x", 1)) == []
            upsert = (
                f"INSERT INTO {table} VALUES ({m}, {m}) "
                f"ON CONFLICT (id) DO UPDATE SET n = {table}.n + excluded.n"
            )
            await uow.execute(upsert, ("x", 2))
            assert await uow.execute(f"SELECT n FROM {table} WHERE id = {m}", ("x",)) == [(3,)]
            result = await uow.append(f"a-{run}", [Charged(cents=3)], expected_version=NO_STREAM)
            uow.publish(dest, b"done")
        await settle(store, result.position)
        assert await self.rows(store, table) == [("x", 3)]
        assert await events_of(store, f"a-{run}") == [3]
        assert len(await messages(store, 1, dest)) == 1

    async def test_repeated_and_refused_appends_keep_the_units_statements(
        self, store: EventStore, table: str, dest: str
    ) -> None:
        run = uuid.uuid4().hex[:8]
        batch = [NewEvent(Charged(cents=n), event_id=uuid.uuid4()) for n in (1, 2)]
        stored = NewEvent(Charged(cents=8), event_id=uuid.uuid4())
        await store.append(f"s-{run}", [stored], expected_version=NO_STREAM)
        async with units(store).unit_of_work() as uow:
            m = _mark(uow)
            await uow.execute(f"INSERT INTO {table} VALUES ({m}, {m})", ("x", 1))
            first = await uow.append(f"a-{run}", batch, expected_version=ANY)
            await uow.write(f"INSERT INTO {table} VALUES ({m}, {m})", ("y", 2))
            assert (await uow.append(f"a-{run}", batch, expected_version=ANY)).retry
            assert (await uow.append(f"s-{run}", [stored], expected_version=ANY)).retry
            await uow.write(f"INSERT INTO {table} VALUES ({m}, {m})", ("z", 3))
            with pytest.raises(DuplicateEventId):
                await uow.append(f"a-{run}", [batch[1], stored], expected_version=ANY)
            with pytest.raises(DuplicateEventId):
                await uow.append(f"s-{run}", [stored, batch[0]], expected_version=1)
            # The statements before the refusals are there, and more can follow.
            assert await uow.execute(f"SELECT count(*) FROM {table}") == [(3,)]
            await uow.write(f"INSERT INTO {table} VALUES ({m}, {m})", ("w", 4))
            uow.publish(dest, b"sent")
        await settle(store, first.position)
        assert await self.rows(store, table) == [("w", 4), ("x", 1), ("y", 2), ("z", 3)]
        assert await events_of(store, f"a-{run}") == [1, 2]
        assert await events_of(store, f"s-{run}") == [8]
        assert [m.payload for m in await messages(store, 1, dest)] == [b"sent"]

    async def test_a_failing_statement_rolls_everything_back(
        self, store: EventStore, table: str, dest: str
    ) -> None:
        run = uuid.uuid4().hex[:8]

        async def attempt() -> None:
            async with units(store).unit_of_work() as uow:
                m = _mark(uow)
                await uow.execute(f"INSERT INTO {table} VALUES ({m}, {m})", ("x", 1))
                await uow.append(f"a-{run}", [Charged(cents=1)], expected_version=NO_STREAM)
                uow.publish(dest, b"lost")
                await uow.execute(f"INSERT INTO {table} VALUES ({m}, {m})", ("x", 2))  # dup key

        with pytest.raises(StoreError, match="statement failed") as info:
            await attempt()
        assert info.value.__cause__ is not None
        assert await self.rows(store, table) == []
        assert await events_of(store, f"a-{run}") == []
        await empty_outbox(store, dest)

    async def test_write_runs_in_order_with_execute_and_commits_with_the_rest(
        self, store: EventStore, table: str, dest: str
    ) -> None:
        run = uuid.uuid4().hex[:8]
        async with units(store).unit_of_work() as uow:
            m = _mark(uow)
            upsert = (
                f"INSERT INTO {table} VALUES ({m}, {m}) "
                f"ON CONFLICT (id) DO UPDATE SET n = {table}.n + excluded.n"
            )
            await uow.write(f"INSERT INTO {table} VALUES ({m}, {m})", ("x", 1))
            await uow.write(upsert, ("x", 2))
            await uow.write(upsert, ("y", 10))
            assert await uow.execute(f"SELECT n FROM {table} WHERE id = {m}", ("x",)) == [(3,)]
            await uow.write(upsert, ("x", 4))
            result = await uow.append(f"a-{run}", [Charged(cents=3)], expected_version=NO_STREAM)
            await uow.write(upsert, ("y", 20))  # after the last append: goes with the COMMIT
            uow.publish(dest, b"done")
        await settle(store, result.position)
        assert await self.rows(store, table) == [("x", 7), ("y", 30)]
        assert await events_of(store, f"a-{run}") == [3]
        assert len(await messages(store, 1, dest)) == 1

    async def test_a_unit_of_writes_only_commits(self, store: EventStore, table: str) -> None:
        async with units(store).unit_of_work() as uow:
            m = _mark(uow)
            await uow.write(f"INSERT INTO {table} VALUES ({m}, {m})", ("only", 1))
            await uow.write(f"UPDATE {table} SET n = n + 1 WHERE id = {m}", ("only",))
        assert await self.rows(store, table) == [("only", 2)]

    async def test_a_failing_write_surfaces_by_the_next_statement_and_rolls_back(
        self, store: EventStore, table: str, dest: str
    ) -> None:
        run = uuid.uuid4().hex[:8]
        reached: list[str] = []

        async def attempt() -> None:
            async with units(store).unit_of_work() as uow:
                m = _mark(uow)
                await uow.write(f"INSERT INTO {table} VALUES ({m}, {m})", ("x", 1))
                await uow.append(f"a-{run}", [Charged(cents=1)], expected_version=NO_STREAM)
                uow.publish(dest, b"lost")
                # A duplicate key: queued on PostgreSQL, surfacing at the next statement.
                await uow.write(f"INSERT INTO {table} (id, n) VALUES ({m}, {m})", ("x", 2))
                await uow.execute(f"SELECT n FROM {table}")
                reached.append("after")

        with pytest.raises(StoreError, match="statement") as info:
            await attempt()
        assert "(id, n)" in str(info.value)  # it names the statement that failed
        assert info.value.__cause__ is not None
        assert reached == []
        assert await self.rows(store, table) == []
        assert await events_of(store, f"a-{run}") == []
        await empty_outbox(store, dest)

    async def test_a_failing_write_before_an_append_fails_the_write_not_the_append(
        self, store: EventStore, table: str
    ) -> None:
        run = uuid.uuid4().hex[:8]

        async def attempt() -> None:
            async with units(store).unit_of_work() as uow:
                m = _mark(uow)
                await uow.write(f"INSERT INTO {table} VALUES ({m}, {m})", ("x", 1))
                await uow.write(f"INSERT INTO {table} (id, n) VALUES ({m}, {m})", ("x", 2))
                await uow.append(f"a-{run}", [Charged(cents=1)], expected_version=NO_STREAM)

        with pytest.raises(StoreError, match="statement") as info:
            await attempt()
        assert not isinstance(info.value, WrongExpectedVersion)
        assert "(id, n)" in str(info.value)
        assert await self.rows(store, table) == []
        assert await events_of(store, f"a-{run}") == []
        # The stream is untouched: a new unit appends at the start.
        async with units(store).unit_of_work() as uow:
            result = await uow.append(f"a-{run}", [Charged(cents=2)], expected_version=NO_STREAM)
        assert result.version == 1

    async def test_a_failing_last_write_fails_the_commit_and_rolls_back(
        self, store: EventStore, table: str, dest: str
    ) -> None:
        run = uuid.uuid4().hex[:8]

        async def attempt() -> None:
            async with units(store).unit_of_work() as uow:
                m = _mark(uow)
                await uow.write(f"INSERT INTO {table} VALUES ({m}, {m})", ("x", 1))
                await uow.append(f"a-{run}", [Charged(cents=1)], expected_version=NO_STREAM)
                uow.publish(dest, b"lost")
                await uow.write(f"INSERT INTO {table} (id, n) VALUES ({m}, {m})", ("x", 2))

        with pytest.raises(StoreError, match="statement") as info:
            await attempt()
        assert "(id, n)" in str(info.value)
        assert await self.rows(store, table) == []
        assert await events_of(store, f"a-{run}") == []
        await empty_outbox(store, dest)

    async def test_a_conflict_after_writes_rolls_them_back(
        self, store: EventStore, table: str
    ) -> None:
        run = uuid.uuid4().hex[:8]
        await store.append(f"a-{run}", [Charged(cents=1)], expected_version=NO_STREAM)

        async def attempt() -> None:
            async with units(store).unit_of_work() as uow:
                m = _mark(uow)
                await uow.write(f"INSERT INTO {table} VALUES ({m}, {m})", ("x", 1))
                await uow.append(f"a-{run}", [Charged(cents=2)], expected_version=NO_STREAM)

        with pytest.raises(WrongExpectedVersion):
            await attempt()
        assert await self.rows(store, table) == []
        assert await events_of(store, f"a-{run}") == [1]

    async def test_write_refuses_ending_the_transaction(
        self, store: EventStore, table: str
    ) -> None:
        async with units(store).unit_of_work() as uow:
            m = _mark(uow)
            await uow.write(f"INSERT INTO {table} VALUES ({m}, {m})", ("kept", 1))
            for statement in ("COMMIT", "rollback", "BEGIN"):
                with pytest.raises(InvalidInput, match="inside its own transaction"):
                    await uow.write(statement)
        assert await self.rows(store, table) == [("kept", 1)]

    async def test_the_caller_cannot_end_the_transaction(
        self, store: EventStore, table: str
    ) -> None:
        async with units(store).unit_of_work() as uow:
            m = _mark(uow)
            await uow.execute(f"INSERT INTO {table} VALUES ({m}, {m})", ("kept", 1))
            for statement in ("COMMIT", "rollback", "BEGIN", "SAVEPOINT x"):
                with pytest.raises(InvalidInput, match="inside its own transaction"):
                    await uow.execute(statement)
        assert await self.rows(store, table) == [("kept", 1)]

    async def test_participants_run_in_the_unit_and_a_refusal_rolls_it_back(
        self, store: EventStore, table: str, dest: str
    ) -> None:
        run = uuid.uuid4().hex[:8]
        seen = f"ef_uow_seen_{uuid.uuid4().hex[:12]}"
        hooks = capability(store, SupportsTransactionHooks).transaction_hooks
        recorder = _Recorder(seen, refuse=f"no-{run}")
        kept = f"k-{run}"
        units(store).declare_destination(kept)
        await hooks.add(recorder)
        try:
            async with units(store).unit_of_work() as uow:
                m = _mark(uow)
                await uow.execute(f"INSERT INTO {table} VALUES ({m}, {m})", ("x", 1))
                await uow.append(f"a-{run}", [Charged(cents=4)], expected_version=NO_STREAM)
                sent = uow.publish(kept, b"kept")
                await uow.append(f"b-{run}", [Charged(cents=5)], expected_version=NO_STREAM)
            [message] = await messages(store, 1, kept)
            assert uow.outbox_position(sent) == message.position

            async def attempt() -> None:
                async with units(store).unit_of_work() as uow:
                    await uow.execute(f"INSERT INTO {table} VALUES ({m}, {m})", ("y", 1))
                    await uow.append(f"c-{run}", [Charged(cents=6)], expected_version=NO_STREAM)
                    uow.publish(dest, b"lost")
                    await uow.append(f"no-{run}", [Charged(cents=7)], expected_version=NO_STREAM)

            with pytest.raises(Refused):
                await attempt()
            async with units(store).unit_of_work() as uow:
                got = await uow.execute(f"SELECT stream, cents FROM {seen} ORDER BY stream")
        finally:
            await hooks.remove(recorder.name)
        assert got == [(f"a-{run}", 4), (f"b-{run}", 5)]
        assert await self.rows(store, table) == [("x", 1)]
        assert await events_of(store, f"c-{run}") == []
        assert await events_of(store, f"no-{run}") == []
        await empty_outbox(store, dest)

    async def test_writes_commit_with_participants_and_a_failing_one_rolls_back(
        self, store: EventStore, table: str
    ) -> None:
        run = uuid.uuid4().hex[:8]
        seen = f"ef_uow_seen_{uuid.uuid4().hex[:12]}"
        hooks = capability(store, SupportsTransactionHooks).transaction_hooks
        recorder = _Recorder(seen)
        await hooks.add(recorder)
        try:
            async with units(store).unit_of_work() as uow:
                m = _mark(uow)
                await uow.write(f"INSERT INTO {table} VALUES ({m}, {m})", ("x", 1))
                await uow.append(f"a-{run}", [Charged(cents=4)], expected_version=NO_STREAM)
                await uow.write(f"INSERT INTO {table} VALUES ({m}, {m})", ("y", 2))

            async def attempt() -> None:
                async with units(store).unit_of_work() as uow:
                    m = _mark(uow)
                    await uow.write(f"INSERT INTO {table} VALUES ({m}, {m})", ("z", 3))
                    await uow.append(f"b-{run}", [Charged(cents=5)], expected_version=NO_STREAM)
                    await uow.write(f"INSERT INTO {table} (id, n) VALUES ({m}, {m})", ("x", 9))

            with pytest.raises(StoreError, match="statement") as info:
                await attempt()
            assert "(id, n)" in str(info.value)
            async with units(store).unit_of_work() as uow:
                got = await uow.execute(f"SELECT stream, cents FROM {seen} ORDER BY stream")
        finally:
            await hooks.remove(recorder.name)
        assert got == [(f"a-{run}", 4)]
        assert await self.rows(store, table) == [("x", 1), ("y", 2)]
        assert await events_of(store, f"a-{run}") == [4]
        assert await events_of(store, f"b-{run}") == []

    async def test_many_concurrent_units_all_commit(
        self, store: EventStore, table: str, dest: str
    ) -> None:
        run = uuid.uuid4().hex[:8]

        async def unit(n: int) -> Position:
            async with units(store).unit_of_work() as uow:
                m = _mark(uow)
                upsert = (
                    f"INSERT INTO {table} VALUES ({m}, 1) "
                    f"ON CONFLICT (id) DO UPDATE SET n = {table}.n + 1"
                )
                await uow.execute(upsert, (f"k{n % 4}",))
                result = await uow.append(f"s{n}-{run}", [Charged(cents=n)], expected_version=ANY)
                uow.publish(dest, str(n), key=f"k{n % 4}")
            return result.position

        positions = await asyncio.gather(*(unit(n) for n in range(40)))
        await settle(store, max(positions))
        assert sorted(await self.rows(store, table)) == [(f"k{i}", 10) for i in range(4)]
        found = await messages(store, 40, dest)
        assert sorted(int(m.payload) for m in found) == list(range(40))
        for n in (0, 17, 39):
            assert await events_of(store, f"s{n}-{run}") == [n]


async def check_no_sql(store: EventStore) -> None:
    """A backend without SQL refuses `UnitOfWork.execute` with what to do."""
    async with units(store).unit_of_work() as uow:
        with pytest.raises(ConfigurationError, match="no SQL"):
            await uow.execute("SELECT 1")
        with pytest.raises(ConfigurationError, match="no SQL"):
            await uow.write("DELETE FROM nothing")
