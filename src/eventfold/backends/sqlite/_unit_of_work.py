"""Units of work on SQLite: the caller's SQL, appends and outbox messages in one of the
writer connection's transactions, with group commit.

A unit runs on the event loop's thread, right on the writer's connection (taken from
the writer thread while it is idle, `SQLiteWriter.try_hold`), so its statements read
its own writes and cost no thread hand-off. Units take turns: one at a time holds the
connection, inside a savepoint of its own (so a failing unit undoes only itself). A unit
that ends well releases its savepoint and waits for the COMMIT; the next unit waiting
goes on in the same transaction, and the transaction commits once no unit is waiting
(or `MAX_UNITS` have gathered): many units share one commit, as group-committed appends
do. While a transaction is open the writer thread waits, so plain appends queue behind
it; a unit that awaits something slow holds every writer of the store meanwhile: keep
the block short.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..._events import Event, NewEvent
from ..._position import ExpectedVersion, Position, version_matches
from ...errors import (
    EventfoldError,
    InvalidInput,
    StoreClosed,
    StoreError,
    StreamReplaced,
    WrongExpectedVersion,
)
from ...store._common import check_retry, explicit_ids, prepare_append
from ...store._outbox import (
    NOTHING_PUBLISHED,
    PENDING,
    ROLLED_BACK,
    Destinations,
    Outgoing,
    Published,
    prepare_message,
    unit_headers,
)
from ...store.ports import OutboxMessage
from ...store.protocol import AppendResult
from . import _outbox
from . import _schema as sql
from ._errors import (
    driver_errors,
    is_busy,
    is_constraint,
    is_driver_error,
    translate,
    unit_statement_error,
)
from ._group import GroupWriter, PendingAppend
from ._tx import CONTROL, abandon, begin, commit, hold_unit, keep_unit, transaction, undo_unit

if TYPE_CHECKING:
    from ._store import SQLiteStore

__all__ = [
    "SQLiteUnitOfWork",
    "SQLiteUnits",
    "UnitOfWorkSupport",
    "inside_unit_of",
    "refuse_inside_unit",
]

MAX_UNITS = 256
"""Most units of work committed in one transaction."""

_inside: ContextVar[SQLiteUnits | None] = ContextVar("eventfold_sqlite_unit", default=None)
"""The units whose connection the current task holds (inside a unit's block)."""


def inside_unit_of(store: object) -> bool:
    """Whether the calling task is inside a unit of work of ``store``."""
    units = _inside.get()
    return units is not None and units.store is store


def refuse_inside_unit(store: object, what: str) -> None:
    """Raise if the calling task is inside a unit of work of ``store``: ``what`` needs
    the writer, which waits for the unit to end (it would never end)."""
    units = _inside.get()
    if units is not None and units.store is store:
        raise InvalidInput(
            f"{what} on the store of an open unit of work waits for the unit to end; "
            "inside the unit use uow.append (or do this after the block)"
        )


def _noop(conn: sqlite3.Connection) -> None:
    return None


_STREAM_ROW = "SELECT version, replaced_by FROM streams WHERE stream_id = ?"
"""A stream's version and replacement, when the log's last position is known."""

_NO_HEADERS: dict[str, str] = {}
"""The headers of a unit given none (read only: a message copies them)."""

_CHECKED_MAX = 256
_checked: set[str] = set()
"""Queries `_check_query` let through (a unit's statements are mostly the same few)."""


def _check_query(query: str) -> None:
    """Refuse a statement that would begin or end a transaction or a savepoint."""
    if query in _checked:
        return
    words = query.split(None, 1)
    if words and words[0].upper().rstrip(";") in CONTROL:
        raise InvalidInput(
            f"a unit of work runs inside its own transaction; {words[0]!r} is not "
            "allowed in it (the block's end commits, an exception rolls back)"
        )
    if len(_checked) >= _CHECKED_MAX:
        _checked.clear()
    _checked.add(query)


def _idle(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether nothing else on the loop is ready to run (as the store's own check)."""
    ready = getattr(loop, "_ready", None)
    if ready is None:
        return False
    return not ready or all(handle.cancelled() for handle in ready)


def _settle(done: list[asyncio.Future[None]], error: EventfoldError | None) -> None:
    """Tell the units of a transaction whether it committed."""
    for future in done:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            failed = StoreError(f"the unit of work was not committed: {error}")
            failed.__cause__ = error
            future.set_exception(failed)


class SQLiteUnitOfWork:
    """One unit of work on the writer connection (`eventfold.store.UnitOfWork`)."""

    __slots__ = (
        "_headers", "_live", "_messages", "_units", "_versions", "appended", "failed", "last",
        "published",
    )  # fmt: skip

    backend = "sqlite"
    paramstyle = "qmark"

    def __init__(self, units: SQLiteUnits, headers: dict[str, str]) -> None:
        self._units = units
        self._headers = headers
        self._messages: list[Outgoing] | None = None
        """The unit's outbox messages (None until it publishes one)."""
        self._live = False
        self.appended = False
        self.failed: EventfoldError | None = None
        self._versions: dict[str, int] | None = None
        """The versions of the streams this unit appended to (None until it appends)."""
        self.last = 0
        """The outbox position of the unit's last message, once written."""
        self.published = PENDING

    def _cursor(self) -> sqlite3.Cursor:
        if self.failed is not None:
            raise StoreError(
                f"an append of this unit of work failed after writing ({self.failed}); the "
                "unit rolls back: let it end and start a new one"
            )
        cur = self._units.cursor
        if not self._live or cur is None:
            raise StoreError(
                "this unit of work is over (it committed, rolled back, or its transaction "
                "was lost); start a new one"
            )
        return cur

    async def execute(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self._cursor()
        _check_query(query)
        try:
            return cur.execute(query, params).fetchall()
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            self._units.check_alive(exc)
            raise unit_statement_error(exc, query) from exc

    async def write(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> None:
        """Run a statement whose rows are not needed. SQLite runs it right away (a call
        into the library, no round trip), so its error surfaces here."""
        cur = self._cursor()
        _check_query(query)
        try:
            cur.execute(query, params).fetchall()  # to its end (a RETURNING clause's rows)
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            self._units.check_alive(exc)
            raise unit_statement_error(exc, query) from exc

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent],
        *,
        expected_version: ExpectedVersion,
    ) -> AppendResult:
        store = self._units.store
        encoded, expected = prepare_append(store.codec, stream_id, events, expected_version)
        cur = self._cursor()
        writer = store._writer
        assert writer is not None
        group = writer.group
        # As the group writer's careful path, without its savepoint: the unit has one
        # of its own, and an append that fails once written makes the unit roll back.
        units = self._units
        try:
            last = units.last
            if last is None:
                # The group writer's first statement for a group of one stream.
                last, stored, replaced_by = cur.execute(
                    sql.BATCH_START_ONE, (stream_id,)
                ).fetchone()
            else:
                row = cur.execute(_STREAM_ROW, (stream_id,)).fetchone()
                stored, replaced_by = (None, None) if row is None else row
            ids = explicit_ids(encoded)
            if ids:
                retry = check_retry(stream_id, encoded, group._find_ids(cur, stream_id, ids))
                if retry is not None:
                    return retry
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            self._units.check_alive(exc)
            raise translate(exc, store.path) from exc
        if replaced_by is not None:
            raise StreamReplaced(stream_id, replaced_by)
        # Versions this transaction wrote are not in the streams index yet (its rows are
        # written once, before the COMMIT): this unit's own, then the units' before it.
        mine = self._versions
        actual = None if mine is None else mine.get(stream_id)
        if actual is None:
            actual = self._units.versions.get(stream_id)
            if actual is None:
                actual = 0 if stored is None else stored
        if not version_matches(expected, actual):
            raise WrongExpectedVersion(stream_id, expected, actual)
        now = time.time_ns() // 1000
        rows: list[tuple[Any, ...]]
        try:
            if len(encoded) == 1:
                e = encoded[0]
                row = (last + 1, e.event_id, stream_id, actual + 1, e.type, e.schema_version,
                       e.data, e.metadata, now)  # fmt: skip
                cur.execute(sql.INSERT_EVENTS_AT, row)
                rows = [row]
            else:
                rows = [
                    (last + n, e.event_id, stream_id, actual + n, e.type, e.schema_version,
                     e.data, e.metadata, now)
                    for n, e in enumerate(encoded, 1)
                ]  # fmt: skip
                cur.executemany(sql.INSERT_EVENTS_AT, rows)
            if group.hooks is not None:
                group.hooks.apply(cur, rows)
        except Exception as exc:
            # The item is only what the group writer's explanation reads: its future
            # stays unused.
            item = PendingAppend(stream_id, encoded, expected, self._units.unused, 0)
            error = self._written_in_part(group, cur, item, exc)
            self.failed = error
            if error is exc:
                raise
            raise error from exc
        units.last = last + len(encoded)
        version = actual + len(encoded)
        if mine is None:
            self._versions = {stream_id: version}
        else:
            mine[stream_id] = version
        self.appended = True
        return AppendResult(version, Position(0, last + len(encoded)))

    def _written_in_part(
        self, group: GroupWriter, cur: sqlite3.Cursor, item: PendingAppend, exc: Exception
    ) -> EventfoldError:
        if is_driver_error(exc):
            self._units.check_alive(exc)
            if is_constraint(exc) and cur.connection.in_transaction:
                return group._explain_failure(cur, item, exc)
            return translate(exc, self._units.store.path)
        if isinstance(exc, EventfoldError):
            return exc
        return StoreError(f"an append in a unit of work failed: {exc!r}")

    def publish(
        self,
        destination: str,
        payload: object,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        message_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        self._cursor()
        mid, message = prepare_message(
            self._units.destinations, self._headers, destination, payload, key, headers,
            message_id,
        )  # fmt: skip
        if self._messages is None:
            self._messages = [message]
        else:
            self._messages.append(message)
        return mid

    def outbox_position(self, message_id: uuid.UUID) -> Position:
        if self.published is _COMMITTED:
            self.published = self._positions()
        return self.published.position(message_id)

    def _positions(self) -> Published:
        """The positions of the unit's messages (its transaction committed; worked out
        when first asked, off the commit's path)."""
        messages = self._messages
        if not messages:
            return NOTHING_PUBLISHED
        first = self.last - len(messages)
        return Published.of(
            (m.message_id, Position(0, first + n)) for n, m in enumerate(messages, 1)
        )


_COMMITTED = Published({})
"""A committed unit's positions, until `SQLiteUnitOfWork.outbox_position` works them out."""


class SQLiteUnits:
    """A store's units of work: whose turn it is, and the transaction they share."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.destinations = Destinations()
        self.cursor: sqlite3.Cursor | None = None
        """The writer connection's cursor while a transaction of units is open."""
        self._busy = False
        """Whether a unit holds the connection (or the transaction is committing)."""
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._done: list[asyncio.Future[None]] = []
        """Units released into the open transaction, waiting for its COMMIT."""
        self._appended = False
        self._scheduled = False
        self.versions: dict[str, int] = {}
        """The versions of the streams the released units of the open transaction
        appended to: the streams index gets them in one statement before the COMMIT."""
        self.last: int | None = None
        """The log's last position in the open transaction once a unit of it appended
        (its rows are the newest): the next append asks only for its stream's row. None:
        ask the log too."""
        self._unused: asyncio.Future[AppendResult] | None = None

    @property
    def unused(self) -> asyncio.Future[AppendResult]:
        """A future for the `PendingAppend` of a unit's append (the group writer's checks
        take one; nothing awaits or sets it)."""
        future = self._unused
        if future is None:
            future = self._unused = asyncio.get_running_loop().create_future()
        return future

    # -- a unit's life ----------------------------------------------------------------

    def run(self, headers: dict[str, str]) -> _UnitBlock:
        """A unit's ``async with`` block."""
        return _UnitBlock(self, SQLiteUnitOfWork(self, headers))

    async def _turn(self) -> None:
        """Wait until this unit may hold the connection."""
        if not self._busy and not self._waiting:
            self._busy = True
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._next()  # it was this unit's turn: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(turn)
            raise

    async def _begin(self) -> None:
        """Take the writer's connection and open a write transaction on it."""
        store = self.store
        deadline = time.monotonic() + store.busy_timeout
        delay = 0.001
        while True:
            writer = store._writer
            if writer is None:
                raise StoreClosed(f"sqlite store {store.path!r}")
            conn = writer.try_hold()
            if conn is None:
                await writer.call(_noop)  # let the writer finish what it is doing
                continue
            try:
                begin(conn)
            except Exception as exc:
                if not is_driver_error(exc):
                    raise
                writer.release()
                if is_busy(exc) and time.monotonic() < deadline:
                    # Another process writes: wait without holding the loop.
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.05)
                    continue
                raise translate(exc, store.path) from exc
            break
        cur = conn.cursor()
        hooks = writer.group.hooks
        if hooks is not None:
            try:
                hooks.begin(cur)
            except BaseException as exc:
                abandon(conn)
                writer.release()
                if is_driver_error(exc):
                    raise translate(exc, store.path) from exc
                raise
        self.cursor = cur
        self.last = None
        self._appended = False

    def _keep(self, unit: SQLiteUnitOfWork) -> asyncio.Future[None]:
        """Write the unit's messages and release its savepoint; its commit's future."""
        cur = self.cursor
        if cur is None:
            raise StoreError("the unit of work's transaction was lost; nothing was committed")
        if unit.failed is not None:
            raise StoreError(
                f"an append of this unit of work failed after writing ({unit.failed}); "
                "the unit rolled back"
            )
        try:
            if unit._messages:
                unit.last = _outbox.insert_messages(cur, unit._messages, time.time_ns() // 1000)
            keep_unit(cur)
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            self.check_alive(exc)
            raise translate(exc, self.store.path) from exc
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._done.append(done)
        if unit._versions:
            self.versions.update(unit._versions)
        self._appended = self._appended or unit.appended
        return done

    def _undo(self) -> None:
        """Roll the unit back to its savepoint (the units before it stay)."""
        cur = self.cursor
        if cur is None:
            return
        try:
            if cur.connection.in_transaction:
                self.last = None  # the unit's rows are undone: ask again
                undo_unit(cur)
                return
        except Exception as exc:
            if not is_driver_error(exc):
                raise
        self._lose(StoreError("the transaction of a unit of work was lost; retry the unit"))

    def check_alive(self, exc: BaseException) -> None:
        """After a failed statement: if SQLite rolled the whole transaction back, the
        units released into it fail, and the connection goes back to the writer."""
        cur = self.cursor
        if cur is not None and not cur.connection.in_transaction:
            self._lose(
                StoreError(f"SQLite rolled back the transaction of units of work ({exc}); retry")
            )

    def _lose(self, error: StoreError) -> None:
        done, self._done = self._done, []
        for future in done:
            if not future.done():
                failed = StoreError(f"the unit of work was not committed: {error}")
                failed.__cause__ = error
                future.set_exception(failed)
        self.versions = {}
        cur, self.cursor = self.cursor, None
        self.last = None
        if cur is not None:
            abandon(cur.connection)
            writer = self.store._writer
            if writer is not None:
                writer.release()

    def _next(self) -> None:
        """Pass the connection to the next waiting unit; commit when none waits."""
        if self.cursor is not None and len(self._done) >= MAX_UNITS:
            self._commit()
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)  # _busy stays True: the turn passes on
                return
        self._busy = False
        if self.cursor is not None and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._commit_soon)

    def _commit_soon(self) -> None:
        self._scheduled = False
        if self._busy or self.cursor is None:
            return  # a unit holds the connection: the last one's turn ends in a commit
        loop = asyncio.get_running_loop()
        if _idle(loop):
            self._commit()  # nothing else to run: commit right here, no hand-off
            return
        # Other tasks are ready: commit on a worker thread and let them run meanwhile
        # (units that start wait for their turn until it is done).
        self._busy = True
        cur, self.cursor = self.cursor, None
        self.last = None
        done, self._done = self._done, []
        versions, self.versions = self.versions, {}
        committing = loop.run_in_executor(None, self._finish, cur, versions)
        committing.add_done_callback(lambda f: self._committed(done, f))

    def _committed(self, done: list[asyncio.Future[None]], f: asyncio.Future[Any]) -> None:
        error: EventfoldError | None
        if f.cancelled() or f.exception() is not None:
            cause = "cancelled" if f.cancelled() else repr(f.exception())
            error = StoreError(f"committing units of work failed unexpectedly ({cause})")
        else:
            error = f.result()
        _settle(done, error)
        self._next()

    def _commit(self) -> None:
        """COMMIT the open transaction, give the connection back, settle the units."""
        cur = self.cursor
        assert cur is not None
        self.cursor = None
        self.last = None
        done, self._done = self._done, []
        versions, self.versions = self.versions, {}
        _settle(done, self._finish(cur, versions))

    def _finish(self, cur: sqlite3.Cursor, versions: dict[str, int]) -> EventfoldError | None:
        """COMMIT (after the store's file check) and give the connection back to the
        writer; the error, if it did not commit (on any thread)."""
        store = self.store
        writer = store._writer
        assert writer is not None
        error: EventfoldError | None = None
        try:
            if versions:
                writer.group._update_streams(cur, versions)
            guard = writer.group.guard
            if guard is not None:
                guard()
            commit(cur)
            writer.group.commits += 1  # the store's count of write transactions
        except Exception as exc:
            abandon(cur.connection)
            if is_driver_error(exc):
                error = translate(exc, store.path)
            elif isinstance(exc, EventfoldError):
                error = exc
            else:
                error = StoreError(f"unexpected {exc!r} committing units of work")
        writer.release()
        return error

    # -- the outbox ---------------------------------------------------------------------

    async def read_outbox(
        self, after: Position, limit: int, destination: str | None
    ) -> list[OutboxMessage]:
        self.store._check_open()
        query, params = _outbox.read_sql(after, limit, destination)
        return _outbox.to_messages(self.store.fetch_rows(query, params))

    async def outbox_head(self, destination: str | None) -> Position:
        self.store._check_open()
        if destination is None:
            rows = self.store.fetch_few(_outbox.HEAD, ())
        else:
            rows = self.store.fetch_few(_outbox.HEAD_ONE, (destination,))
        return Position(0, int(rows[0][0]))

    async def prune_outbox(self, destination: str, up_to: Position) -> int:
        if not isinstance(destination, str):
            raise InvalidInput(f"destination must be a str, got {destination!r}")
        query, params = _outbox.prune_sql(destination, up_to)

        def work(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                deleted = conn.execute(query, params).rowcount
            return int(deleted)

        with driver_errors(self.store.path):
            return await self.store.on_writer(work)


class _UnitBlock(contextlib.AbstractAsyncContextManager[SQLiteUnitOfWork]):
    """One unit's ``async with``: its turn and savepoint, then its commit (a class rather
    than a generator: it is on every unit's path)."""

    __slots__ = ("_inside", "_unit", "_units")

    def __init__(self, units: SQLiteUnits, unit: SQLiteUnitOfWork) -> None:
        self._units = units
        self._unit = unit
        self._inside: Token[SQLiteUnits | None] | None = None

    async def __aenter__(self) -> SQLiteUnitOfWork:
        units = self._units
        units.store._check_writable()
        await units._turn()
        try:
            if units.cursor is None:
                await units._begin()
            assert units.cursor is not None
            hold_unit(units.cursor)
        except BaseException:
            units._next()
            raise
        unit = self._unit
        unit._live = True
        self._inside = _inside.set(units)
        return unit

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        units, unit = self._units, self._unit
        if self._inside is not None:
            _inside.reset(self._inside)
            self._inside = None
        unit._live = False
        if exc_type is not None:
            unit.published = ROLLED_BACK
            units._undo()
            units._next()
            return  # the exception propagates
        try:
            done = units._keep(unit)
        except BaseException:
            unit.published = ROLLED_BACK
            units._undo()
            units._next()
            raise
        units._next()
        try:
            await done
        except BaseException:
            unit.published = ROLLED_BACK
            raise
        unit.published = _COMMITTED
        store = units.store
        if unit.appended and store.committed:
            store.committed.fire()


class UnitOfWorkSupport:
    """`SupportsUnitOfWork` and `SupportsOutbox` for `SQLiteStore`."""

    __units: SQLiteUnits | None = None

    @property
    def _units(self) -> SQLiteUnits:
        units = self.__units
        if units is None:
            units = self.__units = SQLiteUnits(self)  # type: ignore[arg-type]
        return units

    def free_writer_for(self, what: str) -> None:
        """Before ``what`` writes on a connection of its own from this thread: a
        transaction of units of work that only waits for its deferred commit (which runs
        on the event loop, so it would never come while this thread waits for its lock)
        is committed now; one a unit still holds refuses at once, naming ``what``."""
        units = self.__units
        if units is None or units.cursor is None:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # a worker thread: the loop commits the units meanwhile
        if units._busy:
            raise InvalidInput(
                f"{what} would wait for the SQLite write lock, held by an open unit of work "
                "of this store; do it before the unit begins (or after it ends)"
            )
        units._commit()

    def unit_of_work(
        self,
        *,
        correlation_id: str | uuid.UUID | None = None,
        causation_id: str | uuid.UUID | None = None,
        traceparent: str | None = None,
    ) -> contextlib.AbstractAsyncContextManager[SQLiteUnitOfWork]:
        """Run the caller's SQL (``?`` parameters), appends and outbox messages in one
        transaction (`eventfold.store.SupportsUnitOfWork`)."""
        if correlation_id is None and causation_id is None and traceparent is None:
            return self._units.run(_NO_HEADERS)
        return self._units.run(unit_headers(correlation_id, causation_id, traceparent))

    def declare_destination(self, name: str) -> None:
        """Allow outbox messages for ``name`` on this store (this process's setting)."""
        self._units.destinations.declare(name)

    @property
    def destinations(self) -> frozenset[str]:
        """The outbox destinations declared on this store."""
        return self._units.destinations.names

    async def read_outbox(
        self, after: Position, limit: int, *, destination: str | None = None
    ) -> list[OutboxMessage]:
        """Up to ``limit`` committed outbox messages after ``after``, in commit order."""
        return await self._units.read_outbox(after, limit, destination)

    async def outbox_head(self, destination: str | None = None) -> Position:
        """The position of the newest committed outbox message (`START` when none)."""
        return await self._units.outbox_head(destination)

    async def prune_outbox(self, destination: str, up_to: Position) -> int:
        """Delete ``destination``'s messages at or before ``up_to``; how many."""
        return await self._units.prune_outbox(destination, up_to)
