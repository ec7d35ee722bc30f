"""Conformance at the edges of the input: names, positions and numbers no store can hold,
and nested opens. Part of `EventStoreConformance` (which inherits these tests)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import eventfold
from eventfold import ANY, NO_STREAM, START, EventStore, NewEvent, Position

__all__ = ["EdgeConformance"]

_BIG = (2**63, 2**64, 2**200)
"""Integers past a signed 64-bit column: SQLite raised OverflowError on them, PostgreSQL
"bigint out of range"."""


def _note(i: int) -> NewEvent:
    return NewEvent({"i": i}, type="conformance.Edge")


class EdgeConformance:
    """What every backend answers alike at the edges of what it can store."""

    async def test_nested_open_keeps_the_store_open(self, store: EventStore) -> None:
        async with store:
            async with store:
                await store.append("nest-1", [_note(1)], expected_version=NO_STREAM)
            # An inner block's exit counts one open as closed, not the store.
            await store.append("nest-1", [_note(2)], expected_version=1)
        await store.open()
        await store.close()
        assert await store.stream_version("nest-1") == 2

    async def test_closing_the_last_open_closes_the_store(self, store: EventStore) -> None:
        await store.open()
        await store.close()
        await store.close()  # the fixture's own open
        with pytest.raises(eventfold.StoreClosed):
            await store.head()
        await store.close()  # closing a closed store does nothing

    @pytest.mark.parametrize("big", _BIG)
    async def test_versions_past_64_bits_read_as_past_the_end(
        self, store: EventStore, big: int
    ) -> None:
        result = await store.append(
            "big-1", [_note(i) for i in range(3)], expected_version=NO_STREAM
        )
        assert [e async for e in store.read_stream("big-1", from_version=big)] == []
        backwards = store.read_stream("big-1", from_version=big, backwards=True)
        assert [e.version async for e in backwards] == [3, 2, 1]
        past = Position(result.position.tx, big)
        assert [e async for e in store.read_all(after=past)] == []
        with pytest.raises(eventfold.InvalidPosition, match="at most"):
            Position.parse(str(big))

    async def test_positions_in_another_stores_form_are_refused(self, store: EventStore) -> None:
        result = await store.append("pos-1", [_note(1)], expected_version=NO_STREAM)
        # A store whose positions are (tx, seq) pairs takes no bare number but '0', and
        # one that numbers its log 1, 2, 3 ... takes no pair: a checkpoint from the other
        # kind of store would silently start at the wrong place.
        if result.position.tx:
            wrong, fix = "3", "'tx:seq'"
        else:
            wrong, fix = "1:0", "plain number"
        with pytest.raises(eventfold.InvalidPosition, match=fix):
            [e async for e in store.read_all(after=wrong)]
        with pytest.raises(eventfold.InvalidPosition):
            [e async for e in store.read_all(after=Position.parse(wrong))]
        from .conformance import settle

        await settle(store, result.position)
        events = [e async for e in store.read_all(after="0")]
        assert [e.position for e in events] == [result.position]

    @pytest.mark.parametrize(
        ("stream_id", "reason"),
        [(" ", "blank"), ("order-1 ", "spaces"), (" order-1", "spaces"), ("\u3000", "control")],
    )
    async def test_stream_ids_with_outer_spaces_are_refused(
        self, store: EventStore, stream_id: str, reason: str
    ) -> None:
        with pytest.raises(eventfold.InvalidStreamId, match=reason):
            await store.append(stream_id, [_note(1)], expected_version=ANY)
        assert await store.head() == START

    @pytest.mark.parametrize(
        ("name", "reason"),
        [
            ("", "empty"),
            ("a\nb", "control"),
            ("\x1b[31mRED\x1b[0m", "control"),
            ("a\x00b", "control"),
            (" T", "spaces"),
            ("   ", "blank"),
            ("T" * 257, "limit of 256"),
            (5, "must be a str"),
        ],
    )
    async def test_event_type_names_are_checked(
        self, store: EventStore, name: Any, reason: str
    ) -> None:
        with pytest.raises(eventfold.InvalidEvent, match=reason):
            await store.append("type-1", [NewEvent({"a": 1}, type=name)], expected_version=ANY)
        assert await store.head() == START
        longest = "T" * 256
        await store.append("type-1", [NewEvent({"a": 1}, type=longest)], expected_version=ANY)
        assert [e.type async for e in store.read_stream("type-1")] == [longest]

    async def test_an_id_repeated_in_one_append_is_named_as_such(self, store: EventStore) -> None:
        eid = uuid.uuid4()
        twice = [NewEvent({"i": i}, type="conformance.Edge", event_id=eid) for i in range(2)]
        with pytest.raises(eventfold.DuplicateEventId, match="more than one event") as info:
            await store.append("twice-1", twice, expected_version=ANY)
        assert info.value.repeated
        assert "already in stream" not in str(info.value)
        assert await store.head() == START
