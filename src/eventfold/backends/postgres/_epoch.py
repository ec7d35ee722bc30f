"""Epochs of the PostgreSQL global log: its order survives a move to another server.

The log is ordered by the writing transaction's id (see `_store`). A
logical copy of a store (``pg_dump`` / ``pg_restore``, logical replication) carries the
stored ids to a server whose transaction counter may lie far behind them. Left alone, the
horizon there (the oldest running id) would hide the copied history until the counter
caught up, and new events would sort before it, behind every checkpoint: silent loss.

So a row's ``transaction_id`` is the server's id plus the *base* of the epoch it was
written in (the column's default adds it; epoch 0's base is 0, every store's until it
moves). When a store opens a database whose newest stored id is at or past the server's
next id plus the current base, it starts a new epoch whose base puts every later
transaction after all stored rows. Stored ids never change, so positions and the
checkpoints that hold them stay valid, and new events sort after the history. Physical
copies (base backups, streaming replicas, ``pg_upgrade``) keep the server's counter, so
they never start an epoch.

`HorizonWatch` is the alarm for what the epoch cannot catch: rows the horizon hides for
longer than a bound, with the cause named (a long transaction, or ids ahead of the counter
because the database was copied in while this store was open).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, NamedTuple

import psycopg

from ...errors import EventfoldError
from ._schema import Statements

__all__ = ["Epoch", "HorizonWatch", "current_epoch", "settle_epoch"]

logger: Final = logging.getLogger("eventfold.postgres")

HORIZON_WARNING_AFTER: Final = 60.0
"""Seconds the horizon may hide the same row before the store logs a warning."""


class Epoch(NamedTuple):
    """The epoch a store writes in: its number and the base added to transaction ids."""

    number: int
    base: int


async def settle_epoch(
    conn: psycopg.AsyncConnection[Any], st: Statements, lock: bytes, key: str
) -> Epoch:
    """The store's current epoch, after starting a new one if the stored ids lie at or
    ahead of the server's counter (on an autocommit connection, at open)."""
    number, base, next_xid, stored = await _state(conn, st)
    if stored is None or stored < next_xid + base:
        return Epoch(number, base)  # the usual case: one read, no lock
    async with conn.transaction():
        await conn.execute(lock, (key,))  # the migrations' lock: one opener does it
        number, base, next_xid, stored = await _state(conn, st)
        if stored is None or stored < next_xid + base:
            return Epoch(number, base)
        # Every later transaction's id is at least next_xid: with this base its rows
        # sort after the newest stored one.
        new = Epoch(number + 1, stored + 1 - next_xid)
        await conn.execute(st.start_epoch, (new.number, new.base, next_xid, stored))
        await conn.execute(st.epoch_default(new.base))
    logger.info(
        "eventfold schema %s: stored transaction ids (up to %d) lie ahead of this server's "
        "counter (%d), as after a logical dump and restore or logical replication from "
        "another server; started epoch %d (base %d) so new events sort after them",
        st.schema,
        stored,
        next_xid,
        new.number,
        new.base,
    )
    return new


async def current_epoch(conn: psycopg.AsyncConnection[Any], st: Statements) -> Epoch:
    """The store's current epoch as recorded, never starting one (a read-only open)."""
    number, base, _, _ = await _state(conn, st)
    return Epoch(number, base)


async def _state(
    conn: psycopg.AsyncConnection[Any], st: Statements
) -> tuple[int, int, int, int | None]:
    row = await (await conn.execute(st.epoch_state)).fetchone()
    assert row is not None  # migration 4 stores epoch 0
    return int(row[0]), int(row[1]), int(row[2]), row[3]


Fetch = Callable[[bytes, Any], Awaitable[list[tuple[Any, ...]]]]


class HorizonWatch:
    """Logs a warning when the horizon hides the same row for longer than ``after``
    seconds, naming the cause. `poke` is cheap until a check is due (a clock read)."""

    def __init__(self, st: Statements, fetch: Fetch, after: float = HORIZON_WARNING_AFTER) -> None:
        self.after = after
        """The bound, in seconds (default `HORIZON_WARNING_AFTER`)."""
        self._fetch = fetch
        self.start(st, Epoch(0, 0))

    def start(self, st: Statements, epoch: Epoch) -> None:
        """Watch with these statements, for a store that opened in ``epoch``."""
        self._st = st
        self._epoch = epoch
        self._due = 0.0
        self._hidden: int | None = None
        """The oldest hidden row's transaction id at the last check."""
        self._since = 0.0
        self._warned: int | None = None

    async def poke(self) -> None:
        """Check, if a check is due (every quarter of the bound, at most every 10 s)."""
        now = time.monotonic()
        if now < self._due:
            return
        self._due = now + min(self.after / 4, 10.0)
        try:
            (row,) = await self._fetch(self._st.hidden, ())
        except EventfoldError as exc:
            # Only a diagnosis: the read that poked has its rows; its next query reports.
            logger.debug("eventfold schema %s: horizon check failed: %s", self._st.schema, exc)
            return
        hidden, next_xid, db_epoch = row
        if hidden != self._hidden:
            self._hidden, self._since = hidden, now
            return
        if hidden is None or hidden == self._warned or now - self._since < self.after:
            return
        self._warned = hidden
        logger.warning(await self._cause(int(hidden), int(next_xid), int(db_epoch)))

    async def _cause(self, hidden: int, next_xid: int, db_epoch: int) -> str:
        schema, waited = self._st.schema, round(time.monotonic() - self._since)
        head = (
            f"eventfold schema {schema}: the global log has hidden events from transaction "
            f"{hidden} for {waited} s or more: no reader of read_all sees them or anything "
            "after them"
        )
        if db_epoch != self._epoch.number:
            return (
                f"{head}: the store started epoch {db_epoch} after this process opened it in "
                f"epoch {self._epoch.number} (the database was restored or replicated from "
                "another server meanwhile); restart this process so it reopens the store"
            )
        if hidden >= next_xid + self._epoch.base:
            return (
                f"{head}: their transaction ids lie ahead of this server's counter "
                f"({next_xid + self._epoch.base} in this epoch), as after a logical dump and "
                "restore or logical replication from another server while this store was "
                "open; restart the process so that opening the store starts a new epoch"
            )
        rows = await self._fetch(_OLDEST, ())
        oldest = (
            f"the oldest is pid {rows[0][0]} in database {rows[0][1]!r} ({rows[0][2]}, "
            f"open since {rows[0][3]:%Y-%m-%d %H:%M:%S %Z})"
            if rows
            else "none is in pg_stat_activity: look for a prepared transaction in pg_prepared_xacts"
        )
        return (
            f"{head}: a write transaction in this cluster has been open all that time, and "
            f"rows become readable only when every older one ends ({oldest}); end it, and "
            "keep write transactions short (idle_in_transaction_session_timeout helps)"
        )


# The write transaction that has run longest anywhere in the cluster (xids are cluster-wide).
_OLDEST = b"""SELECT pid, datname, state, xact_start FROM pg_stat_activity
    WHERE backend_xid IS NOT NULL ORDER BY age(backend_xid) DESC LIMIT 1"""
