"""Units of work on PostgreSQL: the caller's SQL, appends and outbox messages in one
transaction on one pooled connection.

The transaction runs pipelined (psycopg's pipeline mode): its BEGIN and search path go
out with the unit's first `execute` or append, together with the statements queued by
`write` before it; each `execute` and append is one round trip; the statements written
after the last of them, the outbox rows and the COMMIT go out together at the block's
end (one round trip). With transaction participants the BEGIN and their ``begin`` run
first, and their ``apply`` reads the unit's events before the COMMIT. An error in a
statement aborts the transaction (PostgreSQL's rule): the unit then refuses further work
and rolls back.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql as pgsql

from ..._codec import EncodedEvent
from ..._events import Event, NewEvent
from ..._position import ExpectedVersion, Position
from ...errors import (
    EventfoldError,
    InvalidInput,
    StoreError,
    StreamReplaced,
    WrongExpectedVersion,
)
from ...store._common import StoredCopy, check_retry, explicit_ids, prepare_append
from ...store._outbox import (
    NOTHING_PUBLISHED,
    PENDING,
    ROLLED_BACK,
    Destinations,
    Outgoing,
    Published,
    QueuedMessages,
    unit_headers,
)
from ...store.ports import OutboxMessage, TransactionParticipant
from ...store.protocol import AppendResult
from ._append import append_statement
from ._errors import driver_errors_ignored, dropped, is_driver_error, recheck, translate
from ._hooks import PostgresHookTransaction, _run
from ._outbox import OutboxStatements, read_params, to_messages
from ._schema import EVENT_ID_KEY

if TYPE_CHECKING:
    from ._store import PostgresStore

__all__ = ["PostgresUnitOfWork", "UnitOfWorkSupport"]


@functools.lru_cache(maxsize=16)
def _begin(schema: str) -> bytes:
    """BEGIN and the unit's search path, in one round trip (no parameters: the simple
    protocol takes both statements at once)."""
    path = pgsql.SQL("BEGIN; SET LOCAL search_path TO {}, public").format(pgsql.Identifier(schema))
    return path.as_bytes(None)


@functools.lru_cache(maxsize=16)
def _search_path(schema: str) -> bytes:
    """The unit's search path, as a statement of its own (a pipeline takes one statement
    per query)."""
    path = pgsql.SQL("SET LOCAL search_path TO {}, public").format(pgsql.Identifier(schema))
    return path.as_bytes(None)


Statement = tuple[bytes, Any, bool]
"""A statement to send: its text, its parameters and whether its results are binary."""

_BEGIN: Statement = (b"BEGIN", None, False)
_COMMIT: Statement = (b"COMMIT", None, False)


def _refuse_control(query: str) -> None:
    if not isinstance(query, str):
        raise InvalidInput(f"a unit of work's statement must be a str, got {query!r}")
    words = query.split(None, 1)
    if words and words[0].upper().rstrip(";") in _CONTROL:
        raise InvalidInput(
            f"a unit of work runs inside its own transaction; {words[0]!r} is not "
            "allowed in it (the block's end commits, an exception rolls back)"
        )


def _statement_error(exc: psycopg.Error, query: str, written: bool) -> StoreError:
    message = " ".join(str(exc).split()) or type(exc).__name__
    code = f" ({exc.sqlstate})" if exc.sqlstate else ""
    which = "statement written with uow.write" if written else "statement"
    return StoreError(
        f"a unit of work's {which} failed{code}: {message} (statement: "
        f"{query.strip()[:200]!r}); fix the statement or its parameters (PostgreSQL "
        "takes %s or %(name)s parameters); the unit rolls back"
    )


class _Failed(Exception):
    """A pipelined round trip failed at its statement ``index``."""

    def __init__(self, index: int, error: psycopg.Error) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error


_CONTROL = frozenset({"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT"})


class PostgresUnitOfWork(QueuedMessages):
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
        self.begun = False
        """Whether the BEGIN (and the search path) went to the server."""
        self.queued: list[tuple[str, tuple[Any, ...] | Mapping[str, Any]]] = []
        """Statements written with `write`, not sent yet."""
        self.published = PENDING

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

    async def roundtrip(
        self, last: Statement | None = None, *, commit: bool = False
    ) -> psycopg.AsyncCursor[Any] | None:
        """Send, pipelined in one round trip: the BEGIN (if not sent yet), the queued
        statements, ``last`` and the COMMIT (with ``commit``); the cursor of ``last``.

        A failed statement raises `_Failed` with its index among them (the BEGIN and the
        search path first, then the queued statements, then ``last``)."""
        conn = self._conn
        queued, self.queued = self.queued, []
        statements: list[Statement] = []
        if not self.begun:
            statements += (_BEGIN, (_search_path(self._store.schema), None, False))
        statements += ((q.encode(), p, False) for q, p in queued)
        if last is not None:
            statements.append(last)
        if commit:
            statements.append(_COMMIT)
        self.begun = True
        if len(statements) == 1:
            query, params, binary = statements[0]
            try:
                return await conn.execute(query, params, binary=binary)
            except BaseException as exc:
                if is_driver_error(exc):
                    raise _Failed(0, exc) from exc
                self.failed = StoreError(f"a round trip of the unit was interrupted ({exc!r})")
                raise
        cursors: list[psycopg.AsyncCursor[Any]] = []
        try:
            async with conn.pipeline():
                for query, params, binary in statements:
                    cursors.append(await conn.execute(query, params, binary=binary))
        except BaseException as exc:
            if is_driver_error(exc):
                # The first statement without a result is the one that failed (those after
                # it were skipped); all have one: the one being sent when the error came.
                done = [cur.pgresult is not None for cur in cursors]
                index = done.index(False) if False in done else len(cursors)
                raise _Failed(index, exc) from exc
            # Cancelled (say) in the middle: what the server did is unknown.
            self.failed = StoreError(f"a round trip of the unit was interrupted ({exc!r})")
            raise
        return cursors[len(statements) - 1 - commit] if last is not None else None

    def _queued_error(self, failed: _Failed, queued: list[Any], begun: bool) -> StoreError:
        """The error of a round trip that failed at a statement sent before the one the
        caller waits for: a queued one (``begun``: whether the BEGIN was sent before),
        or the BEGIN."""
        index = failed.index - (0 if begun else 2)
        if 0 <= index < len(queued):
            return _statement_error(failed.error, queued[index][0], True)
        return StoreError(
            f"a unit of work's transaction failed: {translate(failed.error, self._store.where)}"
        )

    async def _send(self, last: Statement) -> psycopg.AsyncCursor[Any]:
        """Send ``last`` with what is queued; its cursor. A queued statement that fails
        raises its own error here (the unit fails); ``last`` failing raises `_Failed`."""
        queued, begun = self.queued, self.begun
        try:
            cur = await self.roundtrip(last)
        except _Failed as failed:
            if failed.index == len(queued) + (0 if begun else 2):
                raise
            error = self._queued_error(failed, queued, begun)
            self._fail(failed.error, error)
            raise error from failed.error
        assert cur is not None
        return cur

    async def execute(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._check()
        _refuse_control(query)
        try:
            cur = await self._send((query.encode(), tuple(params), False))
            return await cur.fetchall() if cur.description is not None else []
        except Exception as failed:
            if not (isinstance(failed, _Failed) or is_driver_error(failed)):
                raise
            exc = failed.error if isinstance(failed, _Failed) else failed
            error = _statement_error(exc, query, False)
            self._fail(exc, error)
            raise error from exc

    async def write(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> None:
        """Queue a statement whose rows are not needed: it goes to the server, in order,
        with the unit's next `execute` or append, or with the COMMIT."""
        self._check()
        _refuse_control(query)
        self.queued.append((query, params if isinstance(params, Mapping) else tuple(params)))

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent],
        *,
        expected_version: ExpectedVersion,
    ) -> AppendResult:
        store = self._store
        encoded, expected = prepare_append(store.codec, stream_id, events, expected_version)
        self._check()
        # Ids the caller chose may be stored already, or appended earlier in this unit:
        # the guarded statement then appends nothing (a failed insert would abort the
        # transaction) and the unit finds out whether it is a retry.
        ids = explicit_ids(encoded)
        query, params = append_statement(
            store.statements, stream_id, encoded, expected, guarded=bool(ids)
        )
        rows = await self._rows(query, params, stream_id)
        base, tx, seq = rows[0]
        if base is None:
            return await self._not_appended(stream_id, encoded, expected, ids)
        self.appended = True
        return AppendResult(base + len(encoded), Position(tx, seq))

    async def _rows(self, query: bytes, params: Any, stream_id: str) -> list[tuple[Any, ...]]:
        """The rows of one of the unit's own statements (binary); it sees what the unit
        wrote. A failure fails the unit."""
        store = self._store
        try:
            cur = await self._send((query, params, True))
            return await cur.fetchall()
        except Exception as failed:
            if not (isinstance(failed, _Failed) or is_driver_error(failed)):
                raise
            exc = failed.error if isinstance(failed, _Failed) else failed
            error: EventfoldError
            if (
                isinstance(exc, pg_errors.UniqueViolation)
                and exc.diag.constraint_name == EVENT_ID_KEY
            ):
                # A concurrent transaction stored one of the ids after the check.
                error = StoreError(
                    f"a concurrent append stored some of the same event ids in stream "
                    f"{stream_id!r} while this unit of work ran; the unit rolls back: run it "
                    "again (it is then a retry, or refused with DuplicateEventId)"
                )
            else:
                error = translate(exc, store.where)
            self._fail(exc, error)
            raise error from exc

    async def _not_appended(
        self,
        stream_id: str,
        encoded: list[EncodedEvent],
        expected: ExpectedVersion,
        ids: list[bytes],
    ) -> AppendResult:
        """An append that appended nothing: a retry of events stored or appended earlier
        in this unit, `DuplicateEventId`, a replaced stream or a conflict, as the unit's
        transaction sees them."""
        st = self._store.statements
        if ids:
            found: dict[bytes, StoredCopy] = {
                eid: (version, typ, data, Position(tx, seq))
                for eid, version, typ, data, tx, seq in await self._rows(
                    st.find_ids, (stream_id, [uuid.UUID(bytes=i) for i in ids]), stream_id
                )
            }
            retry = check_retry(stream_id, encoded, found)
            if retry is not None:
                return retry
        info = await self._rows(st.stream_info, {"sid": stream_id}, stream_id)
        version, replaced_by = info[0] if info else (0, None)
        if replaced_by is not None:
            raise StreamReplaced(stream_id, replaced_by)
        raise WrongExpectedVersion(stream_id, expected, version)


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
        conn: psycopg.AsyncConnection[Any] | None = None
        try:
            conn = await pool.getconn()
            try:
                unit = PostgresUnitOfWork(store, conn, headers, self._destinations)
                try:
                    tx = PostgresHookTransaction(store, conn)
                    if participants:
                        # Their `begin` runs first, in the transaction.
                        tx._path_set = True
                        await conn.execute(_begin(store.schema))
                        unit.begun = True
                        for p in participants:
                            await _run(p, p.begin(tx))
                    unit.live = True
                    try:
                        yield unit
                    finally:
                        unit.live = False
                    if unit.failed is not None:
                        raise unit.failed
                    await self._commit(unit, tx, participants, statements)
                except BaseException:
                    unit.published = ROLLED_BACK
                    if unit.begun and not conn.broken:
                        with driver_errors_ignored():
                            await conn.execute(b"ROLLBACK")
                    raise
            finally:
                await pool.putconn(conn)
        except Exception as exc:
            if isinstance(exc, _Failed):
                exc = exc.error
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

    async def _commit(
        self,
        unit: PostgresUnitOfWork,
        tx: PostgresHookTransaction,
        participants: Sequence[TransactionParticipant],
        statements: OutboxStatements,
    ) -> None:
        """Send what the unit queued, its outbox rows and the COMMIT: one round trip
        (two with participants that see the unit's events)."""
        store = self._pg
        messages = unit.messages
        insert: Statement | None = None
        if messages:
            insert = (
                statements.insert,
                {
                    "ids": [m.message_id for m in messages],
                    "dests": [m.destination for m in messages],
                    "keys": [m.key for m in messages],
                    "payloads": [m.payload for m in messages],
                    "headers": [m.headers for m in messages],
                },
                False,
            )
        if not unit.begun and insert is None and not unit.queued:
            unit.published = NOTHING_PUBLISHED
            return  # nothing was sent: nothing to commit
        queued, begun = unit.queued, unit.begun
        seeing = bool(participants) and unit.appended
        inserted: psycopg.AsyncCursor[Any] | None = None
        try:
            if not seeing:
                inserted = await unit.roundtrip(insert, commit=True)
            elif queued or insert is not None:
                inserted = await unit.roundtrip(insert)
        except _Failed as failed:
            if unit._conn.broken:
                raise  # whether it committed is unknown: said as such
            if 0 <= failed.index - (0 if begun else 2) < len(queued):
                raise unit._queued_error(failed, queued, begun) from failed.error
            raise
        if seeing:
            # The participants see the unit's events, then the COMMIT.
            cur = await unit.roundtrip((store.statements.this_transaction, None, True))
            assert cur is not None
            events = store.codec.decode_rows(await cur.fetchall())
            for p in participants:
                await _run(p, p.apply(tx, events))
            await unit.roundtrip(commit=True)
        if insert is None:
            unit.published = NOTHING_PUBLISHED
        else:
            assert inserted is not None
            unit.published = Published.of(
                (bytes(mid), Position(tx, seq)) for mid, tx, seq in await inserted.fetchall()
            )

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
