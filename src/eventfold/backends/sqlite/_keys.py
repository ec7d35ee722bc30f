"""Per-subject data keys in the SQLite store's file (`eventfold.store.SubjectKeys`).

The codec asks for keys while it decodes, on the event loop's thread or a reader thread,
in synchronous code; so these calls are synchronous, on a connection of their own (opened
on first use, closed with the store) that any thread may use, one call at a time. A call
is a local query, well under a millisecond, unless another connection holds the write
lock: an `add` or `forget` then waits up to the store's busy timeout. Callers cache.

The table comes with the store's migrations (number 5). Deleted keys are overwritten in
the file (``secure_delete``); copies of the file's pages made before (a backup, the WAL
until its next checkpoint) still hold them.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from ...errors import InvalidInput, StoreClosed, StoreReadOnly
from ...store._subject_keys import (
    check_key_ids,
    check_new_key,
    check_retry,
    check_subject,
    created_us,
)
from ._errors import driver_errors, is_driver_error, is_missing_table, translate
from ._tx import transaction
from ._unit_of_work import inside_unit_of

if TYPE_CHECKING:
    from ...store.ports import HookTransaction
    from ._store import SQLiteStore

__all__ = ["SQLiteSubjectKeys"]

_TABLE: Final = "eventfold_subject_keys"
_FIND_CHUNK: Final = 500
"""Ids looked up per query (SQLite binds at most 32766 parameters, older builds 999)."""

# A subject's keys are kept in strictly increasing created_us: a key stamped in the same
# microsecond as the last one, or after the clock stepped back, takes the next one.
_ADD = f"""INSERT INTO {_TABLE} (key_id, subject, material, created_us)
    VALUES (:key_id, :subject, :material, max(:now,
        coalesce((SELECT max(created_us) + 1 FROM {_TABLE} WHERE subject = :subject), 0)))
    ON CONFLICT (key_id) DO NOTHING"""
_ADD_IN = f"""INSERT INTO {_TABLE} (key_id, subject, material, created_us)
    SELECT ?, ?, ?, max(?,
        coalesce((SELECT max(created_us) + 1 FROM {_TABLE} WHERE subject = ?), 0))
    WHERE NOT EXISTS (SELECT 1 FROM events WHERE {{written}})
    ON CONFLICT (key_id) DO NOTHING"""
_KEY = f"SELECT subject, material FROM {_TABLE} WHERE key_id = ?"
_CURRENT = (
    f"SELECT key_id, material FROM {_TABLE} WHERE subject = ? "
    "ORDER BY created_us DESC, key_id DESC LIMIT 1"
)
_FORGET = f"DELETE FROM {_TABLE} WHERE subject = ?"


def _find_sql(count: int) -> str:
    return f"SELECT key_id, material FROM {_TABLE} WHERE key_id IN ({', '.join('?' * count)})"


class SQLiteSubjectKeys:
    """The `SubjectKeys` of a `SQLiteStore` (its ``subject_keys``).

    One connection of its own to the store's file (read-only for a read-only store),
    opened on first use and closed when the store closes; a lock lets one thread use it at
    a time. `add` and `forget` commit before they return. On a read-only store whose file
    has no key table, lookups find nothing.
    """

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        """The open connection (called holding the lock), or `StoreClosed`."""
        store = self._store
        if not store._open:
            raise StoreClosed(f"sqlite store {store.path!r}")
        if self._conn is None:
            conn = store._connect(reader=store.read_only)
            if not store.read_only:
                try:
                    with driver_errors(store.path):
                        conn.execute("PRAGMA secure_delete = ON")
                except BaseException:
                    conn.close()
                    raise
            self._conn = conn
        return self._conn

    def _check_writable(self, what: str) -> None:
        if self._store.read_only:
            raise StoreReadOnly(f"sqlite:///{self._store.path}")
        if inside_unit_of(self._store):
            # The unit holds the file's write lock until it ends: this would wait for it
            # for the busy timeout and fail.
            raise InvalidInput(
                f"{what} on the SQLite store of an open unit of work would wait for the "
                "unit to end; do it before the unit begins (or after it ends)"
            )
        self._store.free_writer_for(what)

    joins_appends = True
    """See `eventfold.store.SubjectKeys.joins_appends`."""

    def find(self, key_ids: Sequence[bytes]) -> dict[bytes, bytes]:
        ids = check_key_ids(key_ids)
        found: dict[bytes, bytes] = {}
        with self._lock:
            conn = self._connection()
            if not ids:
                return found
            try:
                for start in range(0, len(ids), _FIND_CHUNK):
                    chunk = ids[start : start + _FIND_CHUNK]
                    for key_id, material in conn.execute(_find_sql(len(chunk)), chunk):
                        found[bytes(key_id)] = bytes(material)
            except Exception as exc:
                if is_missing_table(exc, _TABLE):
                    return {}
                if not is_driver_error(exc):
                    raise
                raise translate(exc, self._store.path) from exc
        return found

    def current(self, subject: str) -> tuple[bytes, bytes] | None:
        check_subject(subject)
        with self._lock:
            conn = self._connection()
            try:
                row = conn.execute(_CURRENT, (subject,)).fetchone()
            except Exception as exc:
                if is_missing_table(exc, _TABLE):
                    return None
                if not is_driver_error(exc):
                    raise
                raise translate(exc, self._store.path) from exc
        return (bytes(row[0]), bytes(row[1])) if row is not None else None

    def add(self, key_id: bytes, subject: str, material: bytes) -> None:
        key, data = check_new_key(key_id, subject, material)
        params = {"key_id": key, "subject": subject, "material": data, "now": created_us()}
        with self._lock:
            self._check_writable("adding a subject key")
            conn = self._connection()
            guard = self._store._guard
            with driver_errors(self._store.path), transaction(conn):
                added = conn.execute(_ADD, params).rowcount == 1
                row = None if added else conn.execute(_KEY, (key,)).fetchone()
                if guard is not None:
                    guard()
        check_retry(key, subject, data, row)

    async def add_in(
        self,
        tx: HookTransaction,
        key_id: bytes,
        subject: str,
        material: bytes,
        written_with: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """`add` through an append's transaction (the writer connection, which holds the
        write lock already: no wait, inside a unit of work too)."""
        key, data = check_new_key(key_id, subject, material)
        pairs = list(written_with)[-_FIND_CHUNK // 2 :]
        written = " OR ".join(["(stream_id = ? AND event_id = ?)"] * len(pairs)) or "false"
        params: list[object] = [key, subject, data, created_us(), subject]
        for stream_id, event_id in pairs:
            params += [stream_id, event_id]
        await tx.execute(_ADD_IN.format(written=written), params)

    def forget(self, subject: str) -> int:
        check_subject(subject)
        with self._lock:
            self._check_writable("forgetting a subject")
            conn = self._connection()
            guard = self._store._guard
            with driver_errors(self._store.path), transaction(conn):
                count = conn.execute(_FORGET, (subject,)).rowcount
                if guard is not None:
                    guard()
        return count

    def close(self) -> None:
        """Close the connection (the store does, as it closes); the next use reopens it."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
