"""The PostgreSQL outbox: messages units of work commit, read in commit order.

Rows of ``outbox`` (migration 5) carry their writing transaction's id in the store's
epoch (`_schema.epoch_terms`: a store moved by pg_dump keeps new messages after the
copied ones) and are read in ``(transaction_id, seq)`` order up to the horizon, the oldest
transaction still running, exactly as the global log is: a message that commits late
is never skipped.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from ..._position import Position
from ...errors import InvalidInput
from ...store._common import check_limit, log_start
from ...store._outbox import decode_headers
from ...store.ports import OutboxMessage
from ._schema import epoch_terms

__all__ = ["OutboxStatements", "read_params", "to_messages"]

_COLUMNS = """o.transaction_id::text::int8, o.seq, uuid_send(o.message_id), o.destination,
    o.key, o.payload, o.headers, (extract(epoch FROM o.recorded_at) * 1000000)::int8"""

# As the global log's `_READ_ALL` (see there for why both conditions).
_READ = """
    SELECT {columns} FROM {outbox} o
    WHERE (o.transaction_id, o.seq) > (%(x)s::xid8, %(s)s::int8)
      AND ((o.transaction_id = %(x)s::xid8 AND o.seq > %(s)s::int8)
           OR o.transaction_id > %(x)s::xid8)
      AND o.transaction_id < {edge}{filter}
    ORDER BY {order}
    LIMIT %(n)s
"""


class OutboxStatements:
    """The outbox's statements for one schema and epoch base."""

    def __init__(self, schema: str, base: int) -> None:
        self.base = base
        _, tx, edge = epoch_terms(base)
        names: dict[str, sql.Composable] = {
            "outbox": sql.Identifier(schema, "outbox"),
            "columns": sql.SQL(_COLUMNS),
            "tx": tx,
            "edge": edge,
        }

        def render(text: str, **extra: str) -> bytes:
            parts = {key: sql.SQL(value) for key, value in extra.items()}
            return sql.SQL(text).format(**names, **parts).as_bytes(None)

        self.insert = render(
            """INSERT INTO {outbox} (transaction_id, message_id, destination, key, payload,
                headers)
            SELECT {tx}, encode(m.id, 'hex')::uuid, m.dest, m.key, m.payload, m.headers
            FROM unnest(%(ids)b::bytea[], %(dests)s::text[], %(keys)s::text[],
                        %(payloads)b::bytea[], %(headers)b::bytea[])
                 WITH ORDINALITY AS m(id, dest, key, payload, headers, ord)
            ORDER BY m.ord
            RETURNING uuid_send(message_id), transaction_id::text::int8, seq"""
        )
        """Insert a unit's messages; each one's id and position (as `read_outbox` gives it)."""
        self.read = render(_READ, filter="", order="o.transaction_id, o.seq")
        self.read_one = render(
            _READ,
            filter="\n      AND o.destination = %(d)s",
            order="o.destination, o.transaction_id, o.seq",
        )
        head = """SELECT o.transaction_id::text::int8, o.seq FROM {outbox} o
            WHERE o.transaction_id < {edge}{filter} ORDER BY {order} LIMIT 1"""
        self.head = render(head, filter="", order="o.transaction_id DESC, o.seq DESC")
        self.head_one = render(
            head,
            filter=" AND o.destination = %(d)s",
            order="o.destination DESC, o.transaction_id DESC, o.seq DESC",
        )
        self.prune = render(
            """DELETE FROM {outbox} o WHERE o.destination = %(d)s
            AND (o.transaction_id, o.seq) <= (%(x)s::xid8, %(s)s::int8)"""
        )


def read_params(
    after: Position, limit: int, destination: str | None
) -> tuple[bool, dict[str, Any]]:
    """Whether the read is of one destination, and its parameters (checked)."""
    start = log_start(after, paired=True)
    n = check_limit(limit)
    if n is None:
        raise InvalidInput("read_outbox limit must be an int >= 0, got None")
    if destination is not None and not isinstance(destination, str):
        raise InvalidInput(f"destination must be a str or None, got {destination!r}")
    params = {"x": str(start.tx), "s": start.seq, "n": n, "d": destination}
    return destination is not None, params


def to_messages(rows: list[tuple[Any, ...]]) -> list[OutboxMessage]:
    return [
        OutboxMessage(
            Position(tx, seq), bytes(mid), destination, key, bytes(payload),
            decode_headers(headers), recorded,
        )
        for tx, seq, mid, destination, key, payload, headers, recorded in rows
    ]  # fmt: skip
