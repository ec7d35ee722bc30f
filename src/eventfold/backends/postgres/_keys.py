"""Per-subject data keys in the PostgreSQL store's schema (`eventfold.store.SubjectKeys`).

The codec asks for keys while it decodes, in synchronous code, so these calls are
synchronous: each blocks the calling thread (on the event loop, the loop) for one round
trip to the server, whatever the number of ids, and the first also for connecting.
Callers cache what they get (`eventfold.privacy` does), so that a lookup is rare.

They run on a connection of their own (psycopg, autocommit, outside the store's pool),
opened on first use and closed with the store, one call at a time under a lock. Each
statement is bounded by `STATEMENT_TIMEOUT`; a connection the server dropped is replaced
once per call. The table comes with the store's migrations (number 6). Deleted keys stay
in the table's dead rows until ``VACUUM`` reclaims them (autovacuum does), and in WAL and
backups made before.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

import psycopg
from psycopg import sql

from ...errors import StoreClosed, StoreReadOnly
from ...store._subject_keys import (
    check_key_ids,
    check_new_key,
    check_retry,
    check_subject,
    created_us,
)
from ._errors import driver_errors, is_driver_error, is_missing_table, translate

if TYPE_CHECKING:
    from ...store.ports import HookTransaction
    from ._store import PostgresStore

__all__ = ["STATEMENT_TIMEOUT", "PostgresSubjectKeys"]

STATEMENT_TIMEOUT: Final = 5.0
"""Seconds one statement of the key connection may run before the server cancels it."""

_T = TypeVar("_T")


class _Raise:
    """`PostgresSubjectKeys._run`'s ``missing`` for writes: a missing table is an error."""


_RAISE: Final = _Raise()


class PostgresSubjectKeys:
    """The `SubjectKeys` of a `PostgresStore` (its ``subject_keys``).

    Blocking: every call waits for one round trip to the server on the calling thread
    (see the module's notes); cache what you look up. `add` and `forget` have committed
    when they return. On a read-only store the session is read-only, and a schema without
    the key table finds nothing.
    """

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        table = sql.Identifier(store.schema, "subject_keys")

        def render(text: str) -> bytes:
            return sql.SQL(text).format(table=table).as_bytes(None)

        # A subject's keys are kept in strictly increasing created_us: a key stamped in
        # the same microsecond as the last one, or after the clock stepped back, takes
        # the next one.
        self._add = render(
            """INSERT INTO {table} (key_id, subject, material, created_us)
            VALUES (%(key_id)s, %(subject)s, %(material)s, greatest(%(now)s, coalesce(
                (SELECT max(created_us) + 1 FROM {table} WHERE subject = %(subject)s), 0)))
            ON CONFLICT (key_id) DO NOTHING"""
        )
        events = sql.Identifier(store.schema, "events")
        self._add_in = (
            sql.SQL(
                """INSERT INTO {table} (key_id, subject, material, created_us)
            SELECT %s, %s, %s, greatest(%s, coalesce(
                (SELECT max(created_us) + 1 FROM {table} WHERE subject = %s), 0))
            WHERE NOT EXISTS (SELECT FROM {events} e, unnest(%s::text[], %s::uuid[])
                AS w (stream_id, event_id)
                WHERE e.stream_id = w.stream_id AND e.event_id = w.event_id)
            ON CONFLICT (key_id) DO NOTHING"""
            )
            .format(table=table, events=events)
            .as_string(None)
        )
        self._key = render("SELECT subject, material FROM {table} WHERE key_id = %s")
        self._find = render("SELECT key_id, material FROM {table} WHERE key_id = ANY(%s)")
        self._current = render(
            "SELECT key_id, material FROM {table} WHERE subject = %s "
            "ORDER BY created_us DESC, key_id DESC LIMIT 1"
        )
        self._forget = render("DELETE FROM {table} WHERE subject = %s")

    # -- the connection ---------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The open connection (called holding the lock), or `StoreClosed`."""
        store = self._store
        if store._pool is None:
            raise StoreClosed("postgresql store")
        conn = self._conn
        if conn is None or conn.closed:
            with driver_errors(store.where, connecting=True):
                conn = psycopg.connect(store._conninfo, **store._kwargs)
            try:
                with driver_errors(store.where):
                    conn.execute(
                        sql.SQL("SET statement_timeout = {}").format(
                            sql.Literal(round(STATEMENT_TIMEOUT * 1000))
                        )
                    )
                    if store.read_only:
                        conn.execute("SET default_transaction_read_only = on")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return conn

    def _run(
        self,
        work: Callable[[psycopg.Connection[tuple[Any, ...]]], _T],
        missing: _T | _Raise = _RAISE,
    ) -> _T:
        """``work`` on the connection, under the lock; once more on a new connection when
        the server dropped the first (a restart, a failover). Every statement here can run
        twice safely: `add` is idempotent, `forget` deletes what is left. ``missing`` is a
        lookup's answer when the schema has no key table (a read-only store's, before its
        migration); writes raise."""
        with self._lock:
            for attempt in range(2):
                conn = self._connection()
                try:
                    return work(conn)
                except Exception as exc:
                    if not is_driver_error(exc):
                        raise
                    if attempt == 0 and conn.broken:
                        self._drop()
                        continue
                    if is_missing_table(exc) and not isinstance(missing, _Raise):
                        return missing
                    raise translate(exc, self._store.where) from exc
            raise AssertionError("unreachable")  # pragma: no cover

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Close the connection (the store does, as it closes); the next use reopens it."""
        with self._lock:
            self._drop()

    def _check_writable(self) -> None:
        if self._store.read_only:
            raise StoreReadOnly(repr(self._store))

    # -- SubjectKeys ------------------------------------------------------------------

    joins_appends = False
    """See `eventfold.store.SubjectKeys.joins_appends`."""

    def find(self, key_ids: Sequence[bytes]) -> dict[bytes, bytes]:
        ids = check_key_ids(key_ids)

        def work(conn: psycopg.Connection[tuple[Any, ...]]) -> dict[bytes, bytes]:
            if not ids:
                return {}
            rows = conn.execute(self._find, (ids,)).fetchall()
            return {bytes(key_id): bytes(material) for key_id, material in rows}

        return self._run(work, {})

    def current(self, subject: str) -> tuple[bytes, bytes] | None:
        check_subject(subject)

        def work(conn: psycopg.Connection[tuple[Any, ...]]) -> tuple[bytes, bytes] | None:
            row = conn.execute(self._current, (subject,)).fetchone()
            return (bytes(row[0]), bytes(row[1])) if row is not None else None

        return self._run(work, None)

    def add(self, key_id: bytes, subject: str, material: bytes) -> None:
        key, data = check_new_key(key_id, subject, material)
        self._check_writable()
        params = {"key_id": key, "subject": subject, "material": data, "now": created_us()}

        def work(conn: psycopg.Connection[tuple[Any, ...]]) -> tuple[Any, ...] | None:
            if conn.execute(self._add, params).rowcount == 1:
                return None
            return conn.execute(self._key, (key,)).fetchone()

        row = self._run(work)
        check_retry(key, subject, data, row)

    async def add_in(
        self,
        tx: HookTransaction,
        key_id: bytes,
        subject: str,
        material: bytes,
        written_with: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """`add` through an append's transaction (its pooled connection, not this
        object's own: no blocking call, and no round trip of its own)."""
        key, data = check_new_key(key_id, subject, material)
        streams = [stream_id for stream_id, _ in written_with]
        ids = [uuid.UUID(bytes=event_id) for _, event_id in written_with]
        params = (key, subject, data, created_us(), subject, streams, ids)
        conn = tx.connection
        if isinstance(conn, psycopg.AsyncConnection):
            # Sent on the append's connection without waiting for its answer: in the
            # append's pipeline it costs no round trip of its own, and a failure fails
            # the transaction as it ends (the table name is qualified: no search path).
            await conn.execute(self._add_in, params)
        else:
            await tx.execute(self._add_in, params)

    def forget(self, subject: str) -> int:
        check_subject(subject)
        self._check_writable()

        def work(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
            return conn.execute(self._forget, (subject,)).rowcount

        return self._run(work)
