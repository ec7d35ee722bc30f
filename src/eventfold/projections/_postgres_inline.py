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

import asyncio
from collections.abc import Sequence
from typing import Any

import psycopg

from ..store.postgres import PostgresStore
from .definition import ProjectionBase
from .postgres import PostgresReadModelStore, PostgresTransaction
from .store import VersionState, now_us

__all__ = ["PostgresInline"]

_LOCK = b"SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"
_CATCH_UP_PAGE = 2000


class PostgresInline:
    """The hook `PostgresStore` runs in every append (see the module docstring)."""

    def __init__(self, store: PostgresStore, projections: Sequence[ProjectionBase]) -> None:
        self.ready = asyncio.Event()
        self._store = store
        self._codec = store.codec
        self._models = PostgresReadModelStore(store)
        self._projections = sorted(projections, key=lambda p: p.name)
        self._keys = [f"eventfold.inline:{store.schema}:{p.name}" for p in self._projections]
        self._put_checkpoint = self._models._sql.put_checkpoint

    async def begin(self, conn: psycopg.AsyncConnection[Any]) -> None:
        for key in self._keys:
            await conn.execute(_LOCK, (key,))

    async def apply(self, conn: psycopg.AsyncConnection[Any], rows: list[tuple[Any, ...]]) -> None:
        events = self._codec.decode_rows(rows)
        last = events[-1].position
        tx = PostgresTransaction(self._models, conn)
        try:
            for p in self._projections:
                mine = [e for e in events if p.handles(e)]
                if mine:
                    await p.apply(mine, tx)
            await tx._finish()
        finally:
            tx._closed = True
        now = now_us()
        for p in self._projections:
            params = (p.name, p.version, 0, last.tx, last.seq, now)
            await conn.execute(self._put_checkpoint, params)

    async def catch_up(self) -> None:
        """Make each projection's version active and fold the log's events after its
        checkpoint, in one transaction holding the locks (no inline append in between)."""
        await self._models.ensure_schema()
        pool = self._store._require_pool()
        try:
            async with pool.connection() as conn, conn.transaction():
                await self.begin(conn)
                tx = PostgresTransaction(self._models, conn)
                for p in self._projections:
                    await self._catch_up(conn, tx, p)
                await tx._finish()
                tx._closed = True
        except psycopg.Error as exc:
            raise self._store._translate(exc) from exc

    async def _catch_up(
        self, conn: psycopg.AsyncConnection[Any], tx: PostgresTransaction, p: ProjectionBase
    ) -> None:
        if await tx.get_version(p.name, p.version) is None:
            await tx.set_version(p.name, p.version, VersionState.BUILDING, expected=None)
            await p.run_setup(tx)
        await tx.activate(p.name, p.version)
        row = await tx.get_checkpoint(p.name, p.version, 0)
        x, s = ("0", 0) if row is None else (str(row.position.tx), row.position.seq)
        read = self._store._sql.read_all[(False, False)]
        while True:
            params = {"x": x, "s": s, "types": None, "cats": None, "n": _CATCH_UP_PAGE}
            rows = await (await conn.execute(read, params, binary=True)).fetchall()
            if not rows:
                break
            events = [e for e in self._codec.decode_rows(rows) if p.handles(e)]
            if events:
                await p.apply(events, tx)
            x, s = str(rows[-1][8]), rows[-1][9]
        # Written even when nothing was read: the row marks the projection as inline.
        await conn.execute(self._put_checkpoint, (p.name, p.version, 0, int(x), s, now_us()))
