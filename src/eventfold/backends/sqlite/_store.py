"""The SQLite backend (``sqlite:///path.db``): the embedded default.

Writes. One writer connection per store (`_writer`). Appends made during one turn of
the event loop are committed together in one ``BEGIN IMMEDIATE`` transaction (group
commit), and a conflict fails only its own append. When the loop has nothing else ready to
run, that transaction runs right on the loop's thread: a thread hand-off costs tens of
microseconds each way on a virtual machine (and the other thread's every return to Python
contends for the GIL), more than anything else an append does, and there is nothing for
the loop to do meanwhile. Otherwise the group goes to the writer's thread, and the loop
goes on with its other tasks while it commits; so does an append when another process
holds the write lock (the loop never waits for a lock). ``inline_writes=False`` always
uses the thread.

Reads run on the event loop's thread too, one autocommit query per page: in WAL mode a
read never waits for the writer. A short read (a stream's version, a handler's load) uses
the writer's connection when it is free, whose page cache survives its own commits;
longer ones page on a reader connection. Pages hold at most `PAGE_SIZE` rows and shrink
when rows are large (`PAGE_BUDGET`), and a read lets other tasks run between pages, so the
loop is never held for long. Queries of unknown cost (`stats`, `fetch` for side tables)
run on a small pool of reader threads. Every page sees the latest commits, including
other processes'.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from functools import partial
from types import TracebackType
from typing import Any, Self, TypeVar

from ..._codec import Codec, Row
from ..._events import Event, NewEvent, RecordedEvent
from ..._position import ExpectedVersion, Position
from ...errors import (
    ConfigurationError,
    InvalidInput,
    StoreClosed,
    StoreError,
    StoreReadOnly,
    TransformConflict,
)
from ...store._common import (
    PAGE_SIZE,
    CommitListeners,
    bounded,
    category_names,
    check_event_ids,
    check_from_version,
    check_limit,
    check_recorded,
    check_stream_id,
    log_start,
    prepare_append,
    switch_refused,
    type_names,
)
from ...store.ports import LoadRows, Snapshot
from ...store.protocol import AppendResult, StoreStats, StreamInfo
from . import _schema as sql
from ._file import FileGuard, check_store
from ._hooks import SQLiteTransactionHooks
from ._snapshots import SQLiteSnapshotStore
from ._unit_of_work import UnitOfWorkSupport, refuse_inside_unit
from ._writer import PendingAppend, SQLiteWriter, deliver

__all__ = ["PAGE_BUDGET", "SQLiteStore"]

BUSY_TIMEOUT = 10.0
"""Seconds a writer waits for another process's write lock before giving up."""

READERS = 2
"""Reader threads (each with its own connection), for queries of unknown cost."""

INLINE_GROUP_APPENDS = 256
INLINE_GROUP_BYTES = 1024 * 1024
"""A group (or one append) of more appends (events) or bytes than these always goes to
the writer's thread, so that a commit on the loop's thread never holds it for long."""

PAGE_BUDGET = 0.004
"""Seconds one page of a read may hold the event loop; larger rows make smaller pages."""

_MIN_PAGE = 16
_FIRST_PAGE = 128
"""Rows of a handler's load read in its first query (on the writer's connection when it
is free: a short stream is one query; a longer one pages on in `PAGE_SIZE` pages)."""
_MAX_VERSION = 2**62
_T = TypeVar("_T")
_R = TypeVar("_R")


class SQLiteStore(UnitOfWorkSupport):
    """An event store in one SQLite file, shared safely by several processes.

    ``synchronous`` is ``FULL`` (nothing acknowledged is lost, even on power loss) or
    ``NORMAL`` (the last commits may roll back after a power loss or OS crash);
    ``busy_timeout`` is how many seconds an append waits for another process's write
    lock before failing with `StoreError`. With ``inline_writes`` (the default), a commit
    made while the event loop has nothing else to run runs on the loop's own thread,
    holding the loop for that commit (usually well under a millisecond; an fsync on a
    slow disk takes longer); ``False`` hands every commit to the writer's thread.
    `commits` counts the write transactions.

    ``read_only`` opens an existing store for inspection: no writer, no file created, no
    migration, nothing written (a read-only file or directory is fine); a missing file or
    one without eventfold's tables raises `StoreNotFound`, a write `StoreReadOnly`.
    """

    backend = "sqlite"

    def __init__(
        self,
        path: str,
        codec: Codec | None = None,
        *,
        synchronous: str = "FULL",
        busy_timeout: float = BUSY_TIMEOUT,
        inline_writes: bool = True,
        read_only: bool = False,
    ) -> None:
        if synchronous not in sql.SYNCHRONOUS:
            raise ConfigurationError(
                f"sqlite synchronous={synchronous!r} is not supported; use FULL or NORMAL"
            )
        if path == ":memory:" or path.startswith("file::memory:"):
            raise ConfigurationError(
                "an in-memory SQLite database cannot be shared by the store's connections; "
                "use memory:// for a store that keeps nothing"
            )
        self.path = path
        self.codec = codec or Codec()
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.inline_writes = inline_writes
        """Commit an append to an idle store on the event loop's own thread (see `append`)."""
        self.read_only = read_only
        self._commits = 0
        self._open = False
        self._opens = 0
        """`open` calls not yet matched by a `close` (nested ``async with`` blocks)."""
        self._guard: FileGuard | None = None
        self._writer: SQLiteWriter | None = None
        self._reader_pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._pending: list[PendingAppend] = []
        self._flush_scheduled = False
        self._in_flight = False
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self.snapshots = SQLiteSnapshotStore(self)
        """Snapshots, in a table beside the events."""
        self.committed = CommitListeners()
        """Called after each append this process commits (in-process wake-ups)."""
        self.transaction_hooks = SQLiteTransactionHooks(self)
        """Participants in each append's transaction (`eventfold.store.TransactionHooks`)."""

    @property
    def commits(self) -> int:
        """Write transactions committed by this store (one per group-commit batch)."""
        writer = self._writer
        return self._commits + (writer.commits if writer is not None else 0)

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Open the file (creating it), switch it to WAL, and create or migrate the tables.

        Read-only: check that the file holds an eventfold store, and change nothing.
        """
        if self._open:
            self._opens += 1
            return
        if self.read_only:
            await asyncio.to_thread(self._check_store)
        else:
            writer = SQLiteWriter(
                self._open_writer, self.translate_error, f"sqlite store {self.path!r}"
            )
            await writer.start()
            writer.group.guard = self._guard
            self._writer = writer
        self._reader_pool = ThreadPoolExecutor(READERS, thread_name_prefix="eventfold-sqlite-read")
        self._pending = []
        self._flush_scheduled = self._in_flight = False
        self._open = True
        self._opens = 1

    async def close(self) -> None:
        """Commit what is queued, stop the writer and close every connection."""
        if self._opens > 1:
            self._opens -= 1
            return
        if not self._open:
            return
        self._open = False
        self._opens = 0
        self._flush()
        writer, readers = self._writer, self._reader_pool
        self._reader_pool = None
        if readers is not None:
            # Reader connections are closed here, once the pool has stopped, so no thread
            # can be using them (the event loop's own is not in use: this is the loop).
            await asyncio.to_thread(readers.shutdown, True)
        with self._reader_lock:
            conns, self._reader_conns = self._reader_conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()
        # The writer closes last: the last connection to close checkpoints the WAL and
        # removes it, which a read-only one cannot do.
        if writer is not None:
            await writer.stop()
            self._commits += writer.commits
            self._writer = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _connect(self, *, reader: bool) -> sqlite3.Connection:
        try:
            return self._connect_raw(reader=reader)
        except sqlite3.Error as exc:
            raise self.translate_error(exc) from exc

    def _connect_raw(self, *, reader: bool) -> sqlite3.Connection:
        return sql.connect(
            self.path, reader=reader, synchronous=self.synchronous, timeout=self.busy_timeout
        )

    def _open_writer(self) -> sqlite3.Connection:
        """Open the writer connection and migrate (runs on the writer's thread)."""
        conn = self._connect(reader=False)
        try:
            sql.migrate(conn)
            self._guard = FileGuard(self.path)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self.translate_error(exc) from exc
            raise
        return conn

    def _check_store(self) -> None:
        """Check, read-only, that the file holds an eventfold store (on a worker thread)."""
        try:
            check_store(self.path, partial(self._connect_raw, reader=True))
        except sqlite3.Error as exc:
            raise self.translate_error(exc) from exc

    def _check_writable(self) -> None:
        if not self._open:
            raise StoreClosed(f"sqlite store {self.path!r}")
        if self.read_only:
            raise StoreReadOnly(f"sqlite:///{self.path}")

    def translate_error(self, exc: BaseException) -> StoreError:
        """The eventfold error for a sqlite3 error on this store's file. (For this
        backend's own modules, the read-model store first: not part of the `EventStore`
        port.)"""
        assert isinstance(exc, sqlite3.Error)
        return _translate(exc, self.path)

    def _check_open(self) -> None:
        if not self._open:
            raise StoreClosed(f"sqlite store {self.path!r}")

    # -- appending -------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent],
        *,
        expected_version: ExpectedVersion,
    ) -> AppendResult:
        self._check_writable()
        refuse_inside_unit(self, "append")
        encoded, expected = prepare_append(self.codec, stream_id, events, expected_version)
        size = 0
        for enc in encoded:
            size += len(enc.data) + len(enc.metadata)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AppendResult] = loop.create_future()
        item = PendingAppend(stream_id, encoded, expected, future, size)
        if (
            self.inline_writes
            and not self._in_flight
            and not self._pending
            and len(encoded) <= INLINE_GROUP_APPENDS
            and size <= INLINE_GROUP_BYTES
            and _idle(loop)
        ):
            writer = self._writer
            assert writer is not None
            outcomes = writer.write_inline([item])
            if outcomes is not None:
                (outcome,) = outcomes
                if type(outcome) is AppendResult:
                    if self.committed:
                        self.committed.fire()
                    return outcome
                assert isinstance(outcome, BaseException)
                raise outcome
        return await self._queue(item)

    async def _queue(self, item: PendingAppend) -> AppendResult:
        """Hand ``item`` to the next group commit and wait for its outcome."""
        self._pending.append(item)
        if not self._in_flight and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_soon)
        result = await item.future
        if self.committed:
            self.committed.fire()
        return result

    async def append_copies(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        *,
        expected_version: ExpectedVersion,
        recorded_us: Sequence[int],
    ) -> AppendResult:
        """`append` keeping given recorded times (for `eventfold.transform` only)."""
        self._check_writable()
        encoded, expected = prepare_append(self.codec, stream_id, events, expected_version)
        stamps = check_recorded(recorded_us, len(encoded))
        size = sum(len(enc.data) + len(enc.metadata) for enc in encoded)
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        return await self._queue(PendingAppend(stream_id, encoded, expected, future, size, stamps))

    async def replace_stream(
        self, stream_id: str, target: str, *, version: int, target_version: int
    ) -> None:
        """Point ``stream_id`` at ``target`` in one transaction (`eventfold.transform`).

        Refused with `TransformConflict` unless ``stream_id`` is still at ``version`` and
        not replaced, and ``target`` is at ``target_version`` and not replaced.
        """
        self._check_writable()
        check_stream_id(stream_id)
        check_stream_id(target)
        if stream_id == target:
            raise InvalidInput(f"stream {stream_id!r} cannot replace itself")
        params = {
            "source": stream_id,
            "target": target,
            "version": version,
            "target_version": target_version,
        }

        guard = self._guard

        def work(conn: sqlite3.Connection) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            try:
                switched = conn.execute(sql.REPLACE_STREAM, params).rowcount == 1
                if switched:
                    conn.execute(sql.REPOINT_ALIASES, params)
                if guard is not None:
                    guard()
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return switched

        try:
            switched = await self.on_writer(work)
        except sqlite3.Error as exc:
            raise self.translate_error(exc) from exc
        if not switched:
            raise await self._switch_refused(stream_id, target, version, target_version)

    async def _switch_refused(
        self, stream_id: str, target: str, version: int, target_version: int
    ) -> TransformConflict:
        source = await self.stream_info(stream_id)
        dest = await self.stream_info(target)
        return switch_refused(source, dest, version, target_version)

    # Group commit, seen from the event loop: the appends made during one turn of the
    # loop go to the writer together; while it commits them, the next ones gather and go
    # over the moment it is done. A group whose loop has nothing else ready to run is
    # committed right there, on the loop's thread (see `SQLiteWriter.write_inline`).

    def _flush_soon(self) -> None:
        self._flush_scheduled = False
        if not self._in_flight:
            self._flush(inline=self.inline_writes)

    def _flush(self, *, inline: bool = False) -> None:
        # An append whose caller was cancelled before its turn is dropped, never written.
        pending = [item for item in self._pending if not item.future.cancelled()]
        self._pending = []
        writer = self._writer
        if not pending or writer is None:
            return
        if (
            inline
            and len(pending) <= INLINE_GROUP_APPENDS
            and sum(item.size for item in pending) <= INLINE_GROUP_BYTES
            and _idle(asyncio.get_running_loop())
        ):
            outcomes = writer.write_inline(pending)
            if outcomes is not None:
                deliver(pending, outcomes, None)
                return
        self._in_flight = True
        writer.submit(pending, self._group_done)

    def _group_done(self) -> None:
        self._in_flight = False
        if self._pending:
            self._flush()

    @property
    def _writer_conn(self) -> sqlite3.Connection | None:
        """The writer's connection (only for use on its thread, through `on_writer`)."""
        return self._writer.connection if self._writer is not None else None

    # -- reading ---------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        """This thread's reader connection (the event loop's, or a pool thread's)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(reader=True)
            self._local.conn = conn
            with self._reader_lock:
                self._reader_conns.append(conn)
        return conn

    def fetch_rows(self, query: str, params: sql.Params) -> list[Any]:
        """Run one read query to its end on this thread (an autocommit read transaction).
        (For this backend's own modules, the read-model store first: not part of the
        `EventStore` port.)"""
        if not self._open:
            raise StoreClosed(f"sqlite store {self.path!r}")
        try:
            return self._reader().execute(query, params).fetchall()
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from exc

    def fetch_few(self, query: str, params: sql.Params) -> list[Any]:
        """`fetch_rows` for a query of a few rows: on the writer's connection when it is free
        (its page cache is still warm after this store's own commits)."""
        writer = self._writer
        if writer is not None and self._open:
            try:
                rows = writer.read_inline(query, params)
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from exc
            if rows is not None:
                return rows
        return self.fetch_rows(query, params)

    def _submit(self, query: str, params: sql.Params) -> asyncio.Future[list[Any]]:
        """Run a query of unknown cost on a reader thread."""
        pool = self._reader_pool
        if not self._open or pool is None:
            raise StoreClosed(f"sqlite store {self.path!r}")
        return asyncio.get_running_loop().run_in_executor(pool, self.fetch_rows, query, params)

    async def _pages(
        self,
        query: str,
        params: Callable[[_T, int], sql.Params],
        key: _T,
        next_key: Callable[[Any], _T],
        limit: int | None,
        convert: Callable[[list[Any]], list[_R]],
        then: str | None = None,
    ) -> AsyncGenerator[list[_R], None]:
        """Keyset pagination on the event loop's thread: one autocommit query per page.

        Each query is its own read transaction (``fetchall`` ends it), so no page holds
        a snapshot open and every page sees the commits made since the one before. A
        page that took longer than `PAGE_BUDGET` (large rows) makes the next ones
        smaller; other tasks run between pages. ``then``, if given, is the query for the
        pages after the first.
        """
        remaining = limit
        size = PAGE_SIZE
        fetch = self.fetch_rows
        clock = time.perf_counter
        while remaining is None or remaining > 0:
            n = size if remaining is None else min(size, remaining)
            began = clock()
            rows = fetch(query, params(key, n))
            items = convert(rows) if rows else []
            took = clock() - began
            if took > PAGE_BUDGET:
                size = max(_MIN_PAGE, int(size * PAGE_BUDGET / took))
            elif size < PAGE_SIZE and took < PAGE_BUDGET / 4:
                size = min(PAGE_SIZE, size * 2)
            if items:
                yield items
            if len(rows) < n:
                return
            if remaining is not None:
                remaining -= n
            key = next_key(rows[-1])
            if then is not None:
                query = then
            await asyncio.sleep(0)

    async def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
        follow_alias: bool = True,
    ) -> AsyncIterator[RecordedEvent]:
        self._check_open()
        check_stream_id(stream_id)
        limit = check_limit(limit)
        start = check_from_version(from_version)
        if backwards:
            query, follow = sql.READ_STREAM_BACKWARDS, sql.FOLLOW_BACKWARDS
            key, step = _MAX_VERSION if start is None else start, -1
        else:
            query, follow = sql.READ_STREAM_FORWARDS, sql.FOLLOW_FORWARDS
            key, step = max(start or 1, 1), 1
        # The first page finds the stream a replaced one's alias leads to; the later
        # pages read that stream by id, so one read never straddles two streams.
        found = [stream_id]
        decode = self.codec.decode_rows

        def convert(rows: list[Any]) -> list[RecordedEvent]:
            found[0] = rows[0][1]
            return decode(rows)

        pages = self._pages(
            follow if follow_alias else query,
            lambda v, n: {"sid": found[0], "version": v, "limit": n},
            key,
            lambda row: row[2] + step,
            limit,
            convert if follow_alias else decode,
            query,
        )
        async with aclosing(pages):
            async for page in pages:
                for event in page:
                    yield event

    async def read_for_load(
        self,
        stream_id: str,
        state_type: str,
        *,
        max_version: int | None = None,
        max_recorded_us: int | None = None,
    ) -> LoadRows:
        """What `CommandHandler` needs to load a stream, in two short queries.

        The newest snapshot of ``state_type`` within the bounds (as `SQLiteSnapshotStore.
        load_snapshot` finds it; None when there is none), the id of the event at its
        version, and the stream's events after it (from version 1 without one) up to
        ``max_version``, a first page and the further ones (see `LoadRows`).
        """
        self._check_open()
        check_stream_id(stream_id)
        max_version, max_recorded_us = bounded(max_version), bounded(max_recorded_us)
        bounds = sql.snapshot_bounds(stream_id, state_type, max_version, max_recorded_us)
        # The first query resolves a replaced stream's alias, and the replacement's own
        # snapshots are the only ones used (the handler checks the snapshot's stream id
        # and event id against the stream read).
        ((resolved, *found, anchor),) = self.fetch_few(sql.LOAD_START, bounds)
        snapshot = Snapshot(*found) if found[0] is not None else None
        if snapshot is not None and snapshot.version < 1:
            snapshot = None
        start = snapshot.version + 1 if snapshot is not None else 1
        upto = _MAX_VERSION if max_version is None else max_version
        query = sql.LOAD_EVENTS if max_recorded_us is None else sql.LOAD_EVENTS_TIMED
        decode = partial(self.codec.decode_loaded, resolved)
        rows = self.fetch_few(query, (resolved, start, upto, _FIRST_PAGE))
        first = decode(rows)
        if len(rows) < _FIRST_PAGE:
            return LoadRows(snapshot, resolved, anchor, first, None)
        rest = self._pages(
            query,
            lambda v, n: (resolved, v, upto, n),
            rows[-1][0] + 1,
            _load_next_version,
            None,
            decode,
        )
        return LoadRows(snapshot, resolved, anchor, first, rest)

    async def find_events(
        self, stream_id: str, event_ids: Sequence[uuid.UUID]
    ) -> list[RecordedEvent]:
        self._check_open()
        check_stream_id(stream_id)
        ids = [i.bytes for i in check_event_ids(event_ids)]
        found: list[RecordedEvent] = []
        for at in range(0, len(ids), sql.ID_CHUNK):
            chunk = ids[at : at + sql.ID_CHUNK]
            found += self.codec.decode_rows(
                self.fetch_few(
                    sql.find_events_sql(len(chunk)), sql.find_events_params(stream_id, chunk)
                )
            )
        return sorted(found, key=lambda e: e.version)

    async def on_writer(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` with the writer connection on the writer's thread, between batches.

        For the store's own side tables (snapshots): ``work`` opens and commits its own
        transaction (one left open by an error is rolled back).
        """
        self._check_writable()
        refuse_inside_unit(self, "a write (a snapshot, a transformation)")
        assert self._writer is not None
        return await self._writer.call(work)

    async def fetch(self, query: str, params: sql.Params = ()) -> list[Any]:
        """Run a read-only query on a reader thread's connection (for side tables)."""
        self._check_open()
        return await self._submit(query, params)

    async def stream_version(self, stream_id: str) -> int:
        self._check_open()
        check_stream_id(stream_id)
        rows = self.fetch_few(sql.STREAM_VERSION, {"sid": stream_id})
        return int(rows[0][0]) if rows else 0

    async def stream_info(self, stream_id: str) -> StreamInfo:
        self._check_open()
        check_stream_id(stream_id)
        rows = self.fetch_few(sql.STREAM_INFO, (stream_id,))
        if not rows:
            return StreamInfo(stream_id, 0)
        return StreamInfo(stream_id, int(rows[0][0]), rows[0][1])

    async def read_all(
        self,
        *,
        after: Position | str | None = None,
        types: Sequence[str | type[Event]] | None = None,
        categories: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        self._check_open()
        start = log_start(after, paired=False).seq
        names = type_names(types)
        wanted_types = self.codec.stored_type_names(names) if names else None
        wanted_cats = category_names(categories) or None
        limit = check_limit(limit)
        params: Callable[[int, int], sql.Params]
        if wanted_types is None and wanted_cats is None:
            query, params = sql.READ_ALL, lambda p, n: (p, n)
        else:
            t = json.dumps(wanted_types) if wanted_types is not None else None
            c = json.dumps(wanted_cats) if wanted_cats is not None else None
            query, params = (
                sql.READ_ALL_FILTERED,
                lambda p, n: {
                    "after": p,
                    "types": t,
                    "categories": c,
                    "limit": n,
                },
            )
        pages = self._pages(query, params, start, _row_position, limit, self.codec.decode_rows)
        async with aclosing(pages):
            async for page in pages:
                for event in page:
                    yield event

    async def head(self) -> Position:
        self._check_open()
        rows = self.fetch_few(sql.HEAD, ())
        return Position(0, int(rows[0][0]))

    async def streams(
        self,
        *,
        after: str | None = None,
        category: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[StreamInfo]:
        self._check_open()
        limit = check_limit(limit)
        params: Callable[[str, int], Sequence[Any]]
        if category is None:
            query, params = sql.STREAMS, lambda s, n: (s, n)
        else:
            query, params = sql.STREAMS_IN_CATEGORY, lambda s, n: (category, s, n)
        pages = self._pages(query, params, after or "", _row_id, limit, _stream_infos)
        async with aclosing(pages):
            async for page in pages:
                for info in page:
                    yield info

    async def stats(self) -> StoreStats:
        self._check_open()
        head = await self.head()
        rows = await self._submit(sql.COUNTS, ())
        streams, events = rows[0]
        return StoreStats(self.backend, head, int(streams), int(events))


def _idle(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether nothing else on the loop is ready to run (asyncio's own loop only: others
    do not say, and count as busy)."""
    ready = getattr(loop, "_ready", None)
    if ready is None:
        return False
    return not ready or all(handle.cancelled() for handle in ready)


def _row_position(row: Row) -> int:
    return row[9]


def _load_next_version(row: tuple[Any, ...]) -> int:
    return int(row[0]) + 1


def _row_id(row: tuple[str, int, str | None]) -> str:
    return row[0]


def _stream_infos(rows: list[tuple[str, int, str | None]]) -> list[StreamInfo]:
    return [StreamInfo(stream_id, version, replaced_by) for stream_id, version, replaced_by in rows]


def _translate(exc: sqlite3.Error, path: str) -> StoreError:
    """The one place sqlite3 errors become eventfold errors (chained to ``exc``, since
    the writer hands errors to callers through futures rather than raising them)."""
    error = _describe(exc, path)
    error.__cause__ = exc
    return error


def _describe(exc: sqlite3.Error, path: str) -> StoreError:
    message = str(exc)
    lowered = message.lower()
    if "locked" in lowered or "busy" in lowered:
        return StoreError(
            f"the SQLite database {path!r} stayed locked by another connection past the busy "
            f"timeout ({message}); find the process holding a long write transaction, or "
            "retry later"
        )
    if "unable to open" in lowered or "not a database" in lowered or "readonly" in lowered:
        return ConfigurationError(
            f"cannot use the SQLite database file {path!r}: {message}; check that the "
            "directory exists, that the file is an eventfold SQLite database, and that this "
            "process may read and write it"
        )
    if "already exists" in lowered:
        return ConfigurationError(
            f"the SQLite database {path!r} already holds tables eventfold did not create "
            f"({message}); point eventfold at its own file"
        )
    if "disk" in lowered:
        return StoreError(
            f"SQLite cannot write {path!r}: {message}; free disk space or check the device"
        )
    return StoreError(f"SQLite error on {path!r}: {message}")
