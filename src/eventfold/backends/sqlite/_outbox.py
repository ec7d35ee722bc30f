"""The SQLite outbox: messages units of work commit, read in commit order.

The table is ``outbox`` (migration 4). Its ``position`` is an AUTOINCREMENT key given by
the one writer connection inside the committing transaction, and a transaction commits
whole before the next one starts, so position order is commit order: a reader never
skips a message that commits late.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ..._position import Position
from ...errors import InvalidInput
from ...store._common import check_limit, log_start
from ...store._outbox import Outgoing, decode_headers
from ...store.ports import OutboxMessage

__all__ = ["HEAD", "INSERT", "insert_messages", "prune_sql", "read_sql", "to_messages"]

INSERT = (
    "INSERT INTO outbox (message_id, destination, key, payload, headers, recorded_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_COLUMNS = "position, message_id, destination, key, payload, headers, recorded_at"
_READ = f"SELECT {_COLUMNS} FROM outbox WHERE position > ? ORDER BY position LIMIT ?"
_READ_ONE = (
    f"SELECT {_COLUMNS} FROM outbox WHERE destination = ? AND position > ? "
    "ORDER BY destination, position LIMIT ?"
)
HEAD = "SELECT coalesce(max(position), 0) FROM outbox"
HEAD_ONE = "SELECT coalesce(max(position), 0) FROM outbox WHERE destination = ?"
PRUNE = "DELETE FROM outbox WHERE destination = ? AND position <= ?"


def insert_messages(cur: sqlite3.Cursor, messages: Sequence[Outgoing], now: int) -> int:
    """Insert the messages; the position of the last one. The one writer connection
    gives one transaction's rows consecutive positions, so the others are just before it."""
    rows = [(m.message_id, m.destination, m.key, m.payload, m.headers, now) for m in messages]
    if len(rows) == 1:
        cur.execute(INSERT, rows[0])
        last = cur.lastrowid
    else:
        cur.executemany(INSERT, rows)
        last = cur.execute("SELECT last_insert_rowid()").fetchone()[0]
    assert isinstance(last, int)
    return last


def read_sql(after: Position, limit: int, destination: str | None) -> tuple[str, tuple[Any, ...]]:
    """The query and parameters of `read_outbox` (checking its arguments)."""
    start = log_start(after, paired=False).seq
    n = check_limit(limit)
    if n is None:
        raise InvalidInput("read_outbox limit must be an int >= 0, got None")
    if destination is None:
        return _READ, (start, n)
    return _READ_ONE, (destination, start, n)


def prune_sql(destination: str, up_to: Position) -> tuple[str, tuple[Any, ...]]:
    return PRUNE, (destination, log_start(up_to, paired=False).seq)


def to_messages(rows: list[Any]) -> list[OutboxMessage]:
    return [
        OutboxMessage(
            Position(0, position), bytes(mid), destination, key, bytes(payload),
            decode_headers(headers), recorded,
        )
        for position, mid, destination, key, payload, headers, recorded in rows
    ]  # fmt: skip
