"""The PostgreSQL backend's connection settings: eventfold's own URL options, hiding a
password in messages, and how each pooled session is configured."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, NamedTuple
from urllib.parse import unquote, urlsplit

import psycopg

from ...errors import ConfigurationError, SchemaTooNew

__all__ = [
    "OPTIONS",
    "MigrationTrack",
    "applied",
    "configure",
    "configure_read_only",
    "int_option",
    "migrate",
    "scalar",
    "scrub",
    "split_url",
]

OPTIONS: Final = ("schema", "pool_min_size", "pool_max_size")
"""URL options eventfold takes for itself (libpq never sees them)."""


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """Take eventfold's own options out of the URL's query; libpq gets the rest as is."""
    if not isinstance(url, str):
        raise ConfigurationError(f"the PostgreSQL URL must be a str, got {type(url).__name__}")
    parts = urlsplit(url)
    keep: list[str] = []
    options: dict[str, str] = {}
    for piece in parts.query.split("&") if parts.query else ():
        key, _, value = piece.partition("=")
        if unquote(key) in OPTIONS:
            options[unquote(key)] = unquote(value)
        else:
            keep.append(piece)
    return parts._replace(query="&".join(keep)).geturl(), options


def int_option(options: dict[str, str], name: str, default: int) -> int:
    text = options.get(name)
    if text is None:
        return default
    if not text.isdigit():
        raise ConfigurationError(f"{name}={text!r} in the PostgreSQL URL must be an int >= 0")
    return int(text)


def scrub(text: str, secret: str) -> str:
    """``text`` with any occurrence of ``secret`` (a password or a whole URL) hidden."""
    if not secret:
        return text
    password = urlsplit(secret).password if "://" in secret else secret
    return text.replace(password, "***") if password else text


async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
    # Every statement here walks one index in the order it returns rows, a page at a
    # time. Row estimates for one stream or for the log's tail are often far off (and
    # generic plans of prepared statements average them away), which made the planner
    # pick a bitmap scan plus a sort that spills to disk: 1 s for a page instead of 5 ms.
    # So these sessions discourage sorts (a statement with no other plan still sorts),
    # parallel plans (worker start-up costs more than a page) and JIT (which the huge
    # cost of a discouraged plan would otherwise switch on).
    await conn.execute(
        "SET enable_sort = off; SET max_parallel_workers_per_gather = 0; SET jit = off"
    )


async def configure_read_only(conn: psycopg.AsyncConnection[Any]) -> None:
    """`configure`, for a store opened read-only: the server refuses any write too."""
    await configure(conn)
    await conn.execute("SET default_transaction_read_only = on")


async def scalar(cur: psycopg.AsyncCursor[Any]) -> int:
    row = await cur.fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


class MigrationTrack(NamedTuple):
    """One numbered migration track's statements (the store's, or the read models')."""

    table: str
    """The quoted name of the table recording the migrations applied."""
    has_table: bytes
    """``SELECT to_regclass(%s) IS NOT NULL``: whether that table exists."""
    applied: bytes
    """The highest migration number applied (0 for none)."""
    lock: bytes
    """Takes a transaction-scoped advisory lock on ``%s``."""
    lock_key: str
    setup: Sequence[bytes]
    """Statements run before the migrations (creating the schema and the table)."""
    migrations: Sequence[bytes]
    """Migration N is ``migrations[N - 1]``."""
    record: bytes
    """Records migration ``%s`` as applied."""


async def applied(conn: psycopg.AsyncConnection[Any], track: MigrationTrack) -> int:
    """The highest migration of ``track`` applied (0: its table does not exist), read
    without creating or locking anything."""
    row = await (await conn.execute(track.has_table, (track.table,))).fetchone()
    if row is None or not row[0]:
        return 0
    return await scalar(await conn.execute(track.applied))


async def migrate(conn: psycopg.AsyncConnection[Any], track: MigrationTrack) -> int:
    """Apply ``track``'s pending migrations on an autocommit connection; return the
    number reached. Idempotent; concurrent callers queue on the advisory lock and the
    later ones find the work done. A database migrated further raises `SchemaTooNew`."""
    known = len(track.migrations)
    found = await applied(conn, track)
    if found > known:
        raise SchemaTooNew(found, known)
    if found == known:
        return found  # the usual case: no lock, no DDL, no CREATE privilege needed
    async with conn.transaction():
        await conn.execute(track.lock, (track.lock_key,))
        for statement in track.setup:
            await conn.execute(statement)
        found = await scalar(await conn.execute(track.applied))
        if found > known:
            raise SchemaTooNew(found, known)
        for number in range(found + 1, known + 1):
            await conn.execute(track.migrations[number - 1])
            await conn.execute(track.record, (number,))
    return known
