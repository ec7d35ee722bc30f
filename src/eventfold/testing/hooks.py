"""The conformance suite of transaction hooks (`eventfold.store.TransactionHooks`).

Subclass `TransactionHookConformance` in a test module and provide a ``store`` fixture
that yields an open, empty store declaring `SupportsTransactionHooks`. The participants
here write to one table, ``ef_hook_conformance``, created in the store's database by
their ``attach``; each test tells its rows apart by a run id. Async tests need
pytest-asyncio with ``asyncio_mode = "auto"``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from eventfold import (
    ANY,
    NO_STREAM,
    START,
    Event,
    EventfoldError,
    EventStore,
    Position,
    RecordedEvent,
    StoreError,
)
from eventfold.store.ports import (
    HookOrder,
    HookTransaction,
    SupportsTransactionHooks,
    TransactionHooks,
    TransactionParticipant,
    capability,
)

from .conformance import settle

__all__ = ["TransactionHookConformance"]

_CREATE = (
    "CREATE TABLE IF NOT EXISTS ef_hook_conformance "
    "(run TEXT NOT NULL, participant TEXT NOT NULL, event_id TEXT NOT NULL)"
)


class Booked(Event):
    """The suite's event."""

    __event_type__ = "conformance.Booked"
    n: int


class Refused(EventfoldError):
    """What a participant of the suite raises to refuse an append."""


def _marks(tx: HookTransaction, n: int) -> str:
    mark = "?" if tx.paramstyle == "qmark" else "%s"
    return ", ".join([mark] * n)


class Recorder(TransactionParticipant):
    """Records what it sees; writes one row per event; refuses streams by prefix."""

    def __init__(
        self,
        name: str,
        run: str,
        *,
        order: int = HookOrder.UNIT_OF_WORK,
        log: list[tuple[str, str]] | None = None,
        refuse: str | None = None,
        crash: str | None = None,
        fail_attach: bool = False,
    ) -> None:
        self.name = name
        self.order = order
        self.run = run
        self.log = log if log is not None else []
        self.refuse = refuse
        self.crash = crash
        self.fail_attach = fail_attach
        self.caught_up: list[RecordedEvent] = []
        """The events its attach read from the log."""
        self.seen: list[RecordedEvent] = []
        """The events given to `apply`, including those of transactions rolled back."""

    async def attach(self, tx: HookTransaction) -> None:
        self.log.append((self.name, "attach"))
        await tx.execute(_CREATE)
        await self._write(tx, "attached")
        at = START
        while events := await tx.read_all(at, 7):
            self.caught_up += events
            at = events[-1].position
        if self.fail_attach:
            raise Refused(f"{self.name} refuses to attach")

    async def begin(self, tx: HookTransaction) -> None:
        self.log.append((self.name, "begin"))

    async def apply(self, tx: HookTransaction, events: Sequence[RecordedEvent]) -> None:
        self.log.append((self.name, "apply"))
        self.seen += events
        for e in events:
            if self.refuse is not None and e.stream_id.startswith(self.refuse):
                raise Refused(f"{self.name} refuses {e.stream_id}")
            if self.crash is not None and e.stream_id.startswith(self.crash):
                raise ValueError(f"{self.name} crashed on {e.stream_id}")
            await self._write(tx, str(e.event_id))

    async def _write(self, tx: HookTransaction, event_id: str) -> None:
        query = f"INSERT INTO ef_hook_conformance VALUES ({_marks(tx, 3)})"
        await tx.execute(query, (self.run, self.name, event_id))


class _Query(TransactionParticipant):
    """Reads the suite's table in an attach of its own."""

    order = HookOrder.UNIT_OF_WORK

    def __init__(self, run: str) -> None:
        self.name = f"reader-{uuid.uuid4().hex}"
        self.run = run
        self.rows: list[tuple[Any, ...]] = []

    async def attach(self, tx: HookTransaction) -> None:
        await tx.execute(_CREATE)
        query = (
            "SELECT participant, event_id FROM ef_hook_conformance "
            f"WHERE run = {_marks(tx, 1)} ORDER BY participant, event_id"
        )
        self.rows = await tx.execute(query, (self.run,))

    async def apply(self, tx: HookTransaction, events: Sequence[RecordedEvent]) -> None:
        return None


class TransactionHookConformance:
    """What every backend's transaction hooks do (needs a ``store`` fixture)."""

    @pytest.fixture
    def run(self) -> str:
        return uuid.uuid4().hex

    @staticmethod
    def hooks(store: EventStore) -> TransactionHooks:
        return capability(store, SupportsTransactionHooks).transaction_hooks

    async def written(self, store: EventStore, run: str) -> dict[str, set[str]]:
        """The rows committed so far, as event ids by participant (``attached`` marks
        an attach that committed)."""
        reader = _Query(run)
        await self.hooks(store).add(reader)
        await self.hooks(store).remove(reader.name)
        out: dict[str, set[str]] = {}
        for participant, event_id in reader.rows:
            out.setdefault(participant, set()).add(event_id)
        return out

    async def logged(self, store: EventStore, last: Position) -> list[RecordedEvent]:
        await settle(store, last)
        return [e async for e in store.read_all()]

    async def test_participants_see_the_appended_events_and_write_with_them(
        self, store: EventStore, run: str
    ) -> None:
        hooks = self.hooks(store)
        first = Recorder("first", run, order=HookOrder.INLINE_PROJECTIONS)
        last = Recorder("last", run, order=HookOrder.UNIT_OF_WORK)
        await hooks.add(last)
        await hooks.add(first)
        await store.append("booking-0", [Booked(n=0), Booked(n=1)], expected_version=NO_STREAM)
        # Concurrent appends: a group commit on the backends that have one.
        results = await asyncio.gather(
            *(store.append(f"booking-{i % 5}", [Booked(n=i)], expected_version=ANY)
              for i in range(2, 32))
        )  # fmt: skip
        log = await self.logged(store, max(r.position for r in results))
        assert len(log) == 32
        key = [(e.event_id, e.stream_id, e.version, e.position, e.data) for e in log]
        for participant in (first, last):
            seen = sorted(participant.seen, key=lambda e: e.position)
            assert [(e.event_id, e.stream_id, e.version, e.position, e.data) for e in seen] == key
        ids = {str(e.event_id) for e in log}
        assert await self.written(store, run) == {
            "first": ids | {"attached"},
            "last": ids | {"attached"},
        }

    async def test_participants_run_in_the_declared_order(
        self, store: EventStore, run: str
    ) -> None:
        hooks = self.hooks(store)
        log: list[tuple[str, str]] = []
        for name, order in [("c", 300), ("z", 100), ("a", 100), ("m", 200)]:
            await hooks.add(Recorder(name, run, order=order, log=log))
        assert [p.name for p in hooks.participants] == ["a", "z", "m", "c"]
        # Each attach runs alone, in its own transaction (its begin first).
        assert log == [(n, phase) for n in ["c", "z", "a", "m"] for phase in ["begin", "attach"]]
        log.clear()
        await store.append("booking-1", [Booked(n=1)], expected_version=NO_STREAM)
        names = ["a", "z", "m", "c"]
        assert log == [(n, "begin") for n in names] + [(n, "apply") for n in names]

    async def test_a_failing_participant_fails_only_the_appends_it_was_given(
        self, store: EventStore, run: str
    ) -> None:
        hooks = self.hooks(store)
        writer = Recorder("writer", run, order=HookOrder.INLINE_PROJECTIONS)
        judge = Recorder("judge", run, refuse="refused", crash="crashing")
        await hooks.add(writer)
        await hooks.add(judge)
        streams = ["ok-1", "refused-1", "ok-2", "crashing-1", "ok-3", "ok-4"]
        results = await asyncio.gather(
            *(store.append(s, [Booked(n=i)], expected_version=NO_STREAM)
              for i, s in enumerate(streams)),
            return_exceptions=True,
        )  # fmt: skip
        outcome = dict(zip(streams, results, strict=True))
        assert isinstance(outcome["refused-1"], Refused)
        crashed = outcome["crashing-1"]
        assert isinstance(crashed, StoreError)
        assert "participant 'judge' raised" in str(crashed)
        assert "crashed on crashing-1" in str(crashed)
        for s in ("ok-1", "ok-2", "ok-3", "ok-4"):
            assert not isinstance(outcome[s], BaseException), outcome[s]
            assert await store.stream_version(s) == 1
        assert await store.stream_version("refused-1") == 0
        assert await store.stream_version("crashing-1") == 0
        # The writer's rows of the failed appends were rolled back with them.
        committed = {
            str(e.event_id)
            for s in ("ok-1", "ok-2", "ok-3", "ok-4")
            async for e in store.read_stream(s)
        }
        written = await self.written(store, run)
        assert written["writer"] == written["judge"] == committed | {"attached"}
        # A lone append fails the same way.
        with pytest.raises(Refused):
            await store.append("refused-2", [Booked(n=9)], expected_version=NO_STREAM)
        assert await store.stream_version("refused-2") == 0

    async def test_a_removed_participant_sees_no_more_appends(
        self, store: EventStore, run: str
    ) -> None:
        hooks = self.hooks(store)
        gone, kept = Recorder("gone", run), Recorder("kept", run)
        await hooks.add(gone)
        await hooks.add(kept)
        await store.append("booking-1", [Booked(n=1)], expected_version=NO_STREAM)
        await hooks.remove("gone")
        await hooks.remove("never-added")
        assert [p.name for p in hooks.participants] == ["kept"]
        await store.append("booking-1", [Booked(n=2)], expected_version=1)
        assert [e.data for e in gone.seen] == [Booked(n=1)]
        assert [e.data for e in kept.seen] == [Booked(n=1), Booked(n=2)]
        written = await self.written(store, run)
        assert (len(written["gone"]), len(written["kept"])) == (2, 3)

    async def test_adding_a_taken_name_replaces_the_participant(
        self, store: EventStore, run: str
    ) -> None:
        hooks = self.hooks(store)
        old, new = Recorder("same", run), Recorder("same", run)
        await hooks.add(old)
        await hooks.add(new)
        assert list(hooks.participants) == [new]
        await store.append("booking-1", [Booked(n=1)], expected_version=NO_STREAM)
        assert (old.seen, [e.data for e in new.seen]) == ([], [Booked(n=1)])

    async def test_attach_catches_up_with_no_append_in_between(
        self, store: EventStore, run: str
    ) -> None:
        for i in range(10):
            await store.append(f"booking-{i}", [Booked(n=i)], expected_version=NO_STREAM)
        late = Recorder("late", run)
        appends = [
            store.append(f"booking-{i % 10}", [Booked(n=i)], expected_version=ANY)
            for i in range(10, 40)
        ]
        # Appends asked for before and after the add, all running while it attaches.
        tasks = [asyncio.ensure_future(a) for a in appends[:15]]
        adding = asyncio.ensure_future(self.hooks(store).add(late))
        tasks += [asyncio.ensure_future(a) for a in appends[15:]]
        await adding
        results = await asyncio.gather(*tasks)
        log = await self.logged(store, max(r.position for r in results))
        # Every event exactly once: read by the attach, or given to apply afterwards.
        seen = late.caught_up + sorted(late.seen, key=lambda e: e.position)
        assert [e.event_id for e in seen] == [e.event_id for e in log]
        assert len(late.caught_up) >= 10

    async def test_a_failing_attach_changes_nothing(self, store: EventStore, run: str) -> None:
        hooks = self.hooks(store)
        kept = Recorder("kept", run)
        await hooks.add(kept)
        with pytest.raises(Refused):
            await hooks.add(Recorder("kept", run, fail_attach=True))
        with pytest.raises(Refused):
            await hooks.add(Recorder("other", run, fail_attach=True))
        assert list(hooks.participants) == [kept]
        await store.append("booking-1", [Booked(n=1)], expected_version=NO_STREAM)
        assert len(kept.seen) == 1
        assert set(await self.written(store, run)) == {"kept"}  # the failed attaches wrote nothing
