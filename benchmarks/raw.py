"""The raw baselines: the same work as eventfold's, done with the bare driver.

Each baseline makes its own table of the same shape as the backend's (a fresh SQLite file;
a scratch PostgreSQL schema, dropped afterwards), encodes the same `OrderPlaced` events
with msgspec, inserts them with plain ``sqlite3`` / psycopg statements, and reads them
back with a SELECT and a typed ``msgspec.json.Decoder``. No concurrency checks beyond the
unique constraints, no envelopes: the practical limit a framework can approach.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from workloads import OrderPlaced, make_orders

__all__ = [
    "POSTGRES_PAGE",
    "SQLITE_PAGE",
    "RawPostgres",
    "RawSQLite",
    "RawStore",
    "drop_schema",
    "fresh_raw",
    "open_raw",
    "scratch_file",
    "split_schema",
    "with_schema",
]

TYPE_NAME = OrderPlaced.__event_type__
EMPTY_META = b"{}"
SQLITE_PAGE = 1000
"""Rows per page for SQLite's paged reads: the SQLite backend's page size."""
POSTGRES_PAGE = 5000
"""Rows per page for PostgreSQL's paged reads: the PostgreSQL backend's page size."""


class RawStore(Protocol):
    """What every raw baseline can do; each call is the driver doing the work, no more."""

    location: str
    """Where its table lives, as a URL the child process can reopen."""
    page_size: int
    """Rows per page of a paged read: the same as the eventfold backend's."""

    async def append_batch(
        self, stream_id: str, events: Sequence[OrderPlaced], start_version: int
    ) -> None:
        """Insert ``events`` as versions ``start_version + 1 …`` in one transaction."""
        ...

    async def append_single(self, stream_id: str, event: OrderPlaced) -> None:
        """Insert one event as version 1 of a new stream, in a transaction of its own."""
        ...

    async def open_workers(self, n: int) -> None:
        """Get ready for `append_concurrently` with ``n`` tasks (untimed set-up)."""
        ...

    async def append_concurrently(
        self, streams: Sequence[str], events: Sequence[OrderPlaced], tasks: int
    ) -> None:
        """One single-row transaction per stream, as concurrently as the database allows."""
        ...

    async def read_stream(self, stream_id: str, page_size: int | None) -> int:
        """Read and decode a stream in version order; ``None``: one query, no pages."""
        ...

    async def read_all(self, page_size: int | None) -> int:
        """Read and decode the whole log in log order; ``None``: one query, no pages."""
        ...

    async def populate(self, total: int, batch: int, streams: int | None = None) -> None:
        """Fill the table quickly, in the same stream layout as `workloads.populate`."""
        ...

    async def close(self) -> None: ...


def _ids(n: int) -> list[bytes]:
    raw = os.urandom(16 * n)
    return [raw[i : i + 16] for i in range(0, 16 * n, 16)]


def _decode_rows(decode: Callable[[bytes], OrderPlaced], rows: list[Any]) -> int:
    """Decode each row's payload and read a field of it, as a consumer would; return
    how many decoded (all of them: every order has a quantity of at least 1)."""
    n = 0
    for row in rows:
        if decode(row[5]).quantity > 0:
            n += 1
    return n


# -- URL helpers ---------------------------------------------------------------------


EVENTFOLD_OPTIONS = ("schema", "pool_min_size", "pool_max_size")
"""URL options the PostgreSQL backend takes for itself (libpq does not know them)."""


def split_schema(url: str) -> tuple[str, str | None]:
    """A PostgreSQL URL without eventfold's own options, for libpq, and the ``schema``
    option's value."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    rest = urlencode([(k, v) for k, v in query if k not in EVENTFOLD_OPTIONS])
    return urlunsplit(parts._replace(query=rest)), schema


def with_schema(url: str, schema: str) -> str:
    """``url`` with its ``schema`` option set to ``schema`` (its other options kept)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "schema"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("schema", schema)])))


# -- SQLite --------------------------------------------------------------------------

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id BLOB NOT NULL,
    stream_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    type TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    data BLOB NOT NULL,
    metadata BLOB NOT NULL,
    recorded_at INTEGER NOT NULL,
    UNIQUE (stream_id, version),
    UNIQUE (stream_id, event_id)
)
"""
_SQLITE_INSERT = (
    "INSERT INTO events (event_id, stream_id, version, type, schema_version, data, "
    "metadata, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQLITE_COLUMNS = (
    "event_id, stream_id, version, type, schema_version, data, metadata, recorded_at, position"
)
_SQLITE_READ_ALL_PAGE = (
    f"SELECT {_SQLITE_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
)
_SQLITE_READ_ALL = f"SELECT {_SQLITE_COLUMNS} FROM events ORDER BY position"
_SQLITE_READ_STREAM_PAGE = (
    f"SELECT {_SQLITE_COLUMNS} FROM events WHERE stream_id = ? AND version > ? "
    "ORDER BY version LIMIT ?"
)
_SQLITE_READ_STREAM = f"SELECT {_SQLITE_COLUMNS} FROM events WHERE stream_id = ? ORDER BY version"


class RawSQLite:
    """One ``sqlite3`` connection: WAL, ``synchronous=FULL``, ``BEGIN IMMEDIATE`` writes."""

    def __init__(self, path: str, synchronous: str = "FULL") -> None:
        self.path = path
        self.location = f"sqlite:///{path}"
        self.page_size = SQLITE_PAGE
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, got {synchronous!r}")
        self.conn.execute(f"PRAGMA synchronous={synchronous}")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self.conn.execute(_SQLITE_SCHEMA)
        self._encode = msgspec.json.Encoder().encode
        self._decode = msgspec.json.Decoder(OrderPlaced).decode

    async def append_batch(
        self, stream_id: str, events: Sequence[OrderPlaced], start_version: int
    ) -> None:
        encode = self._encode
        now = time.time_ns() // 1000
        ids = _ids(len(events))
        rows = [
            (ids[i], stream_id, start_version + i + 1, TYPE_NAME, 1, encode(e), EMPTY_META, now)
            for i, e in enumerate(events)
        ]
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_SQLITE_INSERT, rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    async def append_single(self, stream_id: str, event: OrderPlaced) -> None:
        conn = self.conn
        row = (
            os.urandom(16), stream_id, 1, TYPE_NAME, 1, self._encode(event), EMPTY_META,
            time.time_ns() // 1000,
        )  # fmt: skip
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_SQLITE_INSERT, row)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    async def append_group(
        self, streams: Sequence[str], events: Sequence[OrderPlaced], group: int
    ) -> None:
        """Single-event appends to new streams, ``group`` of them per transaction: the
        best a group-committing single writer can do."""
        encode = self._encode
        conn = self.conn
        for start in range(0, len(streams), group):
            now = time.time_ns() // 1000
            ids = _ids(min(group, len(streams) - start))
            conn.execute("BEGIN IMMEDIATE")
            for i, eid in enumerate(ids):
                event = encode(events[start + i])
                row = (eid, streams[start + i], 1, TYPE_NAME, 1, event, EMPTY_META, now)
                conn.execute(_SQLITE_INSERT, row)
            conn.execute("COMMIT")

    async def open_workers(self, n: int) -> None:
        return None

    async def append_concurrently(
        self, streams: Sequence[str], events: Sequence[OrderPlaced], tasks: int
    ) -> None:
        # SQLite has one writer at a time: "concurrent" single-row transactions on one
        # connection are these transactions one after another.
        for stream_id, event in zip(streams, events, strict=True):
            await self.append_single(stream_id, event)

    async def read_stream(self, stream_id: str, page_size: int | None) -> int:
        decode = self._decode
        n = 0
        if page_size is None:
            for row in self.conn.execute(_SQLITE_READ_STREAM, (stream_id,)):
                if decode(row[5]).quantity > 0:
                    n += 1
            return n
        version = 0
        while True:
            rows = self.conn.execute(
                _SQLITE_READ_STREAM_PAGE, (stream_id, version, page_size)
            ).fetchall()
            if not rows:
                return n
            n += _decode_rows(self._decode, rows)
            version = rows[-1][2]

    async def read_all(self, page_size: int | None) -> int:
        decode = self._decode
        n = 0
        if page_size is None:
            for row in self.conn.execute(_SQLITE_READ_ALL):
                if decode(row[5]).quantity > 0:
                    n += 1
            return n
        position = 0
        while True:
            rows = self.conn.execute(_SQLITE_READ_ALL_PAGE, (position, page_size)).fetchall()
            if not rows:
                return n
            n += _decode_rows(self._decode, rows)
            position = rows[-1][8]

    async def populate(self, total: int, batch: int, streams: int | None = None) -> None:
        version: dict[str, int] = {}
        for n, start in enumerate(range(0, total, batch)):
            stream_id = f"order-{n % streams if streams else n}"
            events = make_orders(min(batch, total - start), start)
            await self.append_batch(stream_id, events, version.get(stream_id, 0))
            version[stream_id] = version.get(stream_id, 0) + len(events)

    async def close(self) -> None:
        self.conn.close()


# -- PostgreSQL ----------------------------------------------------------------------

# The PostgreSQL backend's events table (its primary key is the log order).
_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq bigint GENERATED ALWAYS AS IDENTITY,
    transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    event_id uuid NOT NULL,
    stream_id text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    type text NOT NULL,
    schema_version int NOT NULL,
    data bytea NOT NULL,
    metadata bytea NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (transaction_id, seq),
    UNIQUE (stream_id, version),
    UNIQUE (stream_id, event_id)
)
"""
_PG_INSERT = (
    "INSERT INTO events (event_id, stream_id, version, type, schema_version, data, metadata) "
    "VALUES (%s, %s, %s, %s, %s, %b, %b)"
)
_PG_COPY = (
    "COPY events (event_id, stream_id, version, type, schema_version, data, metadata) "
    "FROM STDIN (FORMAT BINARY)"
)
_PG_COPY_TYPES = ["uuid", "text", "int8", "text", "int4", "bytea", "bytea"]
# The columns as a reader needs them; the timestamp, id and transaction id come back as
# plain ints and bytes so no per-row datetime or UUID object is built.
_PG_COLUMNS = (
    "uuid_send(event_id), stream_id, version, type, schema_version, data, metadata, "
    "(extract(epoch FROM recorded_at) * 1000000)::int8 AS recorded_us, "
    "transaction_id::text::int8 AS tx, seq"
)
_PG_VISIBLE = "transaction_id < pg_snapshot_xmin(pg_current_snapshot())"
_PG_READ_ALL_PAGE = (
    f"SELECT {_PG_COLUMNS} FROM events WHERE (transaction_id, seq) > (%s::text::xid8, %s) "
    f"AND {_PG_VISIBLE} ORDER BY transaction_id, seq LIMIT %s"
)
_PG_READ_ALL = f"SELECT {_PG_COLUMNS} FROM events WHERE {_PG_VISIBLE} ORDER BY transaction_id, seq"
_PG_READ_STREAM_PAGE = (
    f"SELECT {_PG_COLUMNS} FROM events WHERE stream_id = %s AND version > %s "
    "ORDER BY version LIMIT %s"
)
_PG_READ_STREAM = f"SELECT {_PG_COLUMNS} FROM events WHERE stream_id = %s ORDER BY version"

if TYPE_CHECKING:
    from psycopg import AsyncConnection

# psycopg is imported only when PostgreSQL is benchmarked.
PgConn: TypeAlias = "AsyncConnection[tuple[Any, ...]]"


async def _pg_connect(conninfo: str, schema: str) -> PgConn:
    import psycopg
    from psycopg import sql

    conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    return conn


async def drop_schema(conninfo: str, schema: str) -> None:
    """Drop a scratch schema and everything in it."""
    import psycopg
    from psycopg import sql

    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


class RawPostgres:
    """psycopg 3 async connections in autocommit mode, explicit transactions where
    several statements must commit together."""

    def __init__(self, conninfo: str, schema: str, conn: PgConn) -> None:
        self.conninfo = conninfo
        self.schema = schema
        self.location = with_schema(conninfo, schema)
        self.page_size = POSTGRES_PAGE
        self.conn = conn
        self.workers: list[PgConn] = []
        self._encode = msgspec.json.Encoder().encode
        self._decode = msgspec.json.Decoder(OrderPlaced).decode

    @classmethod
    async def create(cls, conninfo: str, schema: str) -> RawPostgres:
        """Make the scratch schema and its table."""
        import psycopg
        from psycopg import sql

        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
            )
        conn = await _pg_connect(conninfo, schema)
        await conn.execute(_PG_SCHEMA)
        return cls(conninfo, schema, conn)

    @classmethod
    async def open(cls, conninfo: str, schema: str) -> RawPostgres:
        """Reopen an existing scratch schema."""
        return cls(conninfo, schema, await _pg_connect(conninfo, schema))

    def _rows(
        self, stream_id: str, events: Sequence[OrderPlaced], start_version: int
    ) -> list[tuple[object, ...]]:
        encode = self._encode
        ids = _ids(len(events))
        return [
            (uuid.UUID(bytes=ids[i]), stream_id, start_version + i + 1, TYPE_NAME, 1,
             encode(e), EMPTY_META)
            for i, e in enumerate(events)
        ]  # fmt: skip

    async def append_batch(
        self, stream_id: str, events: Sequence[OrderPlaced], start_version: int
    ) -> None:
        rows = self._rows(stream_id, events, start_version)
        async with self.conn.transaction(), self.conn.cursor() as cur:
            await cur.executemany(_PG_INSERT, rows)

    async def append_batch_copy(
        self, stream_id: str, events: Sequence[OrderPlaced], start_version: int
    ) -> None:
        """Like `append_batch`, with binary COPY instead of INSERTs."""
        rows = self._rows(stream_id, events, start_version)
        async with (
            self.conn.transaction(),
            self.conn.cursor() as cur,
            cur.copy(_PG_COPY) as copy,
        ):
            copy.set_types(_PG_COPY_TYPES)
            for row in rows:
                await copy.write_row(row)

    async def _insert_one(self, conn: PgConn, stream_id: str, event: OrderPlaced) -> None:
        row = (uuid.uuid4(), stream_id, 1, TYPE_NAME, 1, self._encode(event), EMPTY_META)
        await conn.execute(_PG_INSERT, row)

    async def append_single(self, stream_id: str, event: OrderPlaced) -> None:
        # One INSERT in autocommit mode: its own transaction, one round trip.
        await self._insert_one(self.conn, stream_id, event)

    async def open_workers(self, n: int) -> None:
        while len(self.workers) < n:
            self.workers.append(await _pg_connect(self.conninfo, self.schema))

    async def append_concurrently(
        self, streams: Sequence[str], events: Sequence[OrderPlaced], tasks: int
    ) -> None:
        work = iter(zip(streams, events, strict=True))

        async def worker(conn: PgConn) -> None:
            for stream_id, event in work:
                await self._insert_one(conn, stream_id, event)

        await asyncio.gather(*(worker(conn) for conn in self.workers[:tasks]))

    async def read_stream(self, stream_id: str, page_size: int | None) -> int:
        decode = self._decode
        n = 0
        async with self.conn.cursor(binary=True) as cur:
            if page_size is None:
                await cur.execute(_PG_READ_STREAM, (stream_id,))
                for row in await cur.fetchall():
                    if decode(row[5]).quantity > 0:
                        n += 1
                return n
            version = 0
            while True:
                await cur.execute(_PG_READ_STREAM_PAGE, (stream_id, version, page_size))
                rows = await cur.fetchall()
                if not rows:
                    return n
                n += _decode_rows(decode, rows)
                version = rows[-1][2]

    async def read_all(self, page_size: int | None) -> int:
        decode = self._decode
        n = 0
        if page_size is None:
            # A server-side cursor, so the whole log is never in memory at once.
            async with (
                self.conn.transaction(),
                self.conn.cursor("raw_read_all", binary=True) as cur,
            ):
                cur.itersize = self.page_size
                await cur.execute(_PG_READ_ALL)
                async for row in cur:
                    if decode(row[5]).quantity > 0:
                        n += 1
            return n
        tx, seq = 0, 0
        async with self.conn.cursor(binary=True) as cur:
            while True:
                await cur.execute(_PG_READ_ALL_PAGE, (str(tx), seq, page_size))
                rows = await cur.fetchall()
                if not rows:
                    return n
                n += _decode_rows(decode, rows)
                tx, seq = rows[-1][8], rows[-1][9]

    async def populate(self, total: int, batch: int, streams: int | None = None) -> None:
        version: dict[str, int] = {}
        for n, start in enumerate(range(0, total, batch)):
            stream_id = f"order-{n % streams if streams else n}"
            events = make_orders(min(batch, total - start), start)
            await self.append_batch_copy(stream_id, events, version.get(stream_id, 0))
            version[stream_id] = version.get(stream_id, 0) + len(events)
        # As for the store: wait until every row is below the transaction horizon.
        for _ in range(3000):
            cur = await self.conn.execute(f"SELECT count(*) FROM events WHERE {_PG_VISIBLE}")
            row = await cur.fetchone()
            if row is not None and row[0] >= total:
                return
            await asyncio.sleep(0.01)
        raise RuntimeError("the raw table's rows never all became readable")

    async def close(self) -> None:
        for conn in [*self.workers, self.conn]:
            await conn.close()
        self.workers.clear()


# -- making and reopening ------------------------------------------------------------


def scratch_file(prefix: str, tmpdir: str | None) -> tuple[str, str]:
    """A new temporary folder and the absolute path of a database file in it."""
    folder = os.path.abspath(tempfile.mkdtemp(prefix=prefix, dir=tmpdir))
    return folder, os.path.join(folder, "bench.db")


@asynccontextmanager
async def fresh_raw(
    backend: str, url: str | None, tmpdir: str | None, synchronous: str = "FULL"
) -> AsyncIterator[RawStore]:
    """A raw baseline with an empty table, removed afterwards."""
    if backend == "sqlite":
        folder, path = scratch_file("eventfold-raw-", tmpdir)
        store = RawSQLite(path, synchronous)
        try:
            yield store
        finally:
            await store.close()
            shutil.rmtree(folder, ignore_errors=True)
    elif backend == "postgres":
        assert url is not None
        conninfo, _ = split_schema(url)
        schema = f"bench_raw_{secrets.token_hex(6)}"
        try:
            pg = await RawPostgres.create(conninfo, schema)
            try:
                yield pg
            finally:
                await pg.close()
        finally:
            await drop_schema(conninfo, schema)
    else:
        raise ValueError(f"no raw baseline for the {backend} backend")


async def open_raw(location: str) -> RawStore:
    """Reopen a raw baseline's table from its `RawStore.location`."""
    if location.startswith("sqlite:///"):
        return RawSQLite(location.removeprefix("sqlite:///"))
    conninfo, schema = split_schema(location)
    if schema is None:
        raise ValueError(f"raw PostgreSQL location {location!r} names no schema")
    return await RawPostgres.open(conninfo, schema)
