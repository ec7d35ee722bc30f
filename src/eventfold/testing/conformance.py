"""The conformance suite every event store backend passes.

Subclass `EventStoreConformance` in a test module and provide a ``store`` fixture that
yields an open, empty store; override ``other_store`` to yield a second handle on the same
database (a second connection or pool), so races run between real connections. Backends
that several processes can share also subclass `SharedStoreConformance` and provide
``store_url``. Async tests need pytest-asyncio with ``asyncio_mode = "auto"``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import random
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

import eventfold
from eventfold import (
    ANY,
    NO_STREAM,
    START,
    STREAM_EXISTS,
    AppendResult,
    Event,
    EventStore,
    NewEvent,
    Position,
    RecordedEvent,
)

from ._conformance_edges import EdgeConformance

__all__ = ["EventStoreConformance", "SharedStoreConformance"]


class Placed(Event):
    """An order placed (the suite's main event type)."""

    __event_type__ = "conformance.Placed"
    order_id: str
    amount: int


class Shipped(Event):
    """An order shipped."""

    __event_type__ = "conformance.Shipped"
    order_id: str


class Note(Event):
    """Free text, to make events of a chosen size."""

    __event_type__ = "conformance.Note"
    text: str


class Anything(Event):
    """Holds any value, to hand the encoder something it cannot encode."""

    __event_type__ = "conformance.Anything"
    value: Any


async def collect(events: AsyncIterator[RecordedEvent]) -> list[RecordedEvent]:
    """Drain an async iterator of events into a list."""
    return [e async for e in events]


async def settle(store: EventStore, position: Position, wait: float = 30.0) -> None:
    """Wait until ``position`` is readable in the global log.

    On PostgreSQL an event becomes readable by `read_all` only once every older write
    transaction in the cluster has finished, so a test that reads the log right after
    appending waits for its own last write first (as a reader that needs its own writes
    does).
    """
    deadline = asyncio.get_running_loop().time() + wait
    while await store.head() < position:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"position {position} was not readable after {wait} s")
        await asyncio.sleep(0.01)


def placed(n: int, prefix: str = "o") -> list[Event]:
    """``n`` distinct `Placed` events."""
    return [Placed(order_id=f"{prefix}{i}", amount=i) for i in range(n)]


async def _last_position(store: EventStore, stream_id: str) -> Position:
    (last,) = await collect(store.read_stream(stream_id, backwards=True, limit=1))
    return last.position


class EventStoreConformance(EdgeConformance):
    """Behaviour every `EventStore` backend shares."""

    @pytest.fixture
    def other_store(self, store: EventStore) -> EventStore:
        """A second handle on the same database; the same handle unless overridden."""
        return store

    # -- expected versions ---------------------------------------------------------------

    async def test_append_to_new_stream_with_no_stream(self, store: EventStore) -> None:
        result = await store.append("order-1", placed(3), expected_version=NO_STREAM)
        assert result.version == 3
        events = await collect(store.read_stream("order-1"))
        assert [e.version for e in events] == [1, 2, 3]
        assert [e.data for e in events] == placed(3)
        assert all(isinstance(e.data, Placed) for e in events)
        assert events[-1].position == result.position
        assert await store.stream_version("order-1") == 3

    async def test_no_stream_on_existing_stream_fails(self, store: EventStore) -> None:
        await store.append("order-1", placed(2), expected_version=NO_STREAM)
        with pytest.raises(eventfold.WrongExpectedVersion) as info:
            await store.append("order-1", placed(1), expected_version=NO_STREAM)
        assert (info.value.stream_id, info.value.expected, info.value.actual) == (
            "order-1",
            NO_STREAM,
            2,
        )
        assert await store.stream_version("order-1") == 2

    async def test_zero_means_no_events_yet(self, store: EventStore) -> None:
        await store.append("order-1", placed(1), expected_version=0)
        with pytest.raises(eventfold.WrongExpectedVersion) as info:
            await store.append("order-1", placed(1), expected_version=0)
        assert info.value.actual == 1

    async def test_exact_version(self, store: EventStore) -> None:
        r1 = await store.append("order-1", placed(2), expected_version=NO_STREAM)
        r2 = await store.append("order-1", placed(1, "p"), expected_version=r1.version)
        assert r2.version == 3
        assert r2.position > r1.position
        for wrong in (1, 2, 4, 99):
            with pytest.raises(eventfold.WrongExpectedVersion) as info:
                await store.append("order-1", placed(1, "q"), expected_version=wrong)
            assert (info.value.expected, info.value.actual) == (wrong, 3)
        assert await store.stream_version("order-1") == 3

    async def test_exact_version_on_missing_stream(self, store: EventStore) -> None:
        with pytest.raises(eventfold.WrongExpectedVersion) as info:
            await store.append("order-9", placed(1), expected_version=5)
        assert (info.value.expected, info.value.actual) == (5, 0)
        assert await store.stream_version("order-9") == 0

    async def test_stream_exists(self, store: EventStore) -> None:
        with pytest.raises(eventfold.WrongExpectedVersion) as info:
            await store.append("order-1", placed(1), expected_version=STREAM_EXISTS)
        assert (info.value.expected, info.value.actual) == (STREAM_EXISTS, 0)
        await store.append("order-1", placed(1), expected_version=NO_STREAM)
        result = await store.append("order-1", placed(2, "p"), expected_version=STREAM_EXISTS)
        assert result.version == 3

    async def test_any(self, store: EventStore) -> None:
        r1 = await store.append("order-1", placed(1), expected_version=ANY)
        r2 = await store.append("order-1", placed(2, "p"), expected_version=ANY)
        assert (r1.version, r2.version) == (1, 3)
        assert [e.version for e in await collect(store.read_stream("order-1"))] == [1, 2, 3]

    async def test_concurrent_appends_at_one_version_exactly_one_wins(
        self, store: EventStore, other_store: EventStore
    ) -> None:
        await store.append("order-1", placed(1), expected_version=NO_STREAM)
        stores = [store, other_store] * 5
        results = await asyncio.gather(
            *(
                s.append("order-1", placed(2, f"w{i}-"), expected_version=1)
                for i, s in enumerate(stores)
            ),
            return_exceptions=True,
        )
        wins = [r for r in results if isinstance(r, eventfold.AppendResult)]
        losses = [r for r in results if isinstance(r, eventfold.WrongExpectedVersion)]
        assert len(wins) == 1, results
        assert len(losses) == len(stores) - 1, results
        assert all(loss.actual == 3 and loss.expected == 1 for loss in losses)
        assert wins[0].version == 3
        assert await store.stream_version("order-1") == 3

    async def test_concurrent_creates_exactly_one_wins(
        self, store: EventStore, other_store: EventStore
    ) -> None:
        results = await asyncio.gather(
            *(
                s.append("order-1", placed(1, f"w{i}-"), expected_version=NO_STREAM)
                for i, s in enumerate([store, other_store] * 4)
            ),
            return_exceptions=True,
        )
        assert sum(isinstance(r, eventfold.AppendResult) for r in results) == 1, results
        assert sum(isinstance(r, eventfold.WrongExpectedVersion) for r in results) == 7

    async def test_concurrent_any_appends_all_land_without_gaps(
        self, store: EventStore, other_store: EventStore
    ) -> None:
        await asyncio.gather(
            *(
                s.append("order-1", placed(2, f"w{i}-"), expected_version=ANY)
                for i, s in enumerate([store, other_store] * 10)
            )
        )
        events = await collect(store.read_stream("order-1"))
        assert [e.version for e in events] == list(range(1, 41))

    # -- all or nothing ------------------------------------------------------------------

    async def test_failed_multi_event_append_stores_nothing(self, store: EventStore) -> None:
        first = await store.append("order-1", placed(1), expected_version=NO_STREAM)
        await settle(store, first.position)
        head = await store.head()
        with pytest.raises(eventfold.WrongExpectedVersion):
            await store.append("order-1", placed(5, "x"), expected_version=0)
        big = Note(text="x" * (eventfold.DEFAULT_MAX_EVENT_SIZE + 1))
        with pytest.raises(eventfold.EventTooLarge) as too_large:
            await store.append("order-1", [*placed(3, "y"), big], expected_version=1)
        assert too_large.value.index == 3
        with pytest.raises(eventfold.EncodingError):
            await store.append(
                "order-1", [*placed(2, "z"), Anything(value=object())], expected_version=1
            )
        assert await store.stream_version("order-1") == 1
        assert await store.head() == head
        assert len(await collect(store.read_all())) == 1

    async def test_conflict_among_concurrent_appends_fails_alone(self, store: EventStore) -> None:
        await store.append("order-0", placed(1), expected_version=NO_STREAM)
        appends = [
            store.append(f"order-{i}", placed(2, f"c{i}-"), expected_version=NO_STREAM)
            for i in range(10)
        ]
        results = await asyncio.gather(*appends, return_exceptions=True)
        assert isinstance(results[0], eventfold.WrongExpectedVersion)
        assert all(isinstance(r, eventfold.AppendResult) for r in results[1:])
        await settle(store, max(r.position for r in results if isinstance(r, AppendResult)))
        assert await store.stream_version("order-0") == 1
        for i in range(1, 10):
            assert await store.stream_version(f"order-{i}") == 2
        assert len(await collect(store.read_all())) == 19

    # -- idempotent retries --------------------------------------------------------------

    async def test_retry_with_same_ids_returns_first_result(self, store: EventStore) -> None:
        batch = [NewEvent(e, event_id=uuid.uuid4()) for e in placed(3)]
        first = await store.append("order-1", batch, expected_version=NO_STREAM)
        again = await store.append("order-1", batch, expected_version=NO_STREAM)
        assert again == first
        assert (first.retry, again.retry) == (False, True)
        with_any = await store.append("order-1", batch, expected_version=ANY)
        assert with_any == first
        assert await store.stream_version("order-1") == 3
        assert [e.event_id for e in await collect(store.read_stream("order-1"))] == [
            n.event_id for n in batch
        ]

    async def test_retry_after_more_events_still_returns_first_result(
        self, store: EventStore
    ) -> None:
        batch = [NewEvent(e, event_id=uuid.uuid4()) for e in placed(2)]
        first = await store.append("order-1", batch, expected_version=NO_STREAM)
        await store.append("order-1", placed(1, "later"), expected_version=2)
        assert await store.append("order-1", batch, expected_version=0) == first
        assert await store.stream_version("order-1") == 3

    async def test_same_id_with_other_content_is_an_error(self, store: EventStore) -> None:
        eid = uuid.uuid4()
        await store.append(
            "order-1",
            [NewEvent(Placed(order_id="a", amount=1), event_id=eid)],
            expected_version=NO_STREAM,
        )
        with pytest.raises(eventfold.DuplicateEventId) as info:
            await store.append(
                "order-1",
                [NewEvent(Placed(order_id="a", amount=2), event_id=eid)],
                expected_version=ANY,
            )
        assert info.value.event_id == eid
        assert await store.stream_version("order-1") == 1

    async def test_partial_retry_is_an_error(self, store: EventStore) -> None:
        batch = [NewEvent(e, event_id=uuid.uuid4()) for e in placed(2)]
        await store.append("order-1", batch, expected_version=NO_STREAM)
        extra = NewEvent(Placed(order_id="new", amount=9), event_id=uuid.uuid4())
        with pytest.raises(eventfold.DuplicateEventId):
            await store.append("order-1", [batch[1], extra], expected_version=ANY)
        with pytest.raises(eventfold.DuplicateEventId):
            await store.append("order-1", [batch[1], batch[0]], expected_version=ANY)
        assert await store.stream_version("order-1") == 2

    async def test_same_id_twice_in_one_append_is_an_error(self, store: EventStore) -> None:
        eid = uuid.uuid4()
        twice = [NewEvent(e, event_id=eid) for e in placed(2)]
        with pytest.raises(eventfold.DuplicateEventId):
            await store.append("order-1", twice, expected_version=NO_STREAM)
        assert await store.stream_version("order-1") == 0

    async def test_event_ids_are_unique_per_stream_only(self, store: EventStore) -> None:
        eid = uuid.uuid4()
        event = Placed(order_id="a", amount=1)
        await store.append("order-1", [NewEvent(event, event_id=eid)], expected_version=ANY)
        second = await store.append(
            "order-2", [NewEvent(event, event_id=eid)], expected_version=ANY
        )
        await settle(store, second.position)
        assert [e.event_id async for e in store.read_all()] == [eid, eid]

    # -- reading streams -----------------------------------------------------------------

    async def test_read_stream_ranges_and_backwards(self, store: EventStore) -> None:
        await store.append("order-1", placed(10), expected_version=NO_STREAM)

        async def versions(**kw: Any) -> list[int]:
            return [e.version for e in await collect(store.read_stream("order-1", **kw))]

        assert await versions() == list(range(1, 11))
        assert await versions(from_version=4) == list(range(4, 11))
        assert await versions(from_version=4, limit=3) == [4, 5, 6]
        assert await versions(from_version=11) == []
        assert await versions(limit=0) == []
        assert await versions(backwards=True) == list(range(10, 0, -1))
        assert await versions(backwards=True, limit=2) == [10, 9]
        assert await versions(backwards=True, from_version=3) == [3, 2, 1]
        assert await versions(backwards=True, from_version=50, limit=1) == [10]
        assert await collect(store.read_stream("order-404")) == []
        assert await store.stream_version("order-404") == 0

    async def test_recorded_event_envelope(self, store: EventStore) -> None:
        before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
        eid = uuid.uuid4()
        await store.append(
            "order-1",
            [
                NewEvent(
                    Placed(order_id="a", amount=5),
                    event_id=eid,
                    metadata={"actor": "ann"},
                    correlation_id="corr-1",
                    causation_id="cmd-7",
                )
            ],
            expected_version=NO_STREAM,
        )
        (event,) = await collect(store.read_stream("order-1"))
        await settle(store, event.position)
        assert event.event_id == eid
        assert event.stream_id == "order-1"
        assert event.version == 1
        assert event.type == "conformance.Placed"
        assert event.schema_version == 1
        assert event.data == Placed(order_id="a", amount=5)
        assert event.metadata == {
            "actor": "ann",
            "correlation_id": "corr-1",
            "causation_id": "cmd-7",
        }
        assert (event.correlation_id, event.causation_id) == ("corr-1", "cmd-7")
        assert event.recorded_at.tzinfo is not None
        assert before <= event.recorded_at <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
        assert event.position == await store.head()

    async def test_unregistered_types_read_back_as_mappings(self, store: EventStore) -> None:
        await store.append(
            "order-1",
            [NewEvent({"sku": "X-1", "qty": 2}, type="conformance.NeverRegistered")],
            expected_version=NO_STREAM,
        )
        await settle(store, await _last_position(store, "order-1"))
        (event,) = await collect(store.read_all())
        assert event.type == "conformance.NeverRegistered"
        assert event.data == {"sku": "X-1", "qty": 2}

    async def test_mapping_for_a_registered_type_is_validated(self, store: EventStore) -> None:
        await store.append(
            "order-1",
            [NewEvent({"order_id": "a", "amount": 3}, type="conformance.Placed")],
            expected_version=NO_STREAM,
        )
        (event,) = await collect(store.read_stream("order-1"))
        assert event.data == Placed(order_id="a", amount=3)
        with pytest.raises(eventfold.EncodingError, match="amount"):
            await store.append(
                "order-1",
                [NewEvent({"order_id": "a", "amount": "lots"}, type="conformance.Placed")],
                expected_version=ANY,
            )
        assert await store.stream_version("order-1") == 1

    # -- the global log ------------------------------------------------------------------

    async def test_read_all_order_and_checkpoints(self, store: EventStore) -> None:
        assert await store.head() == START
        assert await collect(store.read_all()) == []
        written = []
        for i in range(6):
            r = await store.append(f"order-{i % 3}", placed(2, f"{i}-"), expected_version=ANY)
            written.append(r.position)
        await settle(store, written[-1])
        events = await collect(store.read_all())
        positions = [e.position for e in events]
        assert len(events) == 12
        assert positions == sorted(positions)
        assert len(set(positions)) == 12
        assert [p for p in positions if p in written] == written
        assert await store.head() == positions[-1]
        middle = positions[5]
        rest = await collect(store.read_all(after=middle))
        assert [e.position for e in rest] == positions[6:]
        from_text = await collect(store.read_all(after=str(middle)))
        assert [e.position for e in from_text] == positions[6:]
        assert Position.parse(str(middle)) == middle
        assert await collect(store.read_all(after=positions[-1])) == []
        assert [e.position for e in await collect(store.read_all(limit=4))] == positions[:4]

    async def test_read_all_filters(self, store: EventStore) -> None:
        await store.append("order-1", [Placed(order_id="1", amount=1)], expected_version=ANY)
        await store.append("invoice-1", [Note(text="n")], expected_version=ANY)
        await store.append("order-1", [Shipped(order_id="1")], expected_version=ANY)
        await store.append("order", [Note(text="bare")], expected_version=ANY)
        await store.append("order_x-1", [Note(text="other category")], expected_version=ANY)
        last = await store.append(
            "orders-2", [Placed(order_id="2", amount=2)], expected_version=ANY
        )
        await settle(store, last.position)

        async def streams_and_types(**kw: Any) -> list[tuple[str, str]]:
            return [(e.stream_id, e.type) for e in await collect(store.read_all(**kw))]

        assert await streams_and_types(types=["conformance.Placed"]) == [
            ("order-1", "conformance.Placed"),
            ("orders-2", "conformance.Placed"),
        ]
        assert await streams_and_types(types=[Shipped, "conformance.Placed"]) == [
            ("order-1", "conformance.Placed"),
            ("order-1", "conformance.Shipped"),
            ("orders-2", "conformance.Placed"),
        ]
        assert await streams_and_types(categories=["order"]) == [
            ("order-1", "conformance.Placed"),
            ("order-1", "conformance.Shipped"),
            ("order", "conformance.Note"),
        ]
        assert await streams_and_types(
            categories=["invoice", "orders"], types=["conformance.Note"]
        ) == [
            ("invoice-1", "conformance.Note"),
        ]
        assert await streams_and_types(types=["nothing.Here"]) == []
        assert await streams_and_types(categories="invoice") == [("invoice-1", "conformance.Note")]
        first = (await collect(store.read_all(types=["conformance.Placed"], limit=1)))[0]
        later = await streams_and_types(types=["conformance.Placed"], after=first.position)
        assert later == [("orders-2", "conformance.Placed")]

    async def test_paging_through_100000_events(self, store: EventStore) -> None:
        for i in range(100):
            r = await store.append(f"bulk-{i % 7}", placed(1000, f"{i}-"), expected_version=ANY)
        await settle(store, r.position)
        count = 0
        last: Position = START
        stream_versions: dict[str, int] = {}
        async for event in store.read_all():
            assert event.position > last
            last = event.position
            expected = stream_versions.get(event.stream_id, 0) + 1
            assert event.version == expected
            stream_versions[event.stream_id] = expected
            count += 1
        assert count == 100_000
        assert last == await store.head()
        assert sum(stream_versions.values()) == 100_000
        long_stream = [e.version async for e in store.read_stream("bulk-0")]
        assert long_stream == list(range(1, 15_001))
        backwards = [e.version async for e in store.read_stream("bulk-0", backwards=True)]
        assert backwards == list(range(15_000, 0, -1))

    # -- listings ------------------------------------------------------------------------

    async def test_streams_listing_pages(self, store: EventStore) -> None:
        for i in range(5):
            await store.append(f"order-{i}", placed(i + 1), expected_version=NO_STREAM)
        r = await store.append("invoice-1", placed(1), expected_version=NO_STREAM)
        await settle(store, r.position)
        listed = [(s.stream_id, s.version) async for s in store.streams()]
        assert listed == [("invoice-1", 1)] + [(f"order-{i}", i + 1) for i in range(5)]
        page = [s.stream_id async for s in store.streams(limit=2)]
        assert page == ["invoice-1", "order-0"]
        nxt = [s.stream_id async for s in store.streams(after=page[-1], limit=2)]
        assert nxt == ["order-1", "order-2"]
        assert [s.stream_id async for s in store.streams(category="invoice")] == ["invoice-1"]
        stats = await store.stats()
        assert (stats.streams, stats.events) == (6, 16)
        assert stats.head == await store.head()
        assert stats.backend == store.backend

    # -- bad input -----------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("stream_id", "reason"),
        [
            ("", "empty"),
            ("x" * (eventfold.MAX_STREAM_ID_LENGTH + 1), "limit of 256"),
            ("order\n1", "control"),
            ("order\x001", "control"),
            ("order\x7f", "control"),
            (42, "str"),
        ],
    )
    async def test_invalid_stream_ids(self, store: EventStore, stream_id: Any, reason: str) -> None:
        with pytest.raises(eventfold.InvalidStreamId, match=reason):
            await store.append(stream_id, placed(1), expected_version=ANY)
        with pytest.raises(eventfold.InvalidStreamId):
            await store.stream_version(stream_id)
        with pytest.raises(eventfold.InvalidStreamId):
            await collect(store.read_stream(stream_id))
        assert await store.head() == START

    async def test_longest_stream_id_is_accepted(self, store: EventStore) -> None:
        longest = "s-" + "é" * (eventfold.MAX_STREAM_ID_LENGTH - 2)
        await store.append(longest, placed(1), expected_version=NO_STREAM)
        assert await store.stream_version(longest) == 1

    @pytest.mark.parametrize("expected", [-1, "1", 1.5, True, None, "any"])
    async def test_invalid_expected_versions(self, store: EventStore, expected: Any) -> None:
        with pytest.raises(eventfold.InvalidExpectedVersion, match="expected_version"):
            await store.append("order-1", placed(1), expected_version=expected)
        assert await store.stream_version("order-1") == 0

    async def test_payloads_that_cannot_be_stored(self, store: EventStore) -> None:
        with pytest.raises(eventfold.EncodingError, match=r"conformance\.Anything"):
            await store.append("order-1", [Anything(value={1, object()})], expected_version=ANY)
        with pytest.raises(eventfold.EncodingError, match="metadata"):
            await store.append(
                "order-1",
                [NewEvent(Placed(order_id="a", amount=1), metadata={"x": object()})],
                expected_version=ANY,
            )
        with pytest.raises(eventfold.InvalidEvent, match="no events"):
            await store.append("order-1", [], expected_version=ANY)
        with pytest.raises(eventfold.InvalidEvent, match="list of events"):
            await store.append("order-1", Placed(order_id="a", amount=1), expected_version=ANY)  # type: ignore[arg-type]
        with pytest.raises(eventfold.InvalidEvent, match="dict"):
            await store.append("order-1", [{"order_id": "a"}], expected_version=ANY)  # type: ignore[list-item]
        with pytest.raises(eventfold.InvalidEvent, match="no type"):
            await store.append("order-1", [NewEvent({"a": 1})], expected_version=ANY)
        assert await store.head() == START

    async def test_size_limit(self, store: EventStore) -> None:
        limit = eventfold.DEFAULT_MAX_EVENT_SIZE
        # Note(text=...) encodes as {"text":"..."}: 11 bytes around the text, plus "{}" metadata.
        fits = Note(text="x" * (limit - 13))
        await store.append("note-1", [fits], expected_version=NO_STREAM)
        with pytest.raises(eventfold.EventTooLarge) as info:
            await store.append("note-1", [Note(text="x" * (limit - 12))], expected_version=1)
        assert (info.value.size, info.value.limit) == (limit + 1, limit)
        assert "1048576" in str(info.value)
        (stored,) = await collect(store.read_stream("note-1"))
        assert stored.data == fits

    @pytest.mark.parametrize("text", ["abc", "1:x", "-3", ":", "1:2:3", "", " 4 5", "1:-2"])
    async def test_malformed_positions(self, store: EventStore, text: str) -> None:
        with pytest.raises(eventfold.InvalidPosition, match="invalid position"):
            await collect(store.read_all(after=text))

    async def test_closed_store_refuses_work(self, store: EventStore) -> None:
        await store.close()
        with pytest.raises(eventfold.StoreClosed):
            await store.append("order-1", placed(1), expected_version=ANY)
        with pytest.raises(eventfold.StoreClosed):
            await store.head()
        await store.close()


# -- several processes sharing one database ----------------------------------------------


def _writer_process(url: str, seed: int, appends: int, streams: int) -> list[tuple[str, str]]:
    """Append to random streams with exact expected versions; return (stream, event id)s."""
    return asyncio.run(_writer(url, seed, appends, streams))


async def _writer(url: str, seed: int, appends: int, streams: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    committed: list[tuple[str, str]] = []
    async with eventfold.connect(url) as store:
        for i in range(appends):
            stream = f"race-{rng.randrange(streams)}"
            batch = [
                NewEvent(Placed(order_id=f"{seed}-{i}-{k}", amount=k), event_id=uuid.uuid4())
                for k in range(rng.randint(1, 3))
            ]
            if i % 3 == 0:  # some appends race on the stream row with no version check
                await store.append(stream, batch, expected_version=ANY)
            else:
                while True:
                    version = await store.stream_version(stream)
                    try:
                        await store.append(stream, batch, expected_version=version)
                    except eventfold.WrongExpectedVersion:
                        continue
                    break
            committed.extend((stream, str(e.event_id)) for e in batch)
    return committed


def _race_process(url: str, stream: str, tag: str) -> str:
    """Try to create ``stream``; say whether this process won."""

    async def race() -> str:
        async with eventfold.connect(url) as store:
            try:
                await store.append(stream, [Note(text=tag)], expected_version=NO_STREAM)
            except eventfold.WrongExpectedVersion as exc:
                return f"lost:{exc.actual}"
            return "won"

    return asyncio.run(race())


class SharedStoreConformance:
    """Behaviour of backends that several processes share (SQLite files, PostgreSQL)."""

    async def test_reader_sees_every_event_of_concurrent_writer_processes_once(
        self, store: EventStore, store_url: str
    ) -> None:
        processes, appends, streams = 4, 150, 12
        loop = asyncio.get_running_loop()
        with ProcessPoolExecutor(
            processes, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            jobs = [
                loop.run_in_executor(pool, _writer_process, store_url, seed, appends, streams)
                for seed in range(processes)
            ]
            seen: list[RecordedEvent] = []
            checkpoint: Position = START
            expected: int | None = None
            deadline = 0.0
            while expected is None or len(seen) < expected:
                if expected is None and all(job.done() for job in jobs):
                    expected = sum(len(job.result()) for job in jobs)
                    deadline = loop.time() + 30
                async for event in store.read_all(after=checkpoint):
                    seen.append(event)
                    checkpoint = event.position
                if expected is not None and loop.time() > deadline:
                    break
                await asyncio.sleep(0.005)
            results = [await job for job in jobs]
        committed = {(stream, eid) for result in results for stream, eid in result}
        seen_keys = [(e.stream_id, str(e.event_id)) for e in seen]
        assert len(seen_keys) == len(set(seen_keys)), "the reader saw an event twice"
        assert set(seen_keys) == committed, "the reader missed committed events"
        positions = [e.position for e in seen]
        assert positions == sorted(positions)
        assert len(set(positions)) == len(positions)
        assert [e.position for e in await collect(store.read_all())] == positions
        for i in range(streams):
            versions = [e.version async for e in store.read_stream(f"race-{i}")]
            assert versions == list(range(1, len(versions) + 1))
            in_log = [e.version for e in seen if e.stream_id == f"race-{i}"]
            assert in_log == versions, "the global log does not keep the stream's order"

    async def test_processes_racing_to_create_a_stream_one_wins(
        self, store: EventStore, store_url: str
    ) -> None:
        loop = asyncio.get_running_loop()
        with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as pool:
            outcomes = await asyncio.gather(
                *(
                    loop.run_in_executor(pool, _race_process, store_url, "race-1", str(i))
                    for i in range(4)
                )
            )
        assert sorted(outcomes) == ["lost:1", "lost:1", "lost:1", "won"]
        assert await store.stream_version("race-1") == 1

    async def test_events_survive_reopening(self, store: EventStore, store_url: str) -> None:
        result = await store.append("order-1", placed(3), expected_version=NO_STREAM)
        async with eventfold.connect(store_url) as again:
            await settle(again, result.position)
            assert await again.stream_version("order-1") == 3
            assert await again.head() == result.position
            events = await collect(again.read_stream("order-1"))
            assert [e.data for e in events] == placed(3)
