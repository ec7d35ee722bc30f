"""A consumer's inbox of processed message ids in a SQLite file (`eventfold.inbox`).

One connection, used only on one thread of its own; one transaction at a time
(`_tx.begin`, which takes the write lock at once: SQLite has one writer anyway, and taking
it first means the id's insert and the caller's effects never fail half-way on a busy
file). Its sqlite3 errors become eventfold's in `_errors`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from ...errors import StoreClosed, StoreError, StoreUnavailable
from ._errors import inbox_error, inbox_statement_error, is_busy, is_driver_error
from ._tx import begin, commit, rollback

__all__ = ["SQLiteInbox"]

_T = TypeVar("_T")

_BUSY_TIMEOUT_S = 30.0


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


class _Session:
    """The caller's view of one inbox transaction."""

    def __init__(self, inbox: SQLiteInbox) -> None:
        self._inbox = inbox

    async def execute(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        return await self._inbox._run(self._inbox._execute, sql, params)


class SQLiteInbox:
    """The inbox table ``table`` in the SQLite file at ``path``."""

    def __init__(self, path: str, table: str, *, synchronous: str = "FULL") -> None:
        self._path = path
        self._table = _quote(table)
        self._index = _quote(f"{table}_processed")
        self._synchronous = synchronous
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SQLiteInbox({self._path!r}, table={self._table})"

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._executor is None:
            raise StoreClosed("the inbox is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="eventfold-inbox")
        try:
            await self._run(self._connect)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    def _connect(self) -> None:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, timeout=_BUSY_TIMEOUT_S)
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            raise StoreUnavailable("sqlite", self._path, None, str(exc)) from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self._table} (consumer TEXT NOT NULL, "
                "message_id TEXT NOT NULL, processed_us INTEGER NOT NULL, "
                "PRIMARY KEY (consumer, message_id)) WITHOUT ROWID"
            )
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS {self._index} ON {self._table} "
                "(consumer, processed_us)"
            )
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            conn.close()
            raise StoreError(
                f"cannot create the inbox table in {self._path}: {exc}; check that the file "
                "is a SQLite database this process may write"
            ) from exc
        self._conn = conn

    async def close(self) -> None:
        if self._executor is None:
            return
        async with self._lock:
            await self._run(self._disconnect)
            self._executor.shutdown(wait=True)
            self._executor = None

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreClosed("the inbox is closed")
        return self._conn

    @asynccontextmanager
    async def transaction(self, consumer: str, message_id: str) -> AsyncIterator[_Session | None]:
        async with self._lock:
            now_us = time.time_ns() // 1000
            if not await self._run(self._begin, consumer, message_id, now_us):
                yield None
                return
            try:
                yield _Session(self)
            except BaseException:
                await asyncio.shield(self._run(self._rollback))
                raise
            await self._run(self._commit)

    def _begin(self, consumer: str, message_id: str, now_us: int) -> bool:
        conn = self._connection()
        rollback(conn)  # one left open by a cancelled rollback
        try:
            begin(conn)
            cursor = conn.execute(
                f"INSERT INTO {self._table} (consumer, message_id, processed_us) "
                "VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (consumer, message_id, now_us),
            )
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            rollback(conn)
            raise inbox_error("begin an inbox transaction", exc, self._path) from exc
        if cursor.rowcount == 0:
            rollback(conn)
            return False
        return True

    def _execute(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        try:
            cursor = self._connection().execute(sql, params)
            return [tuple(row) for row in cursor.fetchall()]
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            if is_busy(exc):
                raise inbox_error("run a statement", exc, self._path) from exc
            raise inbox_statement_error(exc, sql) from exc

    def _commit(self) -> None:
        conn = self._connection()
        try:
            commit(conn)
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            rollback(conn)
            raise inbox_error("commit an inbox transaction", exc, self._path) from exc

    def _rollback(self) -> None:
        conn = self._conn
        if conn is not None:
            rollback(conn)

    async def processed(self, consumer: str, message_id: str) -> bool:
        async with self._lock:
            return await self._run(self._processed, consumer, message_id)

    def _processed(self, consumer: str, message_id: str) -> bool:
        row = (
            self._connection()
            .execute(
                f"SELECT 1 FROM {self._table} WHERE consumer = ? AND message_id = ?",
                (consumer, message_id),
            )
            .fetchone()
        )
        return row is not None

    async def prune(self, consumer: str, before_us: int) -> int:
        async with self._lock:
            return await self._run(self._prune, consumer, before_us)

    def _prune(self, consumer: str, before_us: int) -> int:
        try:
            cursor = self._connection().execute(
                f"DELETE FROM {self._table} WHERE consumer = ? AND processed_us < ?",
                (consumer, before_us),
            )
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            raise inbox_error("prune the inbox", exc, self._path) from exc
        return cursor.rowcount
