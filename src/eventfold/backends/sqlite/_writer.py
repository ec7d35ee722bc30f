"""The SQLite store's writer: one connection, on one thread, committing appends in groups.

The store hands over a group at a time (`submit`): the appends made during one turn of the
loop, or all that gathered while the previous group was being committed. The thread
writes it (`_group`) and hands the outcomes back with one ``call_soon_threadsafe``:
waking a sleeping thread costs tens of microseconds on a virtual machine, so there is one
wake-up each way per group, none per append. The same connection also serves the loop's
thread, under a lock, when the writer is idle: a short read (`read_inline`), or a whole
group committed without a hand-off (`write_inline`).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ...errors import EventfoldError, StoreClosed, StoreError
from ...store.protocol import AppendResult
from ._errors import translated
from ._group import GroupWriter, Outcome, PendingAppend
from ._schema import Params
from ._tx import abandon

__all__ = ["MAX_BATCH_APPENDS", "MAX_BATCH_BYTES", "PendingAppend", "SQLiteWriter", "deliver"]

MAX_BATCH_APPENDS = 1000
"""Most appends committed in one group-commit transaction."""

MAX_BATCH_BYTES = 16 * 1024 * 1024
"""Encoded bytes after which a group-commit batch stops taking more appends."""

_T = TypeVar("_T")


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

    ``connect`` opens the connection (on the thread) to the store file ``path``. `start`
    opens it; `submit` queues appends, `call` runs other work on the connection between
    groups, and `stop` commits what is queued and closes the connection.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        path: str,
    ) -> None:
        self._connect = connect
        self._path = path
        self._group = GroupWriter(path)
        self._describe = f"sqlite store {path!r}"
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

    @property
    def commits(self) -> int:
        """Write transactions committed (one per group)."""
        return self._group.commits

    @property
    def group(self) -> GroupWriter:
        """What writes each group (its ``hooks`` run the transaction hooks' participants)."""
        return self._group

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

    def read_inline(self, query: str, params: Params) -> list[Any] | None:
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
            return self._group.write_now(cur, appends)
        finally:
            self._lock.release()

    def try_hold(self) -> sqlite3.Connection | None:
        """Take the connection for the calling thread (the event loop's) if the writer is
        idle, with a busy timeout of 0; None: it is busy. Give it back with `release`
        once it is out of any transaction (a unit of work holds it across awaits)."""
        if not self._lock.acquire(blocking=False):
            return None
        conn = self._conn
        if conn is None or conn.in_transaction:
            self._lock.release()
            return None
        if not self._no_wait:
            conn.execute("PRAGMA busy_timeout = 0")
            self._no_wait = True
        return conn

    def release(self) -> None:
        """Give back the connection `try_hold` took (from any thread)."""
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
                    outcomes = self._group.write(cur, group)
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
            abandon(conn)
            error = translated(exc, self._path)
            _settle(job.future.get_loop(), job.future, None, error)
            return
        _settle(job.future.get_loop(), job.future, result, None)


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
