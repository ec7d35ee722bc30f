"""The conformance suite of snapshot stores (`eventfold.store.SupportsSnapshots`).

Subclass `SnapshotStoreConformance` in a test module and provide a ``store`` fixture that
yields an open, empty store declaring `SupportsSnapshots`. The suite checks the snapshot
store itself (what is kept, which one a load gets) and what `CommandHandler` makes of it
over this store: a snapshot of another schema version, a corrupt one, one from a replaced
stream or one ahead of the stream is ignored and the state is folded from the events.
Async tests need pytest-asyncio with ``asyncio_mode = "auto"``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import msgspec
import pytest

import eventfold
from eventfold import CommandHandler, Decider, EventStore, Snapshot, SnapshotStore
from eventfold.store import SupportsSnapshots, capability

__all__ = ["SnapshotStoreConformance"]


class Added(eventfold.Event):
    """A number added to a tally (the suite's event)."""

    __event_type__ = "conformance.Added"
    n: int


class Tally(msgspec.Struct, frozen=True):
    """How many numbers were added, and their sum (the suite's state)."""

    count: int = 0
    total: int = 0


def _evolve(state: Tally, event: eventfold.Event) -> Tally:
    if isinstance(event, Added):
        return Tally(state.count + 1, state.total + event.n)
    return state


def _decide(command: int, state: Tally) -> Sequence[eventfold.Event]:
    return [Added(n=command)]


def tally(state_version: int = 1) -> Decider[int, Tally, eventfold.Event]:
    """The suite's decider; ``state_version`` is the schema version of its snapshots."""
    return Decider(
        initial_state=Tally(), evolve=_evolve, decide=_decide, state_version=state_version
    )


def snapshots_of(store: EventStore) -> SnapshotStore:
    """The store's snapshot store."""
    return capability(store, SupportsSnapshots).snapshots


def _snap(version: int, *, recorded_us: int = 0, data: bytes = b"{}", **kw: object) -> Snapshot:
    fields: dict[str, object] = {
        "stream_id": "tally-1",
        "state_type": "Tally",
        "version": version,
        "schema_version": 1,
        "data": data,
        "event_id": bytes([version % 256]) * 16,
        "recorded_us": recorded_us or version * 1000,
        "taken_us": 7,
    }
    fields.update(kw)
    return Snapshot(**fields)  # type: ignore[arg-type]


async def _adds(handler: CommandHandler[int, Tally, eventfold.Event], *ns: int) -> None:
    for n in ns:
        await handler.handle("tally-1", n)


class SnapshotStoreConformance:
    """Behaviour every snapshot store shares, and that the handler can rely on."""

    # -- the snapshot store ------------------------------------------------------------

    async def test_a_snapshot_comes_back_whole(self, store: EventStore) -> None:
        snapshots = snapshots_of(store)
        assert await snapshots.load_snapshot("tally-1", "Tally") is None
        kept = _snap(3, data=b'{"count":3,"total":6}', taken_us=123456789)
        await snapshots.save_snapshot(kept)
        assert await snapshots.load_snapshot("tally-1", "Tally") == kept
        # Streams and state types are apart.
        assert await snapshots.load_snapshot("tally-2", "Tally") is None
        assert await snapshots.load_snapshot("tally-1", "Other") is None

    async def test_the_newest_within_the_bounds_wins(self, store: EventStore) -> None:
        snapshots = snapshots_of(store)
        for version in (5, 10, 3):  # saved out of order
            await snapshots.save_snapshot(_snap(version))
        await snapshots.save_snapshot(_snap(12, state_type="Other"))

        async def newest(**bounds: int) -> int | None:
            found = await snapshots.load_snapshot("tally-1", "Tally", **bounds)
            return None if found is None else found.version

        assert await newest() == 10
        assert await newest(max_version=10) == 10
        assert await newest(max_version=9) == 5
        assert await newest(max_version=2) is None
        assert await newest(max_recorded_us=9999) == 5
        assert await newest(max_recorded_us=10_000) == 10
        assert await newest(max_recorded_us=2999) is None
        assert await newest(max_version=9, max_recorded_us=4999) == 3

    async def test_a_snapshot_of_the_same_version_replaces_the_old_one(
        self, store: EventStore
    ) -> None:
        snapshots = snapshots_of(store)
        await snapshots.save_snapshot(_snap(4, data=b'{"old":1}'))
        await snapshots.save_snapshot(_snap(4, data=b'{"new":1}', schema_version=2))
        found = await snapshots.load_snapshot("tally-1", "Tally")
        assert found is not None
        assert (found.data, found.schema_version) == (b'{"new":1}', 2)
        assert await snapshots.load_snapshot("tally-1", "Tally", max_version=3) is None

    # -- what the handler makes of it ----------------------------------------------------

    async def test_a_load_starts_from_the_newest_snapshot(self, store: EventStore) -> None:
        handler = CommandHandler(store, tally())
        await _adds(handler, 1, 2, 3)
        taken = await handler.snapshot("tally-1")
        assert taken is not None
        assert (taken.version, taken.schema_version, taken.state_type) == (3, 1, "Tally")
        await _adds(handler, 4, 5)
        loaded = await handler.load_details("tally-1")
        assert (loaded.snapshot_version, loaded.replayed, loaded.version) == (3, 2, 5)
        assert loaded.state == Tally(5, 15)
        assert await handler.snapshot("tally-404") is None

    async def test_past_states_use_snapshots_at_or_before_the_point(
        self, store: EventStore
    ) -> None:
        handler = CommandHandler(store, tally())
        for n in range(1, 10):
            await _adds(handler, n)
            if n in (4, 8):
                await handler.snapshot("tally-1")
        at7 = await handler.load_details("tally-1", at_version=7)
        assert (at7.snapshot_version, at7.replayed) == (4, 3)
        assert at7.state == Tally(7, sum(range(1, 8)))
        at3 = await handler.load_details("tally-1", at_version=3)
        assert (at3.snapshot_version, at3.state) == (0, Tally(3, 6))
        events = [e async for e in store.read_stream("tally-1")]
        as_of = await handler.load_details("tally-1", as_of=events[8].recorded_at)
        assert as_of.version >= 9
        assert as_of.snapshot_version == 8

    async def test_a_snapshot_of_another_schema_version_is_replaced(
        self, store: EventStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        old = CommandHandler(store, tally())
        await _adds(old, 1, 2, 3)
        await old.snapshot("tally-1")
        await _adds(old, 4)
        handler = CommandHandler(store, tally(state_version=2))
        with caplog.at_level(logging.WARNING):
            loaded = await handler.load_details("tally-1")
        assert "schema version 1" in caplog.text
        assert (loaded.snapshot_version, loaded.state) == (0, Tally(4, 10))
        snap = await snapshots_of(store).load_snapshot("tally-1", "Tally")
        assert snap is not None
        assert (snap.version, snap.schema_version) == (4, 2)
        again = await handler.load_details("tally-1")
        assert (again.snapshot_version, again.replayed) == (4, 0)

    async def test_a_corrupt_snapshot_is_ignored_and_rebuilt(
        self, store: EventStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        handler = CommandHandler(store, tally())
        await _adds(handler, 1, 2, 3)
        good = await handler.snapshot("tally-1")
        assert good is not None
        await snapshots_of(store).save_snapshot(
            msgspec.structs.replace(good, data=b'{"total": "lots')
        )
        with caplog.at_level(logging.WARNING):
            state = await CommandHandler(store, tally()).load("tally-1")
        assert "does not decode" in caplog.text
        assert state == Tally(3, 6)
        rebuilt = await snapshots_of(store).load_snapshot("tally-1", "Tally")
        assert rebuilt is not None
        assert rebuilt.data != b'{"total": "lots'

    async def test_a_snapshot_of_a_replaced_stream_is_not_trusted(
        self, store: EventStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        handler = CommandHandler(store, tally())
        await _adds(handler, 1, 2)
        good = await handler.snapshot("tally-1")
        assert good is not None
        forged = msgspec.structs.replace(
            good, data=b'{"count": 2, "total": 1000000}', event_id=b"\x00" * 16
        )
        await snapshots_of(store).save_snapshot(forged)
        with caplog.at_level(logging.WARNING):
            state = await CommandHandler(store, tally()).load("tally-1")
        assert "does not match" in caplog.text
        assert state == Tally(2, 3)

    async def test_a_snapshot_ahead_of_the_stream_is_not_trusted(
        self, store: EventStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        handler = CommandHandler(store, tally())
        await _adds(handler, 1)
        await snapshots_of(store).save_snapshot(_snap(50, data=b'{"count": 50, "total": 9}'))
        with caplog.at_level(logging.WARNING):
            state = await handler.load("tally-1")
        assert "fewer events" in caplog.text
        assert state == Tally(1, 1)
