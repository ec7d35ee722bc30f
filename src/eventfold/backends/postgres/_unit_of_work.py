"""Units of work on PostgreSQL: the caller's SQL, appends and outbox messages in one
transaction on one pooled connection.

The transaction runs pipelined: its BEGIN, the search path and the participants'
``begin`` go out with the caller's first statement; each statement and append is one
round trip; the outbox rows, the participants' ``apply`` over the unit's events and the
COMMIT go out together at the block's end. An error in a statement aborts the
transaction (PostgreSQL's rule): the unit then refuses further work and rolls back.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql as pgsql

from ..._events import Event, NewEvent
from ..._position import ExpectedVersion, Position
from ...errors import EventfoldError, InvalidInput, StoreError
from ...store._common import prepare_append
from ...store._outbox import Destinations, Outgoing, prepare_message, unit_headers
from ...store.ports import OutboxMessage
from ...store.protocol import AppendResult
from ._append import append_statement, not_appended
from ._batch import Append
from ._errors import dropped, is_driver_error, recheck, translate
from ._hooks import PostgresHookTransaction, _run
from ._outbox import OutboxStatements, read_params, to_messages

if TYPE_CHECKING:
    from ._store import PostgresStore

__all__ = ["PostgresUnitOfWork", "UnitOfWorkSupport"]


@functools.lru_cache(maxsize=16)
def _begin(schema: str) -> bytes:
    """BEGIN and the unit's search path, in one round trip (no parameters: the simple
    protocol takes both statements at once)."""
    path = pgsql.SQL("BEGIN; SET LOCAL search_path TO {}, public").format(pgsql.Identifier(schema))
    return path.as_bytes(None)


_CONTROL = frozenset({"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT"})


class PostgresUnitOfWork:
    """One unit of work on a pooled connection (`eventfold.store.UnitOfWork`)."""

    backend = "postgresql"
    paramstyle = "format"

    def __init__(
        self,
        store: PostgresStore,
        conn: psycopg.AsyncConnection[Any],
        headers: dict[str, str],
        destinations: Destinations,
    ) -> None:
        self._store = store
        self._conn = conn
        self._headers = headers
        self._destinations = destinations
        self.messages: list[Outgoing] = []
        self.appended = False
        self.live = False
        self.failed: StoreError | None = None

    def _check(self) -> psycopg.AsyncConnection[Any]:
        if self.failed is not None:
            raise StoreError(
                f"an earlier statement of this unit of work failed ({self.failed}); on "
                "PostgreSQL that aborts its transaction: let the unit end (it rolls back) and "
                "start a new one"
            )
        if not self.live:
            raise StoreError(
                "this unit of work is over (it committed or rolled back); start a new one"
            )
        return self._conn

    def _fail(self, exc: psycopg.Error, error: EventfoldError) -> None:
        if dropped(exc, self._conn):
            self.failed = StoreError(f"the connection was lost: {error}")
        elif isinstance(error, StoreError):
            self.failed = error
        else:
            self.failed = StoreError(str(error))

    async def execute(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = self._check()
        words = query.split(None, 1)
        if words and words[0].upper().rstrip(";") in _CONTROL:
            raise InvalidInput(
                f"a unit of work runs inside its own transaction; {words[0]!r} is not "
                "allowed in it (the block's end commits, an exception rolls back)"
            )
        try:
            cur = await conn.execute(query.encode(), tuple(params))
            return await cur.fetchall() if cur.description is not None else []
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            message = " ".join(str(exc).split()) or type(exc).__name__
            code = f" ({exc.sqlstate})" if exc.sqlstate else ""
            error = StoreError(
                f"a unit of work's statement failed{code}: {message} (statement: "
                f"{query.strip()[:200]!r}); fix the statement or its parameters (PostgreSQL "
                "takes %s or %(name)s parameters); the unit rolls back"
            )
            self._fail(exc, error)
            raise error from exc

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent],
        *,
        expected_version: ExpectedVersion,
    ) -> AppendResult:
        store = self._store
        encoded, expected = prepare_append(store.codec, stream_id, events, expected_version)
        conn = self._check()
        query, params = append_statement(store.statements, stream_id, encoded, expected)
        try:
            cur = await conn.execute(query, params, binary=True)
            row = await cur.fetchone()
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            error = translate(exc, store.where)
            self._fail(exc, error)
            raise error from exc
        assert row is not None
        base, tx, seq = row
        if base is None:
            return await not_appended(store, Append(stream_id, encoded, expected, query, params))
        self.appended = True
        return AppendResult(base + len(encoded), Position(tx, seq))

    def publish(
        self,
        destination: str,
        payload: object,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        message_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        self._check()
        mid, message = prepare_message(
            self._destinations, self._headers, destination, payload, key, headers, message_id
        )
        self.messages.append(message)
        return mid


class UnitOfWorkSupport:
    """`SupportsUnitOfWork` and `SupportsOutbox` for `PostgresStore`."""

    __destinations: Destinations | None = None
    __outbox: OutboxStatements | None = None

    @property
    def _pg(self) -> PostgresStore:
        return self  # type: ignore[return-value]

    @property
    def _destinations(self) -> Destinations:
        found = self.__destinations
        if found is None:
            found = self.__destinations = Destinations()
        return found

    @property
    def _outbox_sql(self) -> OutboxStatements:
        store = self._pg
        found = self.__outbox
        if found is None or found.base != store.epoch.base:
            found = self.__outbox = OutboxStatements(store.schema, store.epoch.base)
        return found

    def unit_of_work(
        self,
        *,
        correlation_id: str | uuid.UUID | None = None,
        causation_id: str | uuid.UUID | None = None,
        traceparent: str | None = None,
    ) -> contextlib.AbstractAsyncContextManager[PostgresUnitOfWork]:
        """Run the caller's SQL (``%s`` parameters), appends and outbox messages in one
        transaction (`eventfold.store.SupportsUnitOfWork`)."""
        return self._run(unit_headers(correlation_id, causation_id, traceparent))

    @contextlib.asynccontextmanager
    async def _run(self, headers: dict[str, str]) -> AsyncIterator[PostgresUnitOfWork]:
        store = self._pg
        pool = store._require_writable()
        hooks = store.transaction_hooks
        if hooks.holding:
            await hooks.ready()
        participants = hooks.active
        statements = self._outbox_sql
        begin = _begin(store.schema)
        conn: psycopg.AsyncConnection[Any] | None = None
        try:
            # getconn/putconn and BEGIN/COMMIT sent as statements: each a round trip of
            # its own, cheaper on the client than a pipeline or `conn.transaction()`.
            conn = await pool.getconn()
            try:
                unit = PostgresUnitOfWork(store, conn, headers, self._destinations)
                tx = PostgresHookTransaction(store, conn)
                tx._path_set = True
                await conn.execute(begin)
                try:
                    for p in participants:
                        await _run(p, p.begin(tx))
                    unit.live = True
                    try:
                        yield unit
                    finally:
                        unit.live = False
                    if unit.failed is not None:
                        raise unit.failed
                    messages = unit.messages
                    if messages:
                        await conn.execute(
                            statements.insert,
                            {
                                "ids": [m.message_id for m in messages],
                                "dests": [m.destination for m in messages],
                                "keys": [m.key for m in messages],
                                "payloads": [m.payload for m in messages],
                                "headers": [m.headers for m in messages],
                            },
                        )
                    if participants and unit.appended:
                        cur = await conn.execute(store.statements.this_transaction, binary=True)
                        events = store.codec.decode_rows(await cur.fetchall())
                        for p in participants:
                            await _run(p, p.apply(tx, events))
                except BaseException:
                    if not conn.broken:
                        with contextlib.suppress(psycopg.Error):
                            await conn.execute(b"ROLLBACK")
                    raise
                await conn.execute(b"COMMIT")
            finally:
                await pool.putconn(conn)
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            error = translate(exc, store.where)
            if dropped(exc, conn):
                await recheck(pool)
                raise StoreError(
                    f"a unit of work was interrupted before its commit was confirmed ({error}); "
                    "check whether it landed before running it again"
                ) from exc
            raise error from exc
        if unit.appended and store.committed:
            store.committed.fire()

    def declare_destination(self, name: str) -> None:
        """Allow outbox messages for ``name`` on this store (this process's setting)."""
        self._destinations.declare(name)

    @property
    def destinations(self) -> frozenset[str]:
        """The outbox destinations declared on this store."""
        return self._destinations.names

    async def read_outbox(
        self, after: Position, limit: int, *, destination: str | None = None
    ) -> list[OutboxMessage]:
        """Up to ``limit`` committed outbox messages after ``after``, in commit order."""
        store = self._pg
        one, params = read_params(after, limit, destination)
        st = self._outbox_sql
        return to_messages(await store.fetch_rows(st.read_one if one else st.read, params))

    async def outbox_head(self, destination: str | None = None) -> Position:
        """The position of the newest committed outbox message (`START` when none)."""
        st = self._outbox_sql
        query = st.head if destination is None else st.head_one
        rows = await self._pg.fetch_rows(query, {"d": destination})
        return Position(rows[0][0], rows[0][1]) if rows else Position(0, 0)

    async def prune_outbox(self, destination: str, up_to: Position) -> int:
        """Delete ``destination``'s messages at or before ``up_to``; how many."""
        store = self._pg
        if not isinstance(destination, str):
            raise InvalidInput(f"destination must be a str, got {destination!r}")
        _, params = read_params(up_to, 0, destination)
        pool = store._require_writable()
        try:
            async with pool.connection() as conn:
                cur = await conn.execute(self._outbox_sql.prune, params)
                return cur.rowcount
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            raise translate(exc, store.where) from exc
