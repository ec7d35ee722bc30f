"""The SQLite store's writer: one connection on one thread, committing appends in groups.

Each append goes straight onto the writer's queue. While the thread commits one group,
the appends queued meanwhile wait, and the next group takes all of them at once (group
commit, with no timer): under load the event loop prepares the next group while the
current one is being written, and an idle store commits an append at once. The thread
hands results back with one ``call_soon_threadsafe`` per group. Waking a sleeping thread
costs tens of microseconds on a virtual machine, so there is at most one wake-up each way
per group, none per append.

A group is written optimistically: one lookup of the log's last position and the streams'
versions, every row in one ``executemany`` with its position computed, the streams index
updated, COMMIT. Version conflicts and client retries are decided before the insert, so
the insert can only fail on something outside eventfold's knowledge (rows written behind
its back, a trigger, a full disk); then the group is rolled back and written again with a
savepoint per append, so that such a failure fails only its own append.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, Generic, TypeVar

from ..codec import EncodedEvent
from ..errors import (
    DuplicateEventId,
    EventfoldError,
    StoreClosed,
    StoreError,
    WrongExpectedVersion,
)
from ..position import ExpectedVersion, Position, version_matches
from . import _sqlite_schema as sql
from ._common import StoredCopy, category_of, check_retry, explicit_ids
from .protocol import AppendResult

__all__ = ["MAX_BATCH_APPENDS", "MAX_BATCH_BYTES", "PendingAppend", "SQLiteWriter", "deliver"]

MAX_BATCH_APPENDS = 1000
"""Most appends committed in one group-commit transaction."""

MAX_BATCH_BYTES = 16 * 1024 * 1024
"""Encoded bytes after which a group-commit batch stops taking more appends."""

_IN_LIST_MAX = 64
"""Up to this many streams, a group looks their versions up with ``IN (?, …)`` (the list
padded to a power of two, so that a few statements serve every size)."""

_T = TypeVar("_T")
Outcome = AppendResult | EventfoldError
Translate = Callable[[sqlite3.Error], StoreError]


class PendingAppend:
    """One append waiting for the writer."""

    __slots__ = ("encoded", "expected", "future", "size", "stream_id")

    def __init__(
        self,
        stream_id: str,
        encoded: list[EncodedEvent],
        expected: ExpectedVersion,
        future: asyncio.Future[AppendResult],
        size: int,
    ) -> None:
        self.stream_id = stream_id
        self.encoded = encoded
        self.expected = expected
        self.future = future
        self.size = size


class _Job(Generic[_T]):
    """Other work for the writer connection (`SQLiteWriter.call`)."""

    __slots__ = ("future", "work")

    def __init__(
        self, work: Callable[[sqlite3.Connection], _T], future: asyncio.Future[_T]
    ) -> None:
        self.work = work
        self.future = future


class _Group:
    """Appends handed over together, and what to call on the loop once they are done."""

    __slots__ = ("appends", "done", "loop")

    def __init__(
        self,
        appends: list[PendingAppend],
        done: Callable[[], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.appends = appends
        self.done = done
        self.loop = loop


_STOP = object()
_Message = _Group | _Job[Any] | object


class SQLiteWriter:
    """The writer thread and its connection.

    ``connect`` opens the connection (on the thread) and ``translate`` turns sqlite3
    errors into eventfold errors. `start` opens it; `submit` queues appends, `call` runs
    other work on the connection between groups, and `stop` commits what is queued and
    closes the connection.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        translate: Translate,
        describe: str,
    ) -> None:
        self._connect = connect
        self._translate = translate
        self._describe = describe
        self._queue: queue.SimpleQueue[_Message] = queue.SimpleQueue()
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        """Held by whoever uses the connection: the writer's thread, or the loop's."""
        self._inline_cur: sqlite3.Cursor | None = None
        self._busy_timeout_ms = 0
        self._no_wait = False
        """Whether the connection's busy timeout is 0 (for appends on the loop's thread)."""
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Future[None] | None = None
        self.commits = 0
        """Write transactions committed (one per group)."""

    @property
    def connection(self) -> sqlite3.Connection | None:
        """The writer's connection (use it on the writer's thread only, through `call`)."""
        return self._conn

    # -- lifecycle (on the event loop) -------------------------------------------------

    async def start(self) -> None:
        """Start the thread and open the connection on it; raise what opening raised."""
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = loop.create_future()
        self._stopped = loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(loop, opened), name="eventfold-sqlite-writer", daemon=True
        )
        self._thread.start()
        await opened

    async def stop(self) -> None:
        """Commit everything queued so far, close the connection and end the thread."""
        stopped = self._stopped
        if stopped is None:
            return
        self._queue.put(_STOP)
        await stopped
        self._stopped = None

    def submit(self, appends: list[PendingAppend], done: Callable[[], None]) -> None:
        """Queue appends to commit together (split only past the group limits).

        Each one's future gets its result on its event loop, then ``done`` is called
        there: one wake-up of the loop for all of them.
        """
        self._queue.put(_Group(appends, done, asyncio.get_running_loop()))

    async def call(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work(connection)`` on the writer's thread, between groups."""
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._queue.put(_Job(work, future))
        return await future

    # -- the thread --------------------------------------------------------------------

    def _run(self, loop: asyncio.AbstractEventLoop, opened: asyncio.Future[None]) -> None:
        try:
            conn = self._connect()
            self._busy_timeout_ms = int(conn.execute("PRAGMA busy_timeout").fetchone()[0])
        except BaseException as exc:
            _settle(loop, opened, None, exc)
            _settle(loop, self._stopped, None, None)
            return
        self._conn = conn
        cur = conn.cursor()
        _settle(loop, opened, None, None)
        try:
            while True:
                message = self._next()
                if message is _STOP:
                    return
                with self._lock:
                    if self._no_wait:
                        cur.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
                        self._no_wait = False
                    if isinstance(message, _Job):
                        self._run_job(loop, message)
                        continue
                    assert isinstance(message, _Group)
                    appends = message.appends
                    for at in range(0, len(appends), MAX_BATCH_APPENDS):
                        last = at + MAX_BATCH_APPENDS >= len(appends)
                        done = message.done if last else None
                        chunk = appends[at : at + MAX_BATCH_APPENDS]
                        self._commit(cur, chunk, message.loop, done)
        finally:
            with self._lock:
                conn, self._conn = self._conn, None
                self._inline_cur = None
            self._fail_queued()
            conn.close()
            _settle(loop, self._stopped, None, None)

    def read_inline(self, query: str, params: Sequence[Any]) -> list[Any] | None:
        """Run a short read on the writer's connection, on the calling thread, if it is
        free; None: use a reader connection instead.

        A connection's page cache survives its own commits but is dropped whenever
        another connection commits, so a short read right after this store's commit
        costs half as much here as on a reader connection.
        """
        if not self._lock.acquire(blocking=False):
            return None
        try:
            conn = self._conn
            if conn is None or conn.in_transaction:
                return None
            cur = self._inline_cur
            if cur is None:
                cur = self._inline_cur = conn.cursor()
            return cur.execute(query, params).fetchall()
        finally:
            self._lock.release()

    def write_inline(self, appends: list[PendingAppend]) -> list[Outcome] | None:
        """Commit one append on the calling thread (the event loop's), if the writer is
        idle and no other process holds the write lock; None: queue it instead.

        Saves the two thread hand-offs of a queued append (tens of microseconds each on
        a virtual machine) at the price of holding the loop for one commit; the store
        does this only when nothing else on the loop is ready to run.
        """
        if not self._lock.acquire(blocking=False):
            return None
        try:
            conn = self._conn
            if conn is None or conn.in_transaction:
                return None
            cur = self._inline_cur
            if cur is None:
                cur = self._inline_cur = conn.cursor()
            if not self._no_wait:
                # Never wait for another process's write lock on the loop: fail fast, and
                # let the writer's thread do the waiting (it restores the timeout).
                cur.execute("PRAGMA busy_timeout = 0")
                self._no_wait = True
            try:
                cur.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:
                return None
            return self._write(cur, appends, begun=True)
        finally:
            self._lock.release()

    def _commit(
        self,
        cur: sqlite3.Cursor,
        appends: list[PendingAppend],
        loop: asyncio.AbstractEventLoop,
        done: Callable[[], None] | None,
    ) -> None:
        """Commit ``appends`` (in groups under `MAX_BATCH_BYTES`) and hand the outcomes
        back; then ``done`` is called on ``loop``."""
        at = 0
        while at < len(appends):
            group: list[PendingAppend] = []
            size = 0
            while at < len(appends) and (not group or size < MAX_BATCH_BYTES):
                item = appends[at]
                at += 1
                # An append whose caller was cancelled before its turn is never written.
                if not item.future.cancelled():
                    group.append(item)
                    size += item.size
            outcomes: list[Outcome] = []
            if group:
                try:
                    outcomes = self._write(cur, group)
                except BaseException as exc:  # a bug: never leave callers hanging
                    outcomes = [_interrupted(item.stream_id, exc) for item in group]
            _deliver_all(group, outcomes, loop, done if at >= len(appends) else None)
        if not appends and done is not None:
            _call(loop, done)

    def _next(self) -> _Message:
        return self._queue.get()

    def _fail_queued(self) -> None:
        """Appends still queued when the writer ends (after `stop`) fail, never hang."""
        while True:
            try:
                message = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(message, _Group):
                errors: list[Outcome] = [StoreClosed(self._describe) for _ in message.appends]
                _deliver_all(message.appends, errors, message.loop, message.done)
            elif isinstance(message, _Job):
                error = StoreClosed(self._describe)
                _settle(message.future.get_loop(), message.future, None, error)

    def _run_job(self, loop: asyncio.AbstractEventLoop, job: _Job[Any]) -> None:
        conn = self._conn
        assert conn is not None
        try:
            result = job.work(conn)
        except BaseException as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            error: BaseException = self._translate(exc) if isinstance(exc, sqlite3.Error) else exc
            _settle(job.future.get_loop(), job.future, None, error)
            return
        _settle(job.future.get_loop(), job.future, result, None)

    # -- one group's transaction -------------------------------------------------------

    def _write(
        self, cur: sqlite3.Cursor, batch: list[PendingAppend], *, begun: bool = False
    ) -> list[Outcome]:
        """One group commit; one outcome per append, in order."""
        try:
            # IMMEDIATE takes the write lock now, so busy_timeout applies; a deferred
            # transaction that reads first fails at once with SQLITE_BUSY when it tries
            # to upgrade while another process writes.
            if not begun:
                cur.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return [self._translate(exc) for _ in batch]
        conn = cur.connection
        try:
            outcomes = self._write_fast(cur, batch)
            if outcomes is None:
                # Something refused a row: write the group again, an append at a time.
                cur.execute("ROLLBACK")
                cur.execute("BEGIN IMMEDIATE")
                outcomes = self._write_careful(cur, batch)
            cur.execute("COMMIT")
        except Exception as exc:
            error: EventfoldError
            if isinstance(exc, sqlite3.Error):
                error = self._translate(exc)
            elif isinstance(exc, EventfoldError):
                error = exc
            else:
                error = StoreError(f"unexpected {exc!r}; report this as a bug")
            try:
                if conn.in_transaction:
                    cur.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            return [_batch_failed(error, item.stream_id) for item in batch]
        self.commits += 1
        return outcomes

    def _start(self, cur: sqlite3.Cursor, batch: list[PendingAppend]) -> tuple[int, dict[str, int]]:
        """The log's last position and the versions of the group's streams (one query)."""
        first = batch[0].stream_id
        if all(item.stream_id == first for item in batch):
            last, version = cur.execute(sql.BATCH_START_ONE, (first,)).fetchone()
            return last, {} if version is None else {first: version}
        names = list(dict.fromkeys(item.stream_id for item in batch))
        if len(names) <= _IN_LIST_MAX:
            size = 1 << (len(names) - 1).bit_length()
            names += [names[-1]] * (size - len(names))
            rows = cur.execute(_batch_start_sql(size), names).fetchall()
        else:
            rows = cur.execute(sql.BATCH_START_JSON, (json.dumps(names),)).fetchall()
        last = 0
        versions: dict[str, int] = {}
        for stream_id, value in rows:
            if stream_id is None:
                last = value
            else:
                versions[stream_id] = value
        return last, versions

    def _write_fast(self, cur: sqlite3.Cursor, batch: list[PendingAppend]) -> list[Outcome] | None:
        """Decide every append, then insert all rows at once; None: fall back."""
        last, versions = self._start(cur, batch)
        now = time.time_ns() // 1000
        rows: list[tuple[Any, ...]] = []
        changed: dict[str, int] = {}
        outcomes: list[Outcome] = []
        # Explicit ids written earlier in this group (not yet in the table): a retry
        # raced into the same group must see them, as it would with a savepoint each.
        written: dict[tuple[str, bytes], StoredCopy] = {}
        for item in batch:
            stream_id, encoded, expected = item.stream_id, item.encoded, item.expected
            ids = explicit_ids(encoded)
            if ids:
                found = self._find_ids(cur, stream_id, ids)
                if written:
                    for i in ids:
                        copy = written.get((stream_id, i))
                        if copy is not None:
                            found[i] = copy
                try:
                    retry = check_retry(stream_id, encoded, found)
                except DuplicateEventId as exc:
                    outcomes.append(exc)
                    continue
                if retry is not None:
                    outcomes.append(retry)
                    continue
            actual = versions.get(stream_id, 0)
            if not version_matches(expected, actual):
                outcomes.append(WrongExpectedVersion(stream_id, expected, actual))
                continue
            version = actual
            for e in encoded:
                last += 1
                version += 1
                rows.append(
                    (last, e.event_id, stream_id, version, e.type, e.schema_version, e.data,
                     e.metadata, now)
                )  # fmt: skip
                if e.explicit_id:
                    written[(stream_id, e.event_id)] = (version, e.type, e.data, Position(0, last))
            versions[stream_id] = changed[stream_id] = version
            outcomes.append(AppendResult(version, Position(0, last)))
        if not rows:
            return outcomes
        try:
            _insert(cur, sql.insert_events_sql, rows)
        except sqlite3.Error:
            if not cur.connection.in_transaction:
                raise  # SQLite rolled the whole transaction back: the group fails
            return None
        self._update_streams(cur, changed)
        return outcomes

    def _write_careful(self, cur: sqlite3.Cursor, batch: list[PendingAppend]) -> list[Outcome]:
        """The group again with a savepoint per append, so one failure fails alone."""
        last, versions = self._start(cur, batch)
        now = time.time_ns() // 1000
        changed: dict[str, int] = {}
        outcomes: list[Outcome] = []
        for item in batch:
            outcome = self._write_one(cur, item, versions, now, last)
            if type(outcome) is AppendResult and outcome.position.seq > last:
                last = outcome.position.seq
                changed[item.stream_id] = outcome.version
            outcomes.append(outcome)
        self._update_streams(cur, changed)
        return outcomes

    def _update_streams(self, cur: sqlite3.Cursor, changed: dict[str, int]) -> None:
        if changed:
            rows = [(s, v, category_of(s)) for s, v in changed.items()]
            _insert(cur, sql.upsert_streams_sql, rows)

    def _write_one(
        self,
        cur: sqlite3.Cursor,
        item: PendingAppend,
        versions: dict[str, int],
        now: int,
        last: int,
    ) -> Outcome:
        """One append inside the group's transaction; a conflict is returned, not raised."""
        stream_id, encoded, expected = item.stream_id, item.encoded, item.expected
        ids = explicit_ids(encoded)
        if ids:
            try:
                retry = check_retry(stream_id, encoded, self._find_ids(cur, stream_id, ids))
            except DuplicateEventId as exc:
                return exc
            if retry is not None:
                return retry
        actual = versions.get(stream_id, 0)
        if not version_matches(expected, actual):
            return WrongExpectedVersion(stream_id, expected, actual)
        rows = [
            (last + n, e.event_id, stream_id, actual + n, e.type, e.schema_version, e.data,
             e.metadata, now)
            for n, e in enumerate(encoded, 1)
        ]  # fmt: skip
        # A savepoint per append: should an insert still fail (a constraint, a value
        # SQLite refuses), only this append is undone and the rest of the group commits.
        cur.execute("SAVEPOINT append")
        try:
            cur.executemany(sql.INSERT_EVENTS_AT, rows)
        except sqlite3.Error as exc:
            if not cur.connection.in_transaction:
                raise  # SQLite rolled the whole transaction back: the group fails
            cur.execute("ROLLBACK TO append")
            cur.execute("RELEASE append")
            return self._explain_failure(cur, item, exc)
        cur.execute("RELEASE append")
        version = versions[stream_id] = actual + len(rows)
        return AppendResult(version, Position(0, last + len(rows)))

    def _find_ids(
        self, cur: sqlite3.Cursor, stream_id: str, ids: list[bytes]
    ) -> dict[bytes, StoredCopy]:
        found: dict[bytes, StoredCopy] = {}
        for at in range(0, len(ids), sql.ID_CHUNK):
            chunk = ids[at : at + sql.ID_CHUNK]
            for eid, version, typ, data, position in cur.execute(
                sql.find_ids_sql(len(chunk)), (stream_id, *chunk)
            ):
                found[eid] = (version, typ, data, Position(0, position))
        return found

    def _explain_failure(
        self, cur: sqlite3.Cursor, item: PendingAppend, exc: sqlite3.Error
    ) -> EventfoldError:
        """Translate a failed insert: a unique violation is a conflict, the rest an error."""
        stream_id, encoded = item.stream_id, item.encoded
        message = str(exc)
        if isinstance(exc, sqlite3.IntegrityError) and "events.event_id" in message:
            found = self._find_ids(cur, stream_id, [e.event_id for e in encoded])
            dup = next((e.event_id for e in encoded if e.event_id in found), encoded[0].event_id)
            error: EventfoldError = DuplicateEventId(stream_id, uuid.UUID(bytes=dup))
        elif isinstance(exc, sqlite3.IntegrityError) and "events.version" in message:
            actual = cur.execute(sql.LAST_VERSION, (stream_id,)).fetchone()[0]
            error = WrongExpectedVersion(stream_id, item.expected, actual)
        else:
            error = self._translate(exc)
        error.__cause__ = exc
        return error


def _insert(
    cur: sqlite3.Cursor, statement: Callable[[int], str], rows: list[tuple[Any, ...]]
) -> None:
    """Run a multi-row statement over ``rows``: chunks of `sql.MULTI_ROW_MAX` rows, then
    the rest in power-of-two chunks (a handful of distinct statements to cache)."""
    at, left = 0, len(rows)
    while left:
        n = sql.MULTI_ROW_MAX if left >= sql.MULTI_ROW_MAX else 1 << (left.bit_length() - 1)
        if n == 1:
            cur.execute(statement(1), rows[at])
        else:
            cur.execute(statement(n), [v for row in rows[at : at + n] for v in row])
        at += n
        left -= n


@lru_cache(maxsize=8)
def _batch_start_sql(count: int) -> str:
    return sql.BATCH_START_IN.format(marks=", ".join("?" * count))


def _deliver_all(
    batch: list[PendingAppend],
    outcomes: list[Outcome],
    loop: asyncio.AbstractEventLoop,
    done: Callable[[], None] | None,
) -> None:
    """Hand each append its outcome on its event loop, then call ``done`` on ``loop``:
    one wake-up of the loop for the whole group."""
    if all(item.future.get_loop() is loop for item in batch):
        _call(loop, deliver, batch, outcomes, done)
        return
    by_loop: dict[asyncio.AbstractEventLoop, tuple[list[PendingAppend], list[Outcome]]] = {}
    for item, outcome in zip(batch, outcomes, strict=True):
        items, results = by_loop.setdefault(item.future.get_loop(), ([], []))
        items.append(item)
        results.append(outcome)
    for each, (items, results) in by_loop.items():
        _call(each, deliver, items, results, None)
    if done is not None:
        _call(loop, done)


def deliver(
    batch: list[PendingAppend], outcomes: list[Outcome], done: Callable[[], None] | None
) -> None:
    for item, outcome in zip(batch, outcomes, strict=True):
        future = item.future
        if future.done():
            continue
        if type(outcome) is AppendResult:
            future.set_result(outcome)
        else:
            assert isinstance(outcome, EventfoldError)
            future.set_exception(outcome)
    if done is not None:
        done()


def _settle(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any] | None,
    result: Any,
    error: BaseException | None,
) -> None:
    if future is not None:
        _call(loop, _set, future, result, error)


def _set(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _call(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        loop.call_soon_threadsafe(fn, *args)


def _interrupted(stream_id: str, exc: BaseException) -> StoreError:
    return StoreError(
        f"append to {stream_id!r} was interrupted before its commit was confirmed "
        f"({exc!r}); read the stream to see whether it landed"
    )


def _batch_failed(error: EventfoldError, stream_id: str) -> StoreError:
    """A fresh error per caller (sharing one instance would mix their tracebacks)."""
    failed = StoreError(f"append to {stream_id!r} was not committed: {error}")
    failed.__cause__ = error
    return failed
