"""The PostgreSQL backend: psycopg 3, async, pooled (``postgresql://…``).

Global order. Every event row carries the id of the transaction that wrote it
(``transaction_id xid8``) and a sequence number, and `read_all` returns only rows whose
transaction is older than every transaction still running
(``pg_snapshot_xmin(pg_current_snapshot())``), in ``(transaction_id, seq)`` order. A
plain sequence would let a reader move past a number whose transaction commits later and
lose that event for good; the xid horizon never does, and never serialises writers (see
the storage design memo, §1). The price: a long write transaction anywhere in the
cluster delays every reader, so keep write transactions short.

Epochs. A logical copy of the store on another server (``pg_dump``/``pg_restore``,
logical replication) keeps the stored transaction ids but not the server's counter;
opening it there starts a new epoch whose base the store adds to the server's ids, so the
history stays readable, new events sort after it and old checkpoints stay valid
(`_epoch`; ``docs/operations.md``).

Concurrency. A ``streams`` row per stream holds its version; an append moves it and
inserts its events in one statement, one round trip and one short transaction (three,
with transaction hooks: `eventfold.store.TransactionHooks`); see `_append`. Readers page
one page ahead (`_paging`).

URL options, removed before the URL reaches libpq: ``schema`` (default ``eventfold``,
created if missing), ``pool_min_size`` and ``pool_max_size``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from functools import partial
from operator import itemgetter
from types import TracebackType
from typing import Any, Final, Self, TypeVar, cast

import psycopg
from psycopg_pool import AsyncConnectionPool

from ..._codec import Codec, LoadRow, Row
from ..._events import Event, NewEvent, RecordedEvent
from ..._position import START, ExpectedVersion, Position
from ...errors import (
    ConfigurationError,
    EventfoldError,
    InvalidInput,
    StoreClosed,
    StoreNotFound,
    StoreReadOnly,
)
from ...store._common import (
    MAX_STORED_INT,
    CommitListeners,
    bounded,
    category_names,
    check_event_ids,
    check_from_version,
    check_limit,
    check_recorded,
    check_stream_id,
    check_unmigrated,
    log_start,
    prepare_append,
    switch_refused,
    type_names,
)
from ...store.ports import LoadRows, Snapshot
from ...store.protocol import AppendResult, StoreStats, StreamInfo
from . import _paging
from ._append import append_one, append_statement, mode_of
from ._batch import Append, Batcher, append_many, load_many, load_one
from ._conn import MigrationTrack, applied, configure_read_only
from ._conn import configure as _configure
from ._conn import int_option as _int_option
from ._conn import migrate as _run_migrations
from ._conn import split_url as _split_url
from ._epoch import Epoch, HorizonWatch, current_epoch, settle_epoch
from ._errors import (
    Where,
    driver_errors,
    dropped,
    is_driver_error,
    read_conninfo,
    recheck,
    translate,
)
from ._hooks import PostgresTransactionHooks
from ._keys import PostgresSubjectKeys
from ._notify import NotifySender, channel_name
from ._paging import Pager, Rows
from ._schema import Statements, lock_key
from ._snapshots import PostgresSnapshotStore
from ._unit_of_work import UnitOfWorkSupport

__all__ = ["DEFAULT_SCHEMA", "PostgresStore"]

DEFAULT_SCHEMA: Final = "eventfold"
"""The schema the store's tables live in unless the URL says ``?schema=...``."""

_MAX_VERSION: Final = MAX_STORED_INT
_T = TypeVar("_T")

_Pool = AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]]


class PostgresStore(UnitOfWorkSupport):
    """An event store in a PostgreSQL database (13 or later).

    ``url`` is a libpq URL (``postgresql://user:password@host:5432/dbname``) plus the
    options ``schema``, ``pool_min_size`` and ``pool_max_size``. Opening fails within
    ``connect_timeout`` seconds when the server cannot be reached.

    ``read_only`` opens an existing store for inspection: nothing is created or migrated
    and every session is read-only; a schema without eventfold's tables raises
    `StoreNotFound`, a write `StoreReadOnly`.
    """

    backend = "postgresql"

    def __init__(
        self,
        url: str,
        codec: Codec | None = None,
        *,
        connect_timeout: float = 5.0,
        read_only: bool = False,
    ) -> None:
        self.codec = codec or Codec()
        self.read_only = read_only
        self._opens = 0
        """`open` calls not yet matched by a `close` (nested ``async with`` blocks)."""
        conninfo, options = _split_url(url)
        params = read_conninfo(conninfo, url)
        self.schema = options.get("schema", DEFAULT_SCHEMA)
        if not self.schema or len(self.schema.encode()) > 63:
            raise ConfigurationError(
                f"schema={self.schema!r} must be 1 to 63 bytes long (a PostgreSQL identifier)"
            )
        self._min_size = _int_option(options, "pool_min_size", 1)
        self._max_size = _int_option(options, "pool_max_size", 16)
        if self._max_size < max(self._min_size, 1):
            raise ConfigurationError("pool_max_size must be >= pool_min_size and >= 1")
        self.host = str(params.get("host") or params.get("hostaddr") or "localhost")
        port = str(params.get("port") or "5432")
        self.port: int | None = int(port) if port.isdigit() else None
        self.where = Where(
            repr(self),
            self.backend,
            self.host,
            self.port,
            self.schema,
            str(params.get("password") or ""),
        )
        """What a driver error's translation names (`_errors`)."""
        self._timeout = connect_timeout
        self._conninfo = conninfo
        self._kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in params:
            self._kwargs["connect_timeout"] = max(1, round(connect_timeout))
        if "application_name" not in params:
            self._kwargs["application_name"] = "eventfold"
        self.statements = Statements(self.schema)
        """This store's statements (in its schema, for its epoch's base)."""
        self.epoch = Epoch(0, 0)
        """The epoch of the global log this store writes in (set at open)."""
        self.horizon = HorizonWatch(self.statements, self.fetch_rows)
        """Warns when the horizon hides rows for longer than ``horizon.after`` seconds."""
        self._pool: _Pool | None = None
        self._pager = Pager(self.fetch_rows)
        self._appends: Batcher[Append, AppendResult] = Batcher(
            partial(append_one, self), partial(append_many, self)
        )
        self._loads: Batcher[dict[str, Any], Rows] = Batcher(
            partial(load_one, self), partial(load_many, self)
        )
        self.snapshots = PostgresSnapshotStore(self)
        """Snapshots, in a table beside the events."""
        self.committed = CommitListeners()
        """Called after each append this process commits (wake-ups, NOTIFY)."""
        self.channel = channel_name(self.schema)
        """The ``LISTEN`` channel that hears of this schema's appends (a hint, no data)."""
        self._notify = NotifySender(self._send_notify)
        self.committed.add(self._notify.poke)
        self.transaction_hooks = PostgresTransactionHooks(self)
        """Participants in each append's transaction (`eventfold.store.TransactionHooks`)."""
        self._subject_keys = PostgresSubjectKeys(self)

    @property
    def subject_keys(self) -> PostgresSubjectKeys:
        """Per-subject data keys for crypto-shredding (`eventfold.store.SubjectKeys`):
        synchronous, each call one blocking round trip on a connection of their own; see
        `eventfold.privacy`."""
        return self._subject_keys

    def __repr__(self) -> str:
        return f"PostgresStore(host={self.host!r}, port={self.port}, schema={self.schema!r})"

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, create the schema or apply pending migrations, and start the pool.

        Read-only: check that the schema holds an eventfold store, and change nothing.
        """
        if self._pool is not None:
            self._opens += 1
            return
        with driver_errors(self.where, connecting=True):
            conn = await psycopg.AsyncConnection.connect(self._conninfo, **self._kwargs)
        with driver_errors(self.where):
            async with conn:
                await self._migrate(conn)
        pool: _Pool = AsyncConnectionPool(
            self._conninfo,
            kwargs=self._kwargs,
            min_size=self._min_size,
            max_size=self._max_size,
            open=False,
            configure=configure_read_only if self.read_only else _configure,
            name=f"eventfold-{self.schema}",
            timeout=30.0,
        )
        try:
            with driver_errors(self.where, connecting=True):
                await pool.open(wait=True, timeout=self._timeout)
        except EventfoldError:
            await pool.close()
            raise
        self._pool = pool
        self._opens = 1

    async def close(self) -> None:
        """Close the pool once every `open` has had its `close`; safe to call again."""
        if self._opens > 1:
            self._opens -= 1
            return
        self._opens = 0
        if self._pool is not None:
            await self._appends.drain()
            await self._loads.drain()
            await self._notify.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await self._pager.settle()
            await pool.close()
        self._subject_keys.close()

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

    async def _migrate(self, conn: psycopg.AsyncConnection[Any]) -> None:
        st = self.statements
        track = MigrationTrack(
            st.migrations_table,
            st.has_migrations,
            st.schema_version,
            st.lock,
            lock_key(self.schema),
            [st.create_schema, st.create_migrations],
            st.migrations,
            st.record_migration,
        )
        if self.read_only:
            found, known = await applied(conn, track), len(st.migrations)
            if found == 0:
                raise StoreNotFound(
                    f"schema {self.schema!r} of the PostgreSQL database at {self.host}:{self.port}",
                    "it holds no eventfold tables; check the URL and its schema option",
                )
            check_unmigrated(found, known, f"schema {self.schema!r}")
            self.epoch = await current_epoch(conn, st)  # starting one would write
        else:
            await _run_migrations(conn, track)
            self.epoch = await settle_epoch(conn, st, st.lock, lock_key(self.schema))
        if self.epoch.base != st.base:
            self.statements = Statements(self.schema, self.epoch.base)
        self.horizon.start(self.statements, self.epoch)

    async def connect_direct(self) -> psycopg.AsyncConnection[Any]:
        """A new connection of its own, outside the pool, in autocommit.

        For what must hold a session: ``LISTEN`` and session advisory locks (leases).
        The caller closes it.
        """
        with driver_errors(self.where, connecting=True):
            return await psycopg.AsyncConnection.connect(self._conninfo, **self._kwargs)

    async def _send_notify(self) -> None:
        if self._pool is not None:
            await self.fetch_rows(b"SELECT 1 FROM pg_notify(%s, '')", (self.channel,), raw=True)

    def require_pool(self) -> _Pool:
        """The open pool, or `StoreClosed`. (For this backend's own modules, the
        read-model store first: not part of the `EventStore` port.)"""
        if self._pool is None:
            raise StoreClosed("postgresql store")
        return self._pool

    def _require_writable(self) -> _Pool:
        pool = self.require_pool()
        if self.read_only:
            raise StoreReadOnly(repr(self))
        return pool

    async def fetch_rows(self, query: bytes, params: Any, *, raw: bool = False) -> Rows:
        """Run one statement on a pooled connection and return its rows (binary).

        ``raw``: leave driver errors untranslated and never retry (appends).
        (For this backend's own modules, the read-model store first: not part of the
        `EventStore` port.)
        """

        async def run(conn: psycopg.AsyncConnection[Any]) -> Rows:
            cur = await conn.execute(query, params, binary=True)
            return await cur.fetchall()

        return await self._on_pooled(run, raw=raw)

    async def fetch_together(self, statements: Sequence[tuple[bytes, Any]]) -> list[Rows]:
        """Run ``statements`` in order on one pooled connection, in one round trip
        (psycopg's pipeline mode), and return the rows of each. Each statement sees what
        was committed when it started (read committed), so one read first is never newer
        than one read after it."""

        async def run(conn: psycopg.AsyncConnection[Any]) -> list[Rows]:
            async with conn.pipeline():
                cursors = [await conn.execute(q, p, binary=True) for q, p in statements]
            return [await cur.fetchall() for cur in cursors]

        return await self._on_pooled(run, raw=False)

    async def _on_pooled(
        self, run: Callable[[psycopg.AsyncConnection[Any]], Awaitable[_T]], *, raw: bool
    ) -> _T:
        """``run`` on a pooled connection; a read is retried once on a new connection
        when the server dropped the first, and driver errors are translated (not with
        ``raw``)."""
        pool = self.require_pool()
        for attempt in range(2):
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                # getconn/putconn rather than `pool.connection()`: that one also runs the
                # connection's own context exit (a commit, a no-op in autocommit) at a
                # cost that shows on a busy client.
                conn = await pool.getconn()
                try:
                    return await run(conn)
                finally:
                    await pool.putconn(conn)
            except Exception as exc:
                if dropped(exc, conn):
                    # Let the pool replace every dropped connection, then retry a read
                    # once. An append is not retried: it may have committed before the
                    # connection broke.
                    await recheck(pool)
                    if attempt == 0 and not raw:
                        continue
                if raw or not is_driver_error(exc):
                    raise
                raise translate(exc, self.where) from exc
        raise AssertionError("unreachable")

    # -- writing ---------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent],
        *,
        expected_version: ExpectedVersion,
    ) -> AppendResult:
        """Append all of ``events`` to the stream in one transaction, or none of them."""
        self._require_writable()
        if self.transaction_hooks.holding:
            await self.transaction_hooks.ready()
        encoded, expected = prepare_append(self.codec, stream_id, events, expected_version)
        query, params = append_statement(self.statements, stream_id, encoded, expected)
        return await self._submit(Append(stream_id, encoded, expected, query, params))

    async def drain_appends(self) -> None:
        """Wait until no append is in flight (a participant being added catches up after)."""
        await self._appends.drain()

    async def _submit(self, item: Append) -> AppendResult:
        """Run an append (batched with others asked for meanwhile), then tell listeners."""
        result = await self._appends.submit(item)
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
        self._require_writable()
        if self.transaction_hooks.holding:
            await self.transaction_hooks.ready()
        encoded, expected = prepare_append(self.codec, stream_id, events, expected_version)
        stamps = check_recorded(recorded_us, len(encoded))
        _, params = append_statement(self.statements, stream_id, encoded, expected)
        mode = mode_of(expected)
        if len(encoded) == 1:
            # The one-event statement takes scalars; this one takes arrays throughout.
            for key in ("ids", "types", "svs", "datas", "metas"):
                params[key] = [params[key]]
        params["recs"] = stamps
        query = self.statements.append_at[mode]
        return await self._submit(Append(stream_id, encoded, expected, query, params))

    async def replace_stream(
        self, stream_id: str, target: str, *, version: int, target_version: int
    ) -> None:
        """Point ``stream_id`` at ``target`` in one transaction (`eventfold.transform`).

        Refused with `TransformConflict` unless ``stream_id`` is still at ``version`` and
        not replaced, and ``target`` is at ``target_version`` and not replaced. Both rows
        are locked first, so no append to either slips in between the check and the switch.
        """
        pool = self._require_writable()
        check_stream_id(stream_id)
        check_stream_id(target)
        if stream_id == target:
            raise InvalidInput(f"stream {stream_id!r} cannot replace itself")
        st = self.statements
        names = {"sid": stream_id, "target": target}
        with driver_errors(self.where):
            async with pool.connection() as conn, conn.transaction():
                cur = await conn.execute(st.lock_streams, {"ids": [stream_id, target]})
                found = {sid: StreamInfo(sid, v, r) for sid, v, r in await cur.fetchall()}
                source = found.get(stream_id, StreamInfo(stream_id, 0))
                dest = found.get(target, StreamInfo(target, 0))
                if (
                    source.replaced_by is not None
                    or dest.replaced_by is not None
                    or source.version != version
                    or dest.version != target_version
                    or version < 1
                ):
                    raise switch_refused(source, dest, version, target_version)
                await conn.execute(st.replace_stream, names)
                await conn.execute(st.repoint_aliases, names)

    # -- reading ---------------------------------------------------------------------

    async def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
        follow_alias: bool = True,
    ) -> AsyncGenerator[RecordedEvent, None]:
        """The stream's events from ``from_version`` (inclusive), paged by version."""
        pages = self._stream_pages(stream_id, from_version, backwards, limit, follow_alias)
        async for rows in pages:
            for event in self.codec.decode_rows(rows):
                yield event

    async def read_stream_rows(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> AsyncGenerator[list[Row], None]:
        """`read_stream`'s rows, undecoded, a page at a time (`SupportsRowReads`)."""
        async for rows in self._stream_pages(stream_id, from_version, backwards, limit, True):
            if rows:
                yield cast(list[Row], rows)

    async def read_stream_page(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int,
    ) -> tuple[int, list[Row]]:
        """The stream's version and at most ``limit`` of its rows (`SupportsRowReads`),
        both in one round trip, the version read first, when one page holds them."""
        self.require_pool()
        check_stream_id(stream_id)
        size = check_limit(limit)
        if size is None or size > _paging.PAGE:
            version = await self.stream_version(stream_id)
            pages = self._stream_pages(stream_id, from_version, backwards, size, True)
            return version, [cast(Row, row) async for page in pages for row in page]
        _, first, params = self._stream_query(from_version, backwards)
        params |= {"sid": stream_id, "n": size}
        found, rows = await self.fetch_together(
            [(self.statements.stream_version, {"sid": stream_id}), (first, params)]
        )
        return (int(found[0][0]) if found else 0), cast(list[Row], rows)

    def _stream_query(
        self, from_version: int | None, backwards: bool
    ) -> tuple[bytes, bytes, dict[str, Any]]:
        """A stream read's query by id, its query following an alias (for the first
        page) and their ``at`` parameter."""
        start = check_from_version(from_version)
        st = self.statements
        if backwards:
            return (
                st.read_backwards,
                st.follow_backwards,
                {"at": _MAX_VERSION if start is None else start},
            )
        return st.read_forwards, st.follow_forwards, {"at": max(start or 1, 1)}

    def _stream_pages(
        self,
        stream_id: str,
        from_version: int | None,
        backwards: bool,
        limit: int | None,
        follow_alias: bool,
    ) -> AsyncGenerator[Rows, None]:
        self.require_pool()
        check_stream_id(stream_id)
        limit = check_limit(limit)
        query, follow, params = self._stream_query(from_version, backwards)
        step = -1 if backwards else 1
        params["sid"] = stream_id

        def advance(last: tuple[Any, ...]) -> None:
            # The later pages read the stream the first one found, by id.
            params["sid"], params["at"] = last[1], last[2] + step

        first = follow if follow_alias else query
        return self._pager.pages(first, params, limit, advance, then=query)

    async def read_for_load(
        self,
        stream_id: str,
        state_type: str,
        *,
        max_version: int | None = None,
        max_recorded_us: int | None = None,
    ) -> LoadRows:
        """What `CommandHandler` needs to load a stream, in one round trip.

        The newest snapshot of ``state_type`` within the bounds (as `PostgresSnapshotStore.
        load_snapshot` finds it; None when there is none), the id of the event at its
        version, and the stream's events after it (from version 1 without one) up to
        ``max_version``, a first page and the further ones (see `LoadRows`).
        """
        self.require_pool()
        check_stream_id(stream_id)
        upto = _MAX_VERSION if max_version is None else bounded(max_version)
        timed = max_recorded_us is not None
        params = {
            "sid": stream_id,
            "type": state_type,
            "version": upto,
            "recorded": _MAX_VERSION if max_recorded_us is None else bounded(max_recorded_us),
            "n": _paging.PAGE,
            "timed": timed,
        }
        rows = await self._loads.submit(params)
        _, sid, schema_version, data, recorded, version, event_id, taken, anchor = rows[0]
        snapshot: Snapshot | None = None
        if version is not None and version >= 1:
            snapshot = Snapshot(
                sid, state_type, version, schema_version, data, event_id, recorded, taken
            )
        first = self.codec.decode_loaded(sid, rows[1:])
        rest = None
        if len(rows) - 1 == _paging.PAGE:
            rest = self._load_pages(sid, rows[-1][0] + 1, upto, timed)
        return LoadRows(snapshot, sid, anchor, first, rest)

    async def _load_pages(
        self, stream_id: str, start: int, upto: int, timed: bool
    ) -> AsyncGenerator[list[LoadRow], None]:
        params: dict[str, Any] = {"sid": stream_id, "at": start, "upto": upto, "timed": timed}

        def advance(last: tuple[Any, ...]) -> None:
            params["at"] = last[0] + 1

        async for rows in self._pager.pages(self.statements.load_page, params, None, advance):
            yield self.codec.decode_loaded(stream_id, rows)

    async def find_events(
        self, stream_id: str, event_ids: Sequence[uuid.UUID]
    ) -> list[RecordedEvent]:
        """The stream's events with these ids, in stream order (missing ids are skipped)."""
        self.require_pool()
        check_stream_id(stream_id)
        ids = check_event_ids(event_ids)
        if not ids:
            return []
        rows = await self.fetch_rows(self.statements.find_events, {"sid": stream_id, "ids": ids})
        rows.sort(key=itemgetter(2))
        return self.codec.decode_rows(rows)

    async def stream_version(self, stream_id: str) -> int:
        """The stream's version: its number of events, 0 when it has none."""
        self.require_pool()
        check_stream_id(stream_id)
        rows = await self.fetch_rows(self.statements.stream_version, {"sid": stream_id})
        return int(rows[0][0]) if rows else 0

    async def stream_info(self, stream_id: str) -> StreamInfo:
        """The stream's own version and what replaced it, without following any alias."""
        self.require_pool()
        check_stream_id(stream_id)
        rows = await self.fetch_rows(self.statements.stream_info, {"sid": stream_id})
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
    ) -> AsyncGenerator[RecordedEvent, None]:
        """The global log after ``after``, below the horizon of running transactions."""
        async for rows in self._log_pages(after, types, categories, limit):
            for event in self.codec.decode_rows(rows):
                yield event
        await self.horizon.poke()

    async def read_all_rows(
        self,
        *,
        after: Position | str | None = None,
        types: Sequence[str | type[Event]] | None = None,
        categories: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> AsyncGenerator[list[Row], None]:
        """`read_all`'s rows, undecoded, a page at a time (`SupportsRowReads`)."""
        async for rows in self._log_pages(after, types, categories, limit):
            if rows:
                yield cast(list[Row], rows)
        await self.horizon.poke()

    def _log_pages(
        self,
        after: Position | str | None,
        types: Sequence[str | type[Event]] | None,
        categories: Sequence[str] | None,
        limit: int | None,
    ) -> AsyncGenerator[Rows, None]:
        self.require_pool()
        start = log_start(after, paired=True)
        wanted = type_names(types)
        names = self.codec.stored_type_names(wanted) if wanted else None
        cats = category_names(categories) or None
        limit = check_limit(limit)
        query = self.statements.read_all[(names is not None, cats is not None)]
        params: dict[str, Any] = {"x": str(start.tx), "s": start.seq, "types": names, "cats": cats}

        def advance(last: tuple[Any, ...]) -> None:
            params["x"], params["s"] = str(last[8]), last[9]

        return self._pager.pages(query, params, limit, advance)

    async def head(self) -> Position:
        """The position of the newest event below the horizon (`START` when none)."""
        rows = await self.fetch_rows(self.statements.head, ())
        await self.horizon.poke()
        return Position(rows[0][0], rows[0][1]) if rows else START

    async def streams(
        self,
        *,
        after: str | None = None,
        category: str | None = None,
        limit: int | None = None,
    ) -> AsyncGenerator[StreamInfo, None]:
        """Streams with their versions, ordered by id, paged by id."""
        self.require_pool()
        limit = check_limit(limit)
        query = self.statements.streams if category is None else self.statements.streams_in_category
        params: dict[str, Any] = {"after": after or "", "cat": category}

        def advance(last: tuple[Any, ...]) -> None:
            params["after"] = last[0]

        async for rows in self._pager.pages(query, params, limit, advance):
            for stream_id, version, replaced_by in rows:
                yield StreamInfo(stream_id, version, replaced_by)

    async def stats(self) -> StoreStats:
        """The backend's name, the head, and how many streams and events it holds."""
        rows = await self.fetch_rows(self.statements.counts, ())
        return StoreStats(
            self.backend, await self.head(), int(rows[0][0]), int(rows[0][1]), self.epoch.number
        )
