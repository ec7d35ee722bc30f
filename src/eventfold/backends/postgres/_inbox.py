"""A consumer's inbox of processed message ids in PostgreSQL (`eventfold.inbox`).

Each inbox transaction takes one pooled connection. The id's ``INSERT … ON CONFLICT DO
NOTHING`` comes first: a second delivery of the same id running at the same moment waits
on the first one's row lock and then sees the row (or, if the first rolled back, takes
it), so two consumers never both apply one message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from ...errors import ConfigurationError, EventfoldError, StoreClosed
from ...store._read_model_port import now_us
from ._conn import int_option, split_url
from ._errors import Where, driver_errors, read_conninfo

__all__ = ["PostgresInbox"]

_Pool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]


class _Session:
    """The caller's view of one inbox transaction."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], where: Where) -> None:
        self._conn = conn
        self._where = where

    async def execute(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        with driver_errors(self._where, query=sql):
            cursor = await self._conn.execute(sql.encode(), params or None)
            if cursor.description is None:
                return []
            return [tuple(row) for row in await cursor.fetchall()]


class PostgresInbox:
    """The inbox table ``table`` in the database at ``url`` (in the URL's ``schema``, which
    also becomes the sessions' ``search_path``, or else where ``search_path`` puts it)."""

    def __init__(self, url: str, table: str) -> None:
        conninfo, options = split_url(url)
        params = read_conninfo(conninfo, url)
        self._conninfo = conninfo
        self._schema = options.get("schema")
        if self._schema is not None and not 0 < len(self._schema.encode()) <= 63:
            raise ConfigurationError(
                f"schema={self._schema!r} must be 1 to 63 bytes long (a PostgreSQL identifier)"
            )
        self._min_size = int_option(options, "pool_min_size", 1)
        self._max_size = int_option(options, "pool_max_size", 4)
        if self._max_size < max(self._min_size, 1):
            raise ConfigurationError("pool_max_size must be >= pool_min_size and >= 1")
        host = str(params.get("host") or params.get("hostaddr") or "localhost")
        port = str(params.get("port") or "5432")
        self._where = Where(
            f"PostgresInbox({host}, table={table!r})",
            "postgresql",
            host,
            int(port) if port.isdigit() else None,
            self._schema or "(search_path)",
            str(params.get("password") or ""),
        )
        name = sql.Identifier(table)
        index = sql.Identifier(f"{table}_processed")
        self._table: sql.Composable = (
            sql.Identifier(self._schema, table) if self._schema is not None else name
        )
        self._create = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (consumer text NOT NULL, message_id text NOT NULL, "
            "processed_us bigint NOT NULL, PRIMARY KEY (consumer, message_id)); "
            "CREATE INDEX IF NOT EXISTS {} ON {} (consumer, processed_us)"
        ).format(self._table, index, self._table)
        self._insert = sql.SQL(
            "INSERT INTO {} (consumer, message_id, processed_us) VALUES (%s, %s, %s) "
            "ON CONFLICT DO NOTHING"
        ).format(self._table)
        self._select = sql.SQL("SELECT 1 FROM {} WHERE consumer = %s AND message_id = %s").format(
            self._table
        )
        self._delete = sql.SQL("DELETE FROM {} WHERE consumer = %s AND processed_us < %s").format(
            self._table
        )
        self._pool: _Pool | None = None

    def __repr__(self) -> str:
        return self._where.label

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if self._schema is not None:
            await conn.execute(
                sql.SQL("SET search_path TO {}").format(sql.Identifier(self._schema))
            )
            await conn.commit()

    async def open(self) -> None:
        if self._pool is not None:
            return
        pool: _Pool = AsyncConnectionPool(
            self._conninfo,
            kwargs={"connect_timeout": 5},
            min_size=self._min_size,
            max_size=self._max_size,
            open=False,
            configure=self._configure,
            name="eventfold-inbox",
            timeout=30.0,
        )
        try:
            with driver_errors(self._where, connecting=True):
                await pool.open(wait=True, timeout=10.0)
            with driver_errors(self._where):
                async with pool.connection() as conn:
                    if self._schema is not None:
                        await conn.execute(
                            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                                sql.Identifier(self._schema)
                            )
                        )
                    await conn.execute(self._create)
        except EventfoldError:
            await pool.close()
            raise
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _open_pool(self) -> _Pool:
        if self._pool is None:
            raise StoreClosed("the inbox is closed")
        return self._pool

    @asynccontextmanager
    async def transaction(self, consumer: str, message_id: str) -> AsyncIterator[_Session | None]:
        pool = self._open_pool()
        with driver_errors(self._where):
            async with pool.connection() as conn, conn.transaction():
                cursor = await conn.execute(self._insert, (consumer, message_id, now_us()))
                yield _Session(conn, self._where) if cursor.rowcount == 1 else None

    async def processed(self, consumer: str, message_id: str) -> bool:
        with driver_errors(self._where):
            async with self._open_pool().connection() as conn:
                cursor = await conn.execute(self._select, (consumer, message_id))
                return await cursor.fetchone() is not None

    async def prune(self, consumer: str, before_us: int) -> int:
        with driver_errors(self._where):
            async with self._open_pool().connection() as conn:
                cursor = await conn.execute(self._delete, (consumer, before_us))
                return cursor.rowcount
