"""The conformance suite of stream transformation (`eventfold.store.SupportsTransform`).

Subclass `TransformConformance` in a test module and provide a ``store`` fixture that
yields an open, empty store declaring `SupportsTransform`. The suite runs
`eventfold.transform` over it: copies keep ids, recorded times and metadata, made events
get deterministic ids, the switch points the old stream at the new one atomically, and a
conflict refuses the switch and says what to do. Async tests need pytest-asyncio with
``asyncio_mode = "auto"``.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import eventfold
from eventfold import (
    Event,
    NewEvent,
    RecordedEvent,
    StreamReplaced,
    TransformConflict,
    transformed_event_id,
)
from eventfold.store import SupportsTransform, capability

from .conformance import settle

__all__ = ["TransformConformance"]


class Line(Event):
    """An order line (the suite's main event)."""

    __event_type__ = "conformance.transform.Line"
    sku: str
    n: int


class Note(Event):
    """Free text."""

    __event_type__ = "conformance.transform.Note"
    text: str


def events_of(n: int) -> list[Line]:
    return [Line(sku=f"s{i}", n=i) for i in range(1, n + 1)]


async def read(
    store: eventfold.EventStore, stream: str, follow: bool = True
) -> list[RecordedEvent]:
    return [e async for e in store.read_stream(stream, follow_alias=follow)]


def keep(event: RecordedEvent) -> list[RecordedEvent]:
    return [event]


def reshape(event: RecordedEvent) -> Any:
    """Drops multiples of 5, splits multiples of 3, rewrites even numbers, keeps the rest."""
    line = event.data
    if line.n % 5 == 0:
        return None
    if line.n % 3 == 0:
        return [Line(sku=f"{line.sku}-a", n=line.n), Line(sku=f"{line.sku}-b", n=line.n)]
    if line.n % 2 == 0:
        return Line(sku=line.sku.upper(), n=line.n)
    return [event]


def suffix(stream_id: str) -> str:
    return f"{stream_id}.v2"


class TransformConformance:
    """Behaviour of `eventfold.transform` that every store with `SupportsTransform` keeps."""

    # -- copying -------------------------------------------------------------------

    async def test_a_copy_keeps_ids_recorded_times_order_and_metadata(
        self,
        store: eventfold.EventStore,
    ) -> None:
        batch = [
            NewEvent(e, event_id=uuid.uuid4(), metadata={"actor": "ann"}) for e in events_of(5)
        ]
        await store.append("order-1", batch, expected_version=eventfold.NO_STREAM)
        before = await read(store, "order-1")

        report = await eventfold.transform(store, "order-1", target=suffix, fn=keep, batch_size=2)

        (one,) = report.streams
        assert (one.status, one.events, one.copied, one.written) == ("switched", 5, 5, 5)
        copies = await read(store, "order-1.v2")
        assert [e.stream_id for e in copies] == ["order-1.v2"] * 5
        assert [(e.event_id, e.version, e.recorded_us, e.data, e.metadata) for e in copies] == [
            (e.event_id, e.version, e.recorded_us, e.data, e.metadata) for e in before
        ]
        # The originals stay in place, untouched.
        assert await read(store, "order-1", follow=False) == before

    async def test_split_rewrite_and_drop_get_deterministic_ids(
        self, store: eventfold.EventStore
    ) -> None:
        await store.append("order-1", events_of(6), expected_version=eventfold.NO_STREAM)
        source = await read(store, "order-1")

        report = await eventfold.transform(store, "order-1", target=suffix, fn=reshape)

        (one,) = report.streams
        # 1 kept, 2 rewritten, 3 split, 4 rewritten, 5 dropped, 6 split
        assert (one.copied, one.rewritten, one.split, one.dropped) == (1, 2, 2, 1)
        assert one.written == 7
        copies = await read(store, "order-1.v2")
        assert [e.data.sku for e in copies] == ["s1", "S2", "s3-a", "s3-b", "S4", "s6-a", "s6-b"]
        by_version = {e.version: e for e in source}
        expected_ids = [
            source[0].event_id,
            transformed_event_id(by_version[2].event_id, 0),
            transformed_event_id(by_version[3].event_id, 0),
            transformed_event_id(by_version[3].event_id, 1),
            transformed_event_id(by_version[4].event_id, 0),
            transformed_event_id(by_version[6].event_id, 0),
            transformed_event_id(by_version[6].event_id, 1),
        ]
        assert [e.event_id for e in copies] == expected_ids
        # Made events take the recorded time of the event they came from.
        assert copies[2].recorded_us == copies[3].recorded_us == by_version[3].recorded_us

    async def test_a_merge_is_a_stateful_function(self, store: eventfold.EventStore) -> None:
        await store.append("order-1", events_of(4), expected_version=eventfold.NO_STREAM)
        held: dict[str, RecordedEvent] = {}

        def pairs(event: RecordedEvent) -> Any:
            first = held.pop(event.stream_id, None)
            if first is None:
                held[event.stream_id] = event
                return None
            return Line(sku=f"{first.data.sku}+{event.data.sku}", n=event.data.n)

        report = await eventfold.transform(store, "order-1", target=suffix, fn=pairs)
        assert (report.streams[0].dropped, report.streams[0].rewritten) == (2, 2)
        assert [e.data.sku for e in await read(store, "order-1.v2")] == ["s1+s2", "s3+s4"]

    # -- the alias -----------------------------------------------------------------

    async def test_after_the_switch_reads_follow_and_appends_fail(
        self, store: eventfold.EventStore
    ) -> None:
        ids = [uuid.uuid4() for _ in range(3)]
        await store.append(
            "order-1",
            [NewEvent(e, event_id=i) for e, i in zip(events_of(3), ids, strict=True)],
            expected_version=eventfold.NO_STREAM,
        )
        await eventfold.transform(store, "order-1", target=suffix, fn=reshape)

        assert (await store.stream_info("order-1")).replaced_by == "order-1.v2"
        assert await store.stream_version("order-1") == 4
        followed = await read(store, "order-1")
        assert [e.stream_id for e in followed] == ["order-1.v2"] * 4
        assert followed == await read(store, "order-1.v2")
        backwards = [e.version async for e in store.read_stream("order-1", backwards=True, limit=2)]
        assert backwards == [4, 3]
        found = await store.find_events("order-1", [ids[0]])
        assert [e.stream_id for e in found] == ["order-1.v2"]

        for expected in (3, eventfold.ANY, eventfold.STREAM_EXISTS, eventfold.NO_STREAM):
            with pytest.raises(StreamReplaced) as info:
                await store.append("order-1", [Note(text="late")], expected_version=expected)
            assert (info.value.stream_id, info.value.replaced_by) == ("order-1", "order-1.v2")
            assert "append to 'order-1.v2' instead" in str(info.value)
        # A retry of an append made before the switch still returns its first result.
        again = await store.append(
            "order-1",
            [NewEvent(e, event_id=i) for e, i in zip(events_of(3), ids, strict=True)],
            expected_version=eventfold.NO_STREAM,
        )
        assert (again.version, again.retry) == (3, True)

        # The new stream takes appends; the originals and the copies are all in the log.
        last = await store.append("order-1.v2", [Note(text="next")], expected_version=4)
        await settle(store, last.position)
        log = [(e.stream_id, e.version) async for e in store.read_all()]
        assert log[:3] == [("order-1", 1), ("order-1", 2), ("order-1", 3)]
        assert log[-1] == ("order-1.v2", 5)
        assert len(log) == 3 + 5
        listed = {s.stream_id: s async for s in store.streams()}
        assert listed["order-1"].replaced_by == "order-1.v2"
        assert listed["order-1.v2"].replaced_by is None
        assert [e.version for e in await read(store, "order-1", follow=False)] == [1, 2, 3]

    async def test_a_second_transformation_keeps_aliases_one_hop(
        self, store: eventfold.EventStore
    ) -> None:
        await store.append("order-1", events_of(2), expected_version=eventfold.NO_STREAM)
        await eventfold.transform(store, "order-1", target=suffix, fn=keep)
        with pytest.raises(TransformConflict, match=r"already replaced by 'order-1\.v2'"):
            await eventfold.transform(store, "order-1", target=lambda s: "order-1.v3", fn=keep)
        await eventfold.transform(store, "order-1.v2", target=lambda s: "order-1.v3", fn=keep)
        assert (await store.stream_info("order-1")).replaced_by == "order-1.v3"
        assert (await store.stream_info("order-1.v2")).replaced_by == "order-1.v3"
        assert [e.stream_id for e in await read(store, "order-1")] == ["order-1.v3"] * 2

    # -- dry runs, categories, conflicts -------------------------------------------

    async def test_a_dry_run_reports_and_writes_nothing(self, store: eventfold.EventStore) -> None:
        await store.append("order-1", events_of(6), expected_version=eventfold.NO_STREAM)
        before = await store.stats()

        report = await eventfold.transform(
            store, "order-1", target=suffix, fn=reshape, dry_run=True
        )

        assert report.dry_run
        (one,) = report.streams
        assert (one.status, one.events, one.copied, one.rewritten, one.split, one.dropped) == (
            "dry run", 6, 1, 2, 2, 1,
        )  # fmt: skip
        assert one.written == 7
        assert one.changed
        assert await store.stats() == before
        assert await store.stream_info("order-1") == eventfold.StreamInfo("order-1", 6)
        assert await store.stream_version("order-1.v2") == 0

    async def test_a_category_and_its_rerun(self, store: eventfold.EventStore) -> None:
        for n, stream in enumerate(["order-1", "order-2", "order-3"], start=2):
            await store.append(stream, events_of(n), expected_version=eventfold.NO_STREAM)
        await store.append("invoice-1", events_of(2), expected_version=eventfold.NO_STREAM)

        report = await eventfold.transform(store, category="order", target=suffix, fn=reshape)

        assert [(s.source, s.target, s.status) for s in report.streams] == [
            (f"order-{i}", f"order-{i}.v2", "switched") for i in (1, 2, 3)
        ]
        assert report.total("events") == 2 + 3 + 4
        for i in (1, 2, 3):
            assert (await store.stream_info(f"order-{i}")).replaced_by == f"order-{i}.v2"
        assert (await store.stream_info("invoice-1")).replaced_by is None

        # The targets share the category; a rerun leaves them alone.
        rerun = await eventfold.transform(store, category="order", target=suffix, fn=reshape)
        assert [s.status for s in rerun.streams] == ["already switched"] * 3
        assert await store.stream_version("order-1.v2.v2") == 0

    async def test_an_append_during_the_copy_refuses_the_switch(
        self, store: eventfold.EventStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        await store.append("order-1", events_of(3), expected_version=eventfold.NO_STREAM)
        original = capability(store, SupportsTransform).append_copies

        async def racing(*args: Any, **kwargs: Any) -> Any:
            await store.append("order-1", [Line(sku="late", n=7)], expected_version=eventfold.ANY)
            return await original(*args, **kwargs)

        monkeypatch.setattr(store, "append_copies", racing)
        with pytest.raises(TransformConflict) as info:
            await eventfold.transform(store, "order-1", target=suffix, fn=keep)
        assert (info.value.stream_id, info.value.copied, info.value.actual) == ("order-1", 3, 4)
        assert "run the transformation again" in str(info.value)
        assert (await store.stream_info("order-1")).replaced_by is None
        await store.append("order-1", [Line(sku="still open", n=9)], expected_version=4)

        monkeypatch.setattr(store, "append_copies", original)
        report = await eventfold.transform(store, "order-1", target=suffix, fn=keep)
        assert (report.streams[0].resumed, report.streams[0].written) == (3, 5)
        assert [e.data.sku for e in await read(store, "order-1")] == [
            "s1", "s2", "s3", "late", "still open",
        ]  # fmt: skip

    async def test_a_target_with_foreign_events_is_refused(
        self, store: eventfold.EventStore
    ) -> None:
        await store.append("order-1", events_of(2), expected_version=eventfold.NO_STREAM)
        await store.append("order-1.v2", [Note(text="mine")], expected_version=eventfold.NO_STREAM)
        with pytest.raises(TransformConflict, match="does not make"):
            await eventfold.transform(store, "order-1", target=suffix, fn=keep)
        assert (await store.stream_info("order-1")).replaced_by is None

    async def test_a_conflict_a_rerun_cannot_fix_says_what_to_do_instead(
        self,
        store: eventfold.EventStore,
    ) -> None:
        await store.append("order-1", events_of(2), expected_version=eventfold.NO_STREAM)
        await eventfold.transform(store, "order-1", target=suffix, fn=keep)
        for _ in range(2):  # the advice is the same on a rerun: it does not help
            with pytest.raises(TransformConflict) as info:
                await eventfold.transform(store, "order-1", target=lambda s: f"{s}.v3", fn=keep)
            assert "already replaced by 'order-1.v2'" in str(info.value)
            assert "transform 'order-1.v2' instead" in str(info.value)
            assert "run the transformation again" not in str(info.value)

        await store.append("order-2", events_of(2), expected_version=eventfold.NO_STREAM)
        await store.append("order-2.v2", [Note(text="mine")], expected_version=eventfold.NO_STREAM)
        with pytest.raises(TransformConflict) as info:
            await eventfold.transform(store, "order-2", target=suffix, fn=keep)
        assert "pick a target that is a new stream" in str(info.value)
        assert "run the transformation again" not in str(info.value)

    async def test_bad_arguments_store_nothing(self, store: eventfold.EventStore) -> None:
        await store.append("order-1", events_of(2), expected_version=eventfold.NO_STREAM)
        with pytest.raises(eventfold.InvalidInput, match="not both or neither"):
            await eventfold.transform(store, target=suffix, fn=keep)
        with pytest.raises(eventfold.InvalidInput, match="own id; a transformation"):
            await eventfold.transform(store, "order-1", target=lambda s: s, fn=keep)
        with pytest.raises(eventfold.InvalidInput, match="no events"):
            await eventfold.transform(store, "order-9", target=suffix, fn=keep)
        with pytest.raises(eventfold.InvalidInput, match="returned int"):
            await eventfold.transform(store, "order-1", target=suffix, fn=lambda e: 42)  # type: ignore[arg-type, return-value]
        assert await store.stream_version("order-1.v2") == 0
        assert (await store.stream_info("order-1")).replaced_by is None
