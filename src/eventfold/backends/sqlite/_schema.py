"""The SQLite backend's connections, tables, numbered migrations and constant SQL."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, TypeAlias
from urllib.parse import quote

from ...errors import ConfigurationError, SchemaTooNew
from ._errors import is_locked, is_operational
from ._tx import transaction

__all__ = [
    "MIGRATIONS",
    "SYNCHRONOUS",
    "apply_migrations",
    "connect",
    "migrate",
    "schema_number",
]

AUTOCHECKPOINT_PAGES = 4000
"""WAL pages after which the committing writer checkpoints (SQLite's default is 1000).

A small group commit dirties an index page per stream it touches; a longer WAL lets one
checkpoint copy each hot page once, with one fsync of the database file, instead of
several times."""

Params: TypeAlias = Sequence[Any] | Mapping[str, Any]
"""A statement's parameters: a sequence for plain ``?`` placeholders, a mapping for
``:name`` ones. A statement that uses a value twice names it: numbered placeholders
(``?NNN``) bound from a sequence warn on Python 3.12 and 3.13 and raise on 3.14."""

SYNCHRONOUS = {"FULL": "PRAGMA synchronous = FULL", "NORMAL": "PRAGMA synchronous = NORMAL"}
"""The durability settings eventfold offers, and the pragma for each."""

_AUTOCHECKPOINT = f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}"


def connect(path: str, *, reader: bool, synchronous: str, timeout: float) -> sqlite3.Connection:
    """Open a connection to the store's file: the writer's, or a read-only reader's
    (which never creates the file: one that is missing raises ``unable to open``).

    Raises `sqlite3.Error` (the backend translates it) or `ConfigurationError`.
    """
    if reader:
        try:
            return _open_reader(path, synchronous, timeout, immutable=False)
        except Exception as exc:
            if not is_operational(exc):
                raise
            # A WAL file whose -shm neither exists nor can be made (a read-only directory:
            # a backup, a mounted snapshot) has no live writer, since a writer makes one;
            # SQLite reads it only when told the file cannot change.
            if not os.path.exists(path) or os.path.exists(f"{path}-shm"):
                raise
            return _open_reader(path, synchronous, timeout, immutable=True)
    conn = _open(path, timeout, uri=False)
    try:
        conn.execute(_AUTOCHECKPOINT)
        _use_wal(conn, path, timeout)
        conn.execute(SYNCHRONOUS[synchronous])
    except BaseException:
        conn.close()
        raise
    return conn


def _open(target: str, timeout: float, *, uri: bool) -> sqlite3.Connection:
    # isolation_level=None: no implicit transaction; the writer begins its own (`_tx`)
    # and every read runs in autocommit. A reader is used by one thread only, but closed
    # by the store from another; the writer is used by its thread and, under its lock,
    # by the event loop's (an append to an idle store); hence check_same_thread=False.
    return sqlite3.connect(
        target,
        timeout=timeout,  # SQLite's busy_timeout
        isolation_level=None,
        check_same_thread=False,
        cached_statements=64,
        uri=uri,
    )


def _open_reader(
    path: str, synchronous: str, timeout: float, *, immutable: bool
) -> sqlite3.Connection:
    """A read-only connection (``mode=ro``: it never creates the file or writes to it)."""
    flags = "mode=ro&immutable=1" if immutable else "mode=ro"
    conn = _open(f"file://{quote(os.path.abspath(path))}?{flags}", timeout, uri=True)
    try:
        # The first read opens the file and its WAL index: fail here, not in a query.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        conn.execute(SYNCHRONOUS[synchronous])
    except BaseException:
        conn.close()
        raise
    return conn


def _use_wal(conn: sqlite3.Connection, path: str, timeout: float) -> None:
    """Switch the file to WAL (a lasting property of the file) unless it is already."""
    deadline = time.monotonic() + timeout
    while (mode := conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except Exception as exc:
            # Switching needs the file to itself and SQLite does not apply busy_timeout
            # to it, so processes opening a new file together retry.
            if not is_locked(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)
            continue
        if mode.lower() != "wal":
            raise ConfigurationError(
                f"SQLite database {path!r} cannot use WAL mode (it reports {mode!r}); "
                "put it on a local file system"
            )


MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the global log, the stream index and the append-only guard.
    (
        """
        CREATE TABLE events (
            position INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id BLOB NOT NULL,
            stream_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            type TEXT NOT NULL,
            schema_version INTEGER NOT NULL,
            data BLOB NOT NULL,
            metadata BLOB NOT NULL,
            recorded_at INTEGER NOT NULL,  -- microseconds since the Unix epoch, UTC
            UNIQUE (stream_id, version),
            UNIQUE (stream_id, event_id)
        )
        """,
        """
        CREATE TABLE streams (
            stream_id TEXT PRIMARY KEY,
            version INTEGER NOT NULL,
            category TEXT NOT NULL
        ) WITHOUT ROWID
        """,
        "CREATE INDEX streams_by_category ON streams (category, stream_id)",
        """
        CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'eventfold events are append-only'); END
        """,
        """
        CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'eventfold events are append-only'); END
        """,
    ),
    # 2: snapshots (derived and disposable: rows here are replaced and may be deleted).
    (
        """
        CREATE TABLE snapshots (
            stream_id TEXT NOT NULL,
            state_type TEXT NOT NULL,
            version INTEGER NOT NULL,
            schema_version INTEGER NOT NULL,
            data BLOB NOT NULL,
            event_id BLOB NOT NULL,
            recorded_at INTEGER NOT NULL,
            taken_at INTEGER NOT NULL,
            PRIMARY KEY (stream_id, state_type, version)
        ) WITHOUT ROWID
        """,
    ),
    # 3: stream transformation's alias. A replaced stream keeps its events (still in the
    # log) but takes no appends; its reads follow replaced_by, which never names a stream
    # that is itself replaced (the switch re-points older aliases), so one hop suffices.
    (
        "ALTER TABLE streams ADD COLUMN replaced_by TEXT",
        "CREATE INDEX streams_replaced_by ON streams (replaced_by) WHERE replaced_by IS NOT NULL",
    ),
    # 4: the outbox (`_outbox`): messages committed by units of work, in commit order.
    (
        """
        CREATE TABLE outbox (
            position INTEGER PRIMARY KEY AUTOINCREMENT,
            message_id BLOB NOT NULL,
            destination TEXT NOT NULL,
            key TEXT,
            payload BLOB NOT NULL,
            headers BLOB NOT NULL,
            recorded_at INTEGER NOT NULL  -- microseconds since the Unix epoch, UTC
        )
        """,
        "CREATE INDEX outbox_by_destination ON outbox (destination, position)",
    ),
    # 5: per-subject data keys for crypto-shredding (`_keys`). Rows are deleted: forgetting
    # a subject deletes its keys, which is what makes its encrypted fields unreadable.
    (
        """
        CREATE TABLE eventfold_subject_keys (
            key_id BLOB PRIMARY KEY,
            subject TEXT NOT NULL,
            material BLOB NOT NULL,
            created_us INTEGER NOT NULL  -- microseconds since the Unix epoch, UTC
        )
        """,
        "CREATE INDEX eventfold_subject_keys_by_subject "
        "ON eventfold_subject_keys (subject, created_us)",
    ),
)
"""Migration N is ``MIGRATIONS[N - 1]``: statements applied in one transaction."""

MIGRATIONS_TABLE = "eventfold_migrations"


def schema_number(conn: sqlite3.Connection, table: str = MIGRATIONS_TABLE) -> int:
    """The highest migration recorded in ``table`` (0 for a new file)."""
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    if found is None:
        return 0
    number: int = conn.execute(f"SELECT coalesce(max(number), 0) FROM {table}").fetchone()[0]
    return number


def apply_migrations(
    conn: sqlite3.Connection, migrations: Sequence[Sequence[str]], table: str
) -> int:
    """Apply the ``migrations`` not yet recorded in ``table``; return the number reached.

    Several processes may open one file at once, so outside a transaction the work runs
    in a write transaction of its own (`_tx.transaction`: the write lock) and re-reads
    the applied number once it holds it; inside the caller's transaction it becomes part
    of that one. A database migrated further than this code knows raises `SchemaTooNew`.
    """
    known = len(migrations)
    found = schema_number(conn, table)
    if found > known:
        raise SchemaTooNew(found, known)
    if found == known:
        return found
    own = transaction(conn) if not conn.in_transaction else contextlib.nullcontext()
    with own:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} "
            "(number INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
        )
        found = schema_number(conn, table)
        if found > known:
            raise SchemaTooNew(found, known)
        for number in range(found + 1, known + 1):
            for statement in migrations[number - 1]:
                conn.execute(statement)
            conn.execute(
                f"INSERT INTO {table} (number, applied_at) VALUES (?, ?)",
                (number, time.time_ns() // 1000),
            )
    return known


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the store's tables up to date; return the migration number reached."""
    return apply_migrations(conn, MIGRATIONS, MIGRATIONS_TABLE)


# -- writing -------------------------------------------------------------------------

_LAST_POSITION = "coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)"
# A group's first statement: the log's last position (events are never deleted, so the
# AUTOINCREMENT sequence is the highest position) and its streams' versions. Rows with a
# NULL stream id carry the position.
# The same row says whether the stream was replaced (the append is refused), at no cost.
BATCH_START_ONE = (
    f"SELECT {_LAST_POSITION}, s.version, s.replaced_by FROM (SELECT 1) "
    "LEFT JOIN streams s ON s.stream_id = ?"
)
BATCH_START_IN = (
    f"SELECT NULL, {_LAST_POSITION}, NULL UNION ALL "
    "SELECT stream_id, version, replaced_by FROM streams WHERE stream_id IN ({marks})"
)
BATCH_START_JSON = (
    f"SELECT NULL, {_LAST_POSITION}, NULL UNION ALL "
    "SELECT stream_id, version, replaced_by FROM streams "
    "WHERE stream_id IN (SELECT value FROM json_each(?))"
)
# The stream a read of :sid goes to: its replacement, if a transformation replaced it.
_FOLLOW = "coalesce((SELECT replaced_by FROM streams WHERE stream_id = :sid), :sid)"
STREAM_VERSION = f"SELECT version FROM streams WHERE stream_id = {_FOLLOW}"
STREAM_INFO = "SELECT version, replaced_by FROM streams WHERE stream_id = ?"
# The switch of a transformation, in one transaction: the source must still be at the
# version copied and not replaced, the target at the version written and not replaced.
REPLACE_STREAM = """UPDATE streams SET replaced_by = :target
    WHERE stream_id = :source AND version = :version AND replaced_by IS NULL
      AND coalesce((SELECT version FROM streams WHERE stream_id = :target), 0) = :target_version
      AND NOT EXISTS (SELECT 1 FROM streams
                      WHERE stream_id = :target AND replaced_by IS NOT NULL)"""
# Aliases to the source now lead to the target (keeps every alias one hop long).
REPOINT_ALIASES = "UPDATE streams SET replaced_by = :target WHERE replaced_by = :source"
LAST_VERSION = "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = ?"
# Positions are given, not left to AUTOINCREMENT: the writer holds the write lock and
# computes them from the group's starting position, so no query is needed to learn them
# (the primary key still refuses any position already taken).
INSERT_EVENTS_AT = (
    "INSERT INTO events (position, event_id, stream_id, version, type, schema_version, data, "
    "metadata, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
UPSERT_STREAM = (
    "INSERT INTO streams (stream_id, version, category) VALUES (?, ?, ?) "
    "ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version"
)
MULTI_ROW_MAX = 64
"""Most rows in one multi-row INSERT (a group writes its rows in a few such statements:
each statement is one step, so the writer thread asks for the GIL a few times per group
instead of twice per row)."""


@lru_cache(maxsize=8)
def insert_events_sql(rows: int) -> str:
    """INSERT_EVENTS_AT for ``rows`` rows in one statement."""
    head, _, marks = INSERT_EVENTS_AT.partition(" VALUES ")
    return f"{head} VALUES {', '.join([marks] * rows)}"


@lru_cache(maxsize=8)
def upsert_streams_sql(rows: int) -> str:
    """UPSERT_STREAM for ``rows`` streams in one statement."""
    head, _, rest = UPSERT_STREAM.partition(" VALUES ")
    marks, _, tail = rest.partition(" ON CONFLICT")
    return f"{head} VALUES {', '.join([marks] * rows)} ON CONFLICT{tail}"


ID_CHUNK = 250
"""Event ids looked up per query when checking for a retry."""


@lru_cache(maxsize=8)
def find_ids_sql(count: int) -> str:
    """Look up ``count`` event ids in one stream (only the number of ``?`` varies)."""
    marks = ", ".join("?" * count)
    return (
        "SELECT event_id, version, type, data, position FROM events "
        f"WHERE stream_id = ? AND event_id IN ({marks})"
    )


# -- reading -------------------------------------------------------------------------

# Every read selects the columns in `eventfold._codec.Row` order (tx is always 0 here, the
# position is the sequence), so cursor rows go straight into `Codec.decode_rows`.
_ROW = (
    "SELECT event_id, stream_id, version, type, schema_version, data, metadata, "
    "recorded_at, 0, position FROM events "
)
READ_ALL = _ROW + "WHERE position > ? ORDER BY position LIMIT ?"
# :types and :categories are JSON arrays of type names and categories, or NULL for no filter. A
# category is the stream id's prefix before its first '-' (instr/substr, not LIKE, whose
# '_' and '%' are wildcards).
READ_ALL_FILTERED = (
    _ROW
    + """WHERE position > :after
    AND (:types IS NULL OR type IN (SELECT value FROM json_each(:types)))
    AND (:categories IS NULL OR iif(instr(stream_id, '-') > 0,
                           substr(stream_id, 1, instr(stream_id, '-') - 1),
                           stream_id) IN (SELECT value FROM json_each(:categories)))
    ORDER BY position LIMIT :limit"""
)
READ_STREAM_FORWARDS = (
    _ROW + "WHERE stream_id = :sid AND version >= :version ORDER BY version LIMIT :limit"
)
READ_STREAM_BACKWARDS = (
    _ROW + "WHERE stream_id = :sid AND version <= :version ORDER BY version DESC LIMIT :limit"
)
# The first page of a read that follows a replaced stream's alias (the later pages read
# the stream the first one found, by id).
FOLLOW_FORWARDS = READ_STREAM_FORWARDS.replace("stream_id = :sid", f"stream_id = {_FOLLOW}")
FOLLOW_BACKWARDS = READ_STREAM_BACKWARDS.replace("stream_id = :sid", f"stream_id = {_FOLLOW}")
HEAD = "SELECT coalesce(max(position), 0) FROM events"
STREAMS = (
    "SELECT stream_id, version, replaced_by FROM streams WHERE stream_id > ? "
    "ORDER BY stream_id LIMIT ?"
)
STREAMS_IN_CATEGORY = (
    "SELECT stream_id, version, replaced_by FROM streams WHERE category = ? AND stream_id > ? "
    "ORDER BY stream_id LIMIT ?"
)


@lru_cache(maxsize=8)
def find_events_sql(count: int) -> str:
    """Read the events of one stream with ``count`` given ids, in stream order (following
    a replaced stream's alias); its parameters come from `find_events_params`."""
    marks = ", ".join(f":e{n}" for n in range(count))
    return _ROW + f"WHERE stream_id = {_FOLLOW} AND event_id IN ({marks}) ORDER BY version"


def find_events_params(stream_id: str, event_ids: Sequence[bytes]) -> dict[str, Any]:
    """The parameters of `find_events_sql` for ``len(event_ids)`` ids."""
    params: dict[str, Any] = {f"e{n}": event_id for n, event_id in enumerate(event_ids)}
    params["sid"] = stream_id
    return params


SAVE_SNAPSHOT = (
    "INSERT OR REPLACE INTO snapshots (stream_id, state_type, version, schema_version, data, "
    "event_id, recorded_at, taken_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
LOAD_SNAPSHOT = """SELECT stream_id, state_type, version, schema_version, data, event_id,
    recorded_at, taken_at FROM snapshots
    WHERE stream_id = :sid AND state_type = :state_type
      AND (:max_version IS NULL OR version <= :max_version)
      AND (:max_recorded IS NULL OR recorded_at <= :max_recorded)
    ORDER BY version DESC LIMIT 1"""

# A handler's load, in two short queries. The first always returns one row: the stream
# the load reads (its replacement, if a transformation replaced it), the newest snapshot's
# columns within the bounds (NULLs when there is none), and the id of the event stored at
# the snapshot's version in the stream read: the snapshot is used only if it is its own.
LOAD_START = f"""SELECT t.sid, s.stream_id, s.state_type, s.version, s.schema_version, s.data,
    s.event_id, s.recorded_at, s.taken_at,
    (SELECT event_id FROM events WHERE stream_id = t.sid AND version = s.version)
    FROM (SELECT {_FOLLOW} AS sid) t
    LEFT JOIN (SELECT * FROM snapshots
        WHERE stream_id = {_FOLLOW} AND state_type = :state_type
          AND (:max_version IS NULL OR version <= :max_version)
          AND (:max_recorded IS NULL OR recorded_at <= :max_recorded)
        ORDER BY version DESC LIMIT 1) s ON 1"""


def snapshot_bounds(
    stream_id: str, state_type: str, max_version: int | None, max_recorded_us: int | None
) -> dict[str, Any]:
    """The parameters of `LOAD_SNAPSHOT` and `LOAD_START` (None: no bound)."""
    return {
        "sid": stream_id,
        "state_type": state_type,
        "max_version": max_version,
        "max_recorded": max_recorded_us,
    }


# Then the events after the snapshot, with only what a fold reads: each column more costs
# a Python object per row, so the recorded time is read only for a load bounded by time.
LOAD_EVENTS = """SELECT version, type, schema_version, data, 0 FROM events
    WHERE stream_id = ? AND version >= ? AND version <= ? ORDER BY version LIMIT ?"""
LOAD_EVENTS_TIMED = LOAD_EVENTS.replace("data, 0", "data, recorded_at")
# With privacy enabled, one more column: a sealed row's event id and metadata, which
# opening it needs (`Codec.decode_loaded`); NULL for the others.
# (`||` makes text of the two blobs; the cast gives back their exact bytes).
_SEALED = """, CASE WHEN instr(metadata, CAST('"$personal"' AS BLOB))
    THEN CAST(event_id || metadata AS BLOB) END FROM events"""
LOAD_SEALED = LOAD_EVENTS.replace(" FROM events", _SEALED)
LOAD_SEALED_TIMED = LOAD_EVENTS_TIMED.replace(" FROM events", _SEALED)

COUNTS = "SELECT (SELECT count(*) FROM streams), (SELECT count(*) FROM events)"
