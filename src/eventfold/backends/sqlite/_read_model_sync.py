"""Synchronous read-model writes on one SQLite connection (the store's writer).

Each function runs its statements on ``conn`` inside whatever transaction the caller
holds: the SQLite read-model store's commit, or an append's own transaction on the
writer's thread (inline projections). None of them begins or commits. The
compare-and-set writes raise `CheckpointConflict`; the caller rolls back.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..._position import Position
from ...errors import CheckpointConflict
from ...store._read_model_rows import checkpoint_of, ordered, parked_row, version_of
from ...store.ports import (
    Checkpoint,
    ParkedEvent,
    PartitionState,
    VersionRecord,
    VersionState,
    now_us,
)
from . import _read_model_schema as sql

__all__ = [
    "activate_sync",
    "active_version_sync",
    "apply_documents_sync",
    "drop_sync",
    "get_checkpoint_sync",
    "get_version_sync",
    "load_documents_sync",
    "park_sync",
    "set_checkpoint_sync",
    "set_state_sync",
    "set_version_sync",
    "unpark_sync",
]


def documents_query(name: str, version: int, ids: Sequence[str]) -> tuple[str, tuple[Any, ...]]:
    """The query (and its parameters) that loads these documents."""
    return sql.LOAD_DOCUMENTS, (name, version, json.dumps(list(ids)))


# -- documents -----------------------------------------------------------------------


def load_documents_sync(
    conn: sqlite3.Connection, name: str, version: int, ids: Sequence[str]
) -> dict[str, bytes]:
    """The stored documents of ``name`` v``version`` with these ids (missing ones are
    left out), as ``conn`` sees them (including its own transaction's writes)."""
    if not ids:
        return {}
    query, params = documents_query(name, version, ids)
    return ordered(conn.execute(query, params).fetchall(), ids)


def apply_documents_sync(
    conn: sqlite3.Connection,
    name: str,
    version: int,
    puts: Mapping[str, bytes],
    deletes: Iterable[str] = (),
) -> None:
    """Insert or replace ``puts`` (id to JSON bytes) and delete ``deletes`` (missing ones
    are not an error) in the caller's transaction."""
    if puts:
        conn.executemany(
            sql.PUT_DOCUMENT, [(name, version, doc_id, data) for doc_id, data in puts.items()]
        )
    gone = [(name, version, doc_id) for doc_id in deletes]
    if gone:
        conn.executemany(sql.DELETE_DOCUMENT, gone)


# -- checkpoints ---------------------------------------------------------------------


def get_checkpoint_sync(
    conn: sqlite3.Connection, name: str, version: int, partition: int
) -> Checkpoint | None:
    """The partition's checkpoint row, or None."""
    row = conn.execute(sql.GET_CHECKPOINT, (name, version, partition)).fetchone()
    return None if row is None else checkpoint_of(row)


def set_checkpoint_sync(
    conn: sqlite3.Connection,
    name: str,
    version: int,
    partition: int,
    position: Position,
    *,
    expected: Position | None,
    now: int | None = None,
) -> None:
    """Move the checkpoint to ``position`` if it is at ``expected`` (None: no row yet),
    resetting its state to running; otherwise raise `CheckpointConflict`."""
    stamp = now_us() if now is None else now
    if expected is None:
        cur = conn.execute(
            sql.INSERT_CHECKPOINT, (name, version, partition, position.tx, position.seq, stamp)
        )
    else:
        cur = conn.execute(
            sql.MOVE_CHECKPOINT,
            (position.tx, position.seq, stamp, name, version, partition, expected.tx, expected.seq),
        )
    if cur.rowcount != 1:
        row = get_checkpoint_sync(conn, name, version, partition)
        actual = None if row is None else row.position
        raise CheckpointConflict(name, version, partition, expected=expected, actual=actual)


def put_inline_checkpoint_sync(
    conn: sqlite3.Connection, name: str, version: int, position: Position
) -> None:
    """Move an inline projection's checkpoint (partition 0) to ``position``, marked inline."""
    conn.execute(sql.PUT_INLINE_CHECKPOINT, (name, version, position.tx, position.seq, now_us()))


def set_state_sync(
    conn: sqlite3.Connection,
    name: str,
    version: int,
    partition: int,
    state: PartitionState,
    error: str | None,
    *,
    now: int | None = None,
) -> None:
    """Record a partition's state (creating its row at `START` if it has none)."""
    stamp = now_us() if now is None else now
    conn.execute(
        sql.SET_STATE, (name, version, partition, PartitionState(state).value, error, stamp)
    )


# -- parked events -------------------------------------------------------------------


def park_sync(conn: sqlite3.Connection, event: ParkedEvent) -> None:
    """Set an event aside, replacing an earlier parking of the same position."""
    conn.execute(sql.PARK, parked_row(event))


def unpark_sync(conn: sqlite3.Connection, name: str, version: int, position: Position) -> None:
    """Remove a parked event (missing is not an error)."""
    conn.execute(sql.UNPARK, (name, version, position.tx, position.seq))


# -- versions ------------------------------------------------------------------------


def get_version_sync(conn: sqlite3.Connection, name: str, version: int) -> VersionRecord | None:
    """The version's record, or None."""
    row = conn.execute(sql.GET_VERSION, (name, version)).fetchone()
    return None if row is None else version_of(row)


def active_version_sync(conn: sqlite3.Connection, name: str) -> int | None:
    """The version readers read, or None."""
    row = conn.execute(sql.ACTIVE, (name,)).fetchone()
    return None if row is None else int(row[0])


def set_version_sync(
    conn: sqlite3.Connection,
    name: str,
    version: int,
    state: VersionState,
    *,
    expected: VersionState | None,
    now: int | None = None,
) -> None:
    """Set a version's state if it is still ``expected`` (None: no record yet);
    otherwise raise `CheckpointConflict` (with partition None)."""
    stamp = now_us() if now is None else now
    value = VersionState(state).value
    if expected is None:
        cur = conn.execute(sql.INSERT_VERSION, (name, version, value, stamp))
    else:
        cur = conn.execute(
            sql.CHANGE_VERSION, (value, stamp, name, version, VersionState(expected).value)
        )
    if cur.rowcount != 1:
        record = get_version_sync(conn, name, version)
        actual = None if record is None else record.state
        raise CheckpointConflict(name, version, None, expected=expected, actual=actual)


def activate_sync(
    conn: sqlite3.Connection, name: str, version: int, *, now: int | None = None
) -> int | None:
    """Point readers at ``version``, retire the version they read before (if it has a
    record) and return it."""
    stamp = now_us() if now is None else now
    previous = active_version_sync(conn, name)
    if previous is not None and previous != version:
        conn.execute(sql.RETIRE_VERSION, (stamp, name, previous))
    conn.execute(sql.PUT_VERSION, (name, version, VersionState.ACTIVE.value, stamp))
    conn.execute(sql.SET_ACTIVE, (name, version))
    return previous


def drop_sync(conn: sqlite3.Connection, name: str, version: int) -> None:
    """Delete eventfold's rows of one version: documents, checkpoints, parked events,
    its record, and the readers' pointer if it pointed there (a SQL read model's own
    tables are its drop hook's to remove)."""
    for statement in sql.DROP:
        conn.execute(statement, (name, version))
