"""Inline projections on PostgreSQL: applied in the append's own transaction.

An inline append is one transaction on one pooled connection: it takes a transaction-
scoped advisory lock per projection (in name order, so two sets never deadlock), runs
its appends, reads back the rows it inserted, applies the projections to them through a
`PostgresTransaction` on the same connection, moves each checkpoint, and commits. The
store's append batcher still groups concurrent appends, so a group shares the locks, the
projections' reads and one commit.

The lock is taken before the transaction's first write, so the transaction id (which
PostgreSQL assigns at the first write) is handed out in lock order: inline transactions
commit in the order of their ids, and the projection sees the events in the global log's
order, as a rebuild would. It also makes the checkpoint a plain upsert (its writers take
turns) and lets attaching catch up with no inline append in between. The price: inline
appends take turns across every process of the database (one group at a time, each a few
round trips), including appends whose events no inline projection handles, since each
one moves the checkpoint that `wait_for` reads. Throughput beyond that is the daemon's
job.

Every process that appends must attach the same inline projections, right after opening
the store and before its first append. An event appended by a process without them is
not applied once an inline append has moved the checkpoint past it (a rolling deploy
that adds an inline projection should bump its version and rebuild it once every
process runs it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from ..._events import RecordedEvent
from ..._position import START, Position
from ...store.ports import (
    HookOrder,
    HookTransaction,
    InlineProjection,
    TransactionParticipant,
    VersionState,
    now_us,
)
from ._read_models import PostgresReadModelStore, PostgresTransaction
from ._store import PostgresStore

__all__ = ["PostgresInline"]

_LOCK = b"SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"
_CATCH_UP_PAGE = 2000


class PostgresInline(TransactionParticipant):
    """The transaction participant that runs inline projections (see the module
    docstring)."""

    order = HookOrder.INLINE_PROJECTIONS

    def __init__(
        self, name: str, store: PostgresStore, projections: Sequence[InlineProjection]
    ) -> None:
        self.name = name
        self._models = PostgresReadModelStore(store)
        self._projections = sorted(projections, key=lambda p: p.name)
        self._keys = [f"eventfold.inline:{store.schema}:{p.name}" for p in self._projections]
        self._put_checkpoint = self._models.statements.put_checkpoint

    async def prepare(self) -> None:
        """Create or migrate the read-model tables (before attaching)."""
        await self._models.ensure_schema()

    async def begin(self, tx: HookTransaction) -> None:
        conn: psycopg.AsyncConnection[Any] = tx.connection
        for key in self._keys:
            await conn.execute(_LOCK, (key,))

    async def apply(self, tx: HookTransaction, events: Sequence[RecordedEvent]) -> None:
        conn: psycopg.AsyncConnection[Any] = tx.connection
        last = events[-1].position
        async with self._models.joined(conn) as models_tx:
            for p in self._projections:
                mine = [e for e in events if p.handles(e)]
                if mine:
                    await p.apply(mine, models_tx)
        now = now_us()
        for p in self._projections:
            params = (p.name, p.version, 0, last.tx, last.seq, now)
            await conn.execute(self._put_checkpoint, params)

    async def attach(self, tx: HookTransaction) -> None:
        """Make each projection's version active and fold the log's events after its
        checkpoint (in the attach transaction, which holds the locks: no inline append in
        between)."""
        async with self._models.joined(tx.connection) as models_tx:
            for p in self._projections:
                await self._catch_up(tx, models_tx, p)

    async def _catch_up(
        self, tx: HookTransaction, models_tx: PostgresTransaction, p: InlineProjection
    ) -> None:
        if await models_tx.get_version(p.name, p.version) is None:
            await models_tx.set_version(p.name, p.version, VersionState.BUILDING, expected=None)
            await p.run_setup(models_tx)
        await models_tx.activate(p.name, p.version)
        row = await models_tx.get_checkpoint(p.name, p.version, 0)
        at: Position = START if row is None else row.position
        while events := await tx.read_all(at, _CATCH_UP_PAGE):
            mine = [e for e in events if p.handles(e)]
            if mine:
                await p.apply(mine, models_tx)
            at = events[-1].position
        # Written even when nothing was read: the row marks the projection as inline.
        params = (p.name, p.version, 0, at.tx, at.seq, now_us())
        await tx.connection.execute(self._put_checkpoint, params)
