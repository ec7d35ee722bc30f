"""Transaction hooks on SQLite: participants run inside the writer's transaction.

The group writer (`_group`) holds a `HookRunner`, or None while no participant is
registered (then an append pays nothing for hooks). It calls `HookRunner.begin` once
each transaction begins and `HookRunner.apply` with the rows of each group (or, on the
careful path, of each append under its own savepoint). Participants' coroutines run to
their end on the thread that holds the connection (`eventfold._coro.run_sync`): they
may await ``tx`` only.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from ..._codec import Codec
from ..._coro import WouldSuspend, run_sync
from ..._events import RecordedEvent
from ..._position import Position
from ...errors import EventfoldError, StoreError
from ...store._common import participant_failed, participant_order
from ...store.ports import TransactionParticipant
from . import _schema as sql
from ._errors import is_driver_error
from ._tx import transaction

if TYPE_CHECKING:
    from ._store import SQLiteStore

__all__ = ["HookRunner", "SQLiteHookTransaction", "SQLiteTransactionHooks", "run_participant"]


class SQLiteHookTransaction:
    """`HookTransaction` on the writer connection: its coroutines never suspend."""

    __slots__ = ("_codec", "connection")

    backend = "sqlite"
    paramstyle = "qmark"
    may_suspend = False

    def __init__(self, conn: sqlite3.Connection, codec: Codec) -> None:
        self.connection = conn
        self._codec = codec

    async def execute(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.connection.execute(query, params).fetchall()

    async def read_all(self, after: Position, limit: int) -> list[RecordedEvent]:
        rows = self.connection.execute(sql.READ_ALL, (after.seq, limit)).fetchall()
        return self._codec.decode_rows(rows)


def run_participant(participant: TransactionParticipant, coro: Coroutine[Any, Any, None]) -> None:
    """Run one of ``participant``'s coroutines on this thread; errors say whose it was."""
    try:
        run_sync(coro)
    except WouldSuspend:
        raise StoreError(
            f"transaction participant {participant.name!r} awaited something other than its "
            "transaction; on SQLite a participant runs inside the writer's transaction and "
            "may only await tx"
        ) from None
    except Exception as exc:
        if isinstance(exc, EventfoldError) or is_driver_error(exc):
            raise
        raise participant_failed(participant, exc) from exc


class HookRunner:
    """The registered participants, in the order they run (immutable: adding or
    removing one makes a new runner)."""

    __slots__ = ("_codec", "participants")

    def __init__(self, codec: Codec, participants: Sequence[TransactionParticipant]) -> None:
        self._codec = codec
        self.participants = tuple(sorted(participants, key=participant_order))

    def with_participant(self, participant: TransactionParticipant) -> HookRunner:
        kept = [p for p in self.participants if p.name != participant.name]
        return HookRunner(self._codec, [*kept, participant])

    def without(self, name: str) -> HookRunner | None:
        kept = [p for p in self.participants if p.name != name]
        return HookRunner(self._codec, kept) if kept else None

    def begin(self, cur: sqlite3.Cursor) -> None:
        tx = SQLiteHookTransaction(cur.connection, self._codec)
        for p in self.participants:
            run_participant(p, p.begin(tx))

    def apply(self, cur: sqlite3.Cursor, rows: list[tuple[Any, ...]]) -> None:
        """Give every participant the events of ``rows`` (as the group writer inserts
        them: position first)."""
        events = self._codec.decode_rows(
            [(r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], 0, r[0]) for r in rows]
        )
        tx = SQLiteHookTransaction(cur.connection, self._codec)
        for p in self.participants:
            run_participant(p, p.apply(tx, events))


class SQLiteTransactionHooks:
    """`TransactionHooks` of a `SQLiteStore`. Participants are registered on the open
    store's writer: closing the store forgets them."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    @property
    def participants(self) -> Sequence[TransactionParticipant]:
        writer = self._store._writer
        runner = writer.group.hooks if writer is not None else None
        return runner.participants if runner is not None else ()

    async def add(self, participant: TransactionParticipant) -> None:
        store = self._store
        store._check_open()
        writer = store._writer
        assert writer is not None
        codec = store.codec

        # On the writer's thread, between groups: no append can fall between the
        # participant's attach and its first apply.
        def attach(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                tx = SQLiteHookTransaction(conn, codec)
                run_participant(participant, participant.begin(tx))
                run_participant(participant, participant.attach(tx))
            group = writer.group
            runner = group.hooks or HookRunner(codec, ())
            group.hooks = runner.with_participant(participant)

        await store.on_writer(attach)

    async def remove(self, name: str) -> None:
        writer = self._store._writer
        if writer is None:
            return  # closed: nothing is registered

        def drop(conn: sqlite3.Connection) -> None:
            group = writer.group
            if group.hooks is not None:
                group.hooks = group.hooks.without(name)

        await self._store.on_writer(drop)
