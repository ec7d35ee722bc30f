"""`eventfold.store.event_at`: the event at exactly one position of the log."""

from __future__ import annotations

from pathlib import Path

import eventfold
from eventfold import NewEvent, Position
from eventfold.store import event_at


async def test_event_at_finds_the_event_at_a_position_and_nothing_between(tmp_path: Path) -> None:
    async with eventfold.connect(f"sqlite:///{tmp_path / 'x.db'}") as store:
        first = await store.append(
            "a-1", [NewEvent({"n": 1}, type="A")], expected_version=eventfold.NO_STREAM
        )
        second = await store.append(
            "b-1", [NewEvent({"n": 2}, type="B")], expected_version=eventfold.NO_STREAM
        )
        found = await event_at(store, second.position)
        assert found is not None
        assert (found.stream_id, found.data) == ("b-1", {"n": 2})
        found = await event_at(store, first.position)
        assert found is not None
        assert found.stream_id == "a-1"
        after = second.position
        assert await event_at(store, Position(after.tx, after.seq + 1)) is None
        assert await event_at(store, Position(0, 0)) is None
