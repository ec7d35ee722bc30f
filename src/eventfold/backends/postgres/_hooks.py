"""Transaction hooks on PostgreSQL: participants run in the append's own transaction.

A transaction with participants runs on one pooled connection, pipelined: each
participant's ``begin``, the appends, one read of the rows they inserted, each
participant's ``apply``, the commit. A batch of appends shares one such transaction; when
it fails, the store runs each append again in a transaction of its own
(`_batch.append_many`), so a participant that raises fails only that append.

Adding a participant holds appends back while it attaches: the appends submitted before
are drained (they run without it), and later ones wait until its ``attach`` has
committed (`PostgresTransactionHooks.ready`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql as pgsql

from ..._events import RecordedEvent
from ..._position import Position
from ...errors import EventfoldError
from ...store._common import participant_failed, participant_order
from ...store.ports import TransactionParticipant
from ._errors import is_driver_error, translate

if TYPE_CHECKING:
    from ._batch import Append
    from ._store import PostgresStore

__all__ = ["PostgresHookTransaction", "PostgresTransactionHooks", "run_with_participants"]

_SEARCH_PATH = b"SELECT set_config('search_path', %s, true)"


class PostgresHookTransaction:
    """`HookTransaction` on the append's pooled connection."""

    backend = "postgresql"
    paramstyle = "format"
    may_suspend = True

    def __init__(self, store: PostgresStore, conn: psycopg.AsyncConnection[Any]) -> None:
        self.connection = conn
        self._store = store
        self._path_set = False

    async def execute(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = self.connection
        # A block of its own syncs the transaction's pipeline, so the rows are there.
        async with conn.pipeline():
            if not self._path_set:
                schema = pgsql.Identifier(self._store.schema).as_string(None)
                await conn.execute(_SEARCH_PATH, (f"{schema}, public",))
                self._path_set = True
            cur = await conn.execute(query, tuple(params))
        return await cur.fetchall() if cur.description is not None else []

    async def read_all(self, after: Position, limit: int) -> list[RecordedEvent]:
        store = self._store
        query = store.statements.read_committed
        params = {"x": str(after.tx), "s": after.seq, "types": None, "cats": None, "n": limit}
        cur = await self.connection.execute(query, params, binary=True)
        return store.codec.decode_rows(await cur.fetchall())


async def _run(participant: TransactionParticipant, step: Awaitable[None]) -> None:
    """Await one of ``participant``'s coroutines; errors say whose it was."""
    try:
        await step
    except Exception as exc:
        if isinstance(exc, EventfoldError) or is_driver_error(exc):
            raise
        raise participant_failed(participant, exc) from exc


async def run_with_participants(
    store: PostgresStore,
    conn: psycopg.AsyncConnection[Any],
    participants: Sequence[TransactionParticipant],
    items: list[Append],
) -> list[tuple[Any, ...]]:
    """``items`` and the participants over their events, in one transaction on ``conn``.

    Returns each append's ``(base, tx, seq)`` row; raises whatever failed, with nothing
    committed.
    """
    tx = PostgresHookTransaction(store, conn)
    async with conn.pipeline(), conn.transaction():
        for p in participants:
            await _run(p, p.begin(tx))
        cursors = [await conn.execute(item.query, item.params, binary=True) for item in items]
        inserted = await conn.execute(store.statements.this_transaction, binary=True)
        heads = [await cur.fetchone() for cur in cursors]
        rows = await inserted.fetchall()
        if rows:
            events = store.codec.decode_rows(rows)
            for p in participants:
                await _run(p, p.apply(tx, events))
    return [head for head in heads if head is not None]  # one row each, always


class _Entry:
    __slots__ = ("attached", "participant")

    def __init__(self, participant: TransactionParticipant) -> None:
        self.participant = participant
        self.attached = asyncio.Event()


class PostgresTransactionHooks:
    """`TransactionHooks` of a `PostgresStore`.

    `active` is what an append runs now: the participants that have attached.
    """

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._entries: list[_Entry] = []
        self.active: tuple[TransactionParticipant, ...] = ()
        self.holding: list[asyncio.Event] = []
        """One event per participant attaching now; appends wait for them (`ready`)."""

    @property
    def participants(self) -> Sequence[TransactionParticipant]:
        return tuple(e.participant for e in self._entries)

    async def ready(self) -> None:
        """Wait until no participant is attaching (an append calls this, then submits
        with no await in between: attaching drains what was submitted before)."""
        while self.holding:
            await self.holding[0].wait()

    async def add(self, participant: TransactionParticipant) -> None:
        store = self._store
        pool = store.require_pool()
        entry = _Entry(participant)
        previous = self._entries
        self._set([e for e in previous if e.participant.name != participant.name] + [entry])
        self.holding.append(entry.attached)
        try:
            await store.drain_appends()  # these ran without it: caught up below
            async with pool.connection() as conn, conn.transaction():
                tx = PostgresHookTransaction(store, conn)
                await _run(participant, participant.begin(tx))
                await _run(participant, participant.attach(tx))
        except BaseException as exc:
            self._set(previous)
            if is_driver_error(exc):
                raise translate(exc, store.where) from exc
            raise
        finally:
            self.holding.remove(entry.attached)
            entry.attached.set()
            self._set(self._entries)

    async def remove(self, name: str) -> None:
        self._set([e for e in self._entries if e.participant.name != name])
        await self._store.drain_appends()

    def _set(self, entries: list[_Entry]) -> None:
        self._entries = sorted(entries, key=lambda e: participant_order(e.participant))
        self.active = tuple(e.participant for e in self._entries if e.attached.is_set())
