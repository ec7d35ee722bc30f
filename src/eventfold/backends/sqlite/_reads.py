"""The SQLite store's reads: its reader connections, and every query of the `EventStore`
port and of the handler's load (`SQLiteReads`, which `SQLiteStore` extends).

Reads run on the event loop's thread, one autocommit query per page: in WAL mode a read
never waits for the writer. A short read (a stream's version, a handler's load) uses the
writer's connection when it is free, whose page cache survives its own commits; longer
ones page on a reader connection. Pages hold at most `PAGE_SIZE` rows and shrink when rows
are large (`PAGE_BUDGET`), and a read lets other tasks run between pages, so the loop is
never held for long. Queries of unknown cost (`stats`, `fetch` for side tables) run on a
small pool of reader threads. Every page sees the latest commits, including other
processes'.
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
from typing import Any, TypeVar

from ..._codec import Codec, Row
from ..._events import Event, RecordedEvent
from ..._position import Position
from ...errors import StoreClosed
from ...store._common import (
    PAGE_SIZE,
    bounded,
    category_names,
    check_event_ids,
    check_from_version,
    check_limit,
    check_stream_id,
    log_start,
    type_names,
)
from ...store.ports import LoadRows, Snapshot
from ...store.protocol import StoreStats, StreamInfo
from . import _schema as sql
from ._errors import driver_errors, is_driver_error, translate
from ._writer import SQLiteWriter

__all__ = ["PAGE_BUDGET", "SQLiteReads"]

PAGE_BUDGET = 0.004
"""Seconds one page of a read may hold the event loop; larger rows make smaller pages."""

_MIN_PAGE = 16
_FIRST_PAGE = 128
"""Rows of a handler's load read in its first query (on the writer's connection when it
is free: a short stream is one query; a longer one pages on in `PAGE_SIZE` pages)."""
_MAX_VERSION = 2**62
_T = TypeVar("_T")
_R = TypeVar("_R")


class SQLiteReads:
    """The reading half of `SQLiteStore` (which sets the attributes declared here)."""

    backend: str
    path: str
    codec: Codec
    synchronous: str
    busy_timeout: float
    _open: bool
    _writer: SQLiteWriter | None
    _reader_pool: ThreadPoolExecutor | None
    _local: threading.local
    _reader_conns: list[sqlite3.Connection]
    _reader_lock: threading.Lock

    def _connect(self, *, reader: bool) -> sqlite3.Connection:
        with driver_errors(self.path):
            return self._connect_raw(reader=reader)

    def _connect_raw(self, *, reader: bool) -> sqlite3.Connection:
        return sql.connect(
            self.path, reader=reader, synchronous=self.synchronous, timeout=self.busy_timeout
        )

    def _check_open(self) -> None:
        if not self._open:
            raise StoreClosed(f"sqlite store {self.path!r}")

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
        except Exception as exc:
            if is_driver_error(exc):
                raise translate(exc, self.path) from exc
            raise

    def fetch_few(self, query: str, params: sql.Params) -> list[Any]:
        """`fetch_rows` for a query of a few rows: on the writer's connection when it is free
        (its page cache is still warm after this store's own commits)."""
        writer = self._writer
        if writer is not None and self._open:
            try:
                rows = writer.read_inline(query, params)
            except Exception as exc:
                if is_driver_error(exc):
                    raise translate(exc, self.path) from exc
                raise
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
        pages = self._stream_pages(
            stream_id, from_version, backwards, limit, follow_alias, self.codec.decode_rows
        )
        async with aclosing(pages):
            async for page in pages:
                for event in page:
                    yield event

    async def read_stream_rows(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> AsyncIterator[list[Row]]:
        """`read_stream`'s rows, undecoded, a page at a time (`SupportsRowReads`)."""
        pages = self._stream_pages(stream_id, from_version, backwards, limit, True, _as_rows)
        async with aclosing(pages):
            async for page in pages:
                yield page

    async def read_stream_page(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int,
    ) -> tuple[int, list[Row]]:
        """The stream's version, then at most ``limit`` of its rows (`SupportsRowReads`):
        the version is read inline on the writer's connection, microseconds before."""
        version = await self.stream_version(stream_id)
        pages = self.read_stream_rows(
            stream_id, from_version=from_version, backwards=backwards, limit=limit
        )
        return version, [row async for page in pages for row in page]

    def _stream_pages(
        self,
        stream_id: str,
        from_version: int | None,
        backwards: bool,
        limit: int | None,
        follow_alias: bool,
        decode: Callable[[list[Any]], list[_R]],
    ) -> AsyncGenerator[list[_R], None]:
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

        def convert(rows: list[Any]) -> list[_R]:
            found[0] = rows[0][1]
            return decode(rows)

        return self._pages(
            follow if follow_alias else query,
            lambda v, n: {"sid": found[0], "version": v, "limit": n},
            key,
            lambda row: row[2] + step,
            limit,
            convert if follow_alias else decode,
            query,
        )

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
        if self.codec.protector is None:
            query = sql.LOAD_EVENTS if max_recorded_us is None else sql.LOAD_EVENTS_TIMED
        else:
            query = sql.LOAD_SEALED if max_recorded_us is None else sql.LOAD_SEALED_TIMED
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
        pages = self._log_pages(after, types, categories, limit, self.codec.decode_rows)
        async with aclosing(pages):
            async for page in pages:
                for event in page:
                    yield event

    async def read_all_rows(
        self,
        *,
        after: Position | str | None = None,
        types: Sequence[str | type[Event]] | None = None,
        categories: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[list[Row]]:
        """`read_all`'s rows, undecoded, a page at a time (`SupportsRowReads`)."""
        pages = self._log_pages(after, types, categories, limit, _as_rows)
        async with aclosing(pages):
            async for page in pages:
                yield page

    def _log_pages(
        self,
        after: Position | str | None,
        types: Sequence[str | type[Event]] | None,
        categories: Sequence[str] | None,
        limit: int | None,
        decode: Callable[[list[Any]], list[_R]],
    ) -> AsyncGenerator[list[_R], None]:
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
        return self._pages(query, params, start, _row_position, limit, decode)

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


def _as_rows(rows: list[Any]) -> list[Row]:
    """A page of cursor rows as they are: they are `Row`s already."""
    return rows


def _row_position(row: Row) -> int:
    return row[9]


def _load_next_version(row: tuple[Any, ...]) -> int:
    return int(row[0]) + 1


def _row_id(row: tuple[str, int, str | None]) -> str:
    return row[0]


def _stream_infos(rows: list[tuple[str, int, str | None]]) -> list[StreamInfo]:
    return [StreamInfo(stream_id, version, replaced_by) for stream_id, version, replaced_by in rows]
