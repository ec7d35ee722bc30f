"""A write transaction held open on the SQLite store's writer connection (SQL read models).

One job on the writer's thread (`SQLiteStore.on_writer`) begins the transaction (waiting
for another process's write lock there, never on the event loop) and then parks, keeping
the writer to this transaction. Meanwhile the transaction's statements run on the event
loop's own thread, on the writer's connection: a thread hand-off costs far more than a
short statement, and the parked thread does not touch the connection (a lock keeps the
two apart). The final work (commit or roll back) goes back to the writer's thread, so an
fsync never holds the loop.

If no statement runs for ``idle_timeout`` seconds, the parked thread rolls back and frees
the writer; the transaction's later calls fail with `StoreError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from ...errors import InvalidInput, StoreError
from ._errors import is_driver_error, translate, translated
from ._tx import abandon, begin
from ._tx import rollback as rollback

if TYPE_CHECKING:
    from ._store import SQLiteStore

__all__ = ["WriterSession", "rollback"]

_T = TypeVar("_T")


class WriterSession:
    """A transaction on the writer's connection, from `call` to `finish`."""

    def __init__(self, store: SQLiteStore, *, idle_timeout: float) -> None:
        self._store = store
        self._idle_timeout = idle_timeout
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        """Held by whichever thread uses the connection: the loop's or the parked one."""
        self._conn: sqlite3.Connection | None = None
        self._used = time.monotonic()
        self._final: Callable[[sqlite3.Connection], None] | None = None
        self._wake = threading.Event()
        self._ended: BaseException | None = None
        self._begun: asyncio.Future[None] = self._loop.create_future()
        self._finished: asyncio.Future[None] = self._loop.create_future()
        self._job: asyncio.Task[None] = asyncio.ensure_future(store.on_writer(self._park))
        self._job.add_done_callback(self._job_done)

    async def call(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work(connection)`` in the transaction, on the loop's thread."""
        if not self._begun.done():
            await asyncio.shield(self._begun)
        with self._lock:
            if self._ended is not None:
                raise self._ended
            conn = self._conn
            assert conn is not None
            self._used = time.monotonic()
            try:
                return work(conn)
            except Exception as exc:
                if is_driver_error(exc):
                    raise translate(exc, self._store.path) from exc
                raise

    async def finish(self, work: Callable[[sqlite3.Connection], None]) -> None:
        """Hand the final ``work`` (it commits or rolls back) to the writer's thread and
        wait for it. Rolling back a session that has already ended does nothing."""
        with self._lock:
            if self._ended is not None:
                if work is rollback:
                    return  # it rolled back when it ended
                raise self._ended
            self._final = work
            self._wake.set()
        await asyncio.shield(self._finished)

    def _job_done(self, job: asyncio.Task[None]) -> None:
        """On the loop: the job ended; nothing may wait for it any more."""
        error = None if job.cancelled() else job.exception()
        with self._lock:
            if self._ended is None:
                self._ended = error or InvalidInput(
                    "this read-model transaction has ended; open a new one"
                )
            ended = self._ended
        for future in (self._begun, self._finished):
            if not future.done():
                future.set_exception(ended)
            future.exception()  # retrieved: a caller may never await it

    # -- on the writer's thread --------------------------------------------------------

    def _park(self, conn: sqlite3.Connection) -> None:
        try:
            begin(conn)
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            refused = translate(exc, self._store.path)
            with self._lock:
                self._ended = refused
            self._settle(self._begun, refused)
            return
        with self._lock:
            self._conn = conn
            self._used = time.monotonic()
        self._settle(self._begun, None)
        timeout = self._idle_timeout
        while not self._wake.wait(timeout):
            with self._lock:
                idle = time.monotonic() - self._used
                if self._wake.is_set() or idle < self._idle_timeout:
                    timeout = max(self._idle_timeout - idle, 0.001)
                    continue
                self._ended = StoreError(
                    f"a SQL read-model transaction on {self._store.path!r} held the SQLite "
                    f"writer idle for more than {self._idle_timeout:g} s and was rolled back; "
                    "keep such transactions short (do slow work before opening one)"
                )
                abandon(conn)
                return
        with self._lock:
            work = self._final
            assert work is not None
            try:
                work(conn)
            except BaseException as exc:
                abandon(conn)
                error = translated(exc, self._store.path)
                self._ended = error
                self._settle(self._finished, error)
                return
            self._ended = InvalidInput("this read-model transaction has ended; open a new one")
        self._settle(self._finished, None)

    def _settle(self, future: asyncio.Future[None], error: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self._loop.call_soon_threadsafe(_set, future, error)


def _set(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(None)
