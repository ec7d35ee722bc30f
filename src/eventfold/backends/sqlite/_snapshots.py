"""Snapshots in the SQLite store's file, written by the store's writer thread."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from ...store._common import bounded
from ...store.ports import Snapshot
from . import _schema as sql
from ._tx import transaction

if TYPE_CHECKING:
    from ._store import SQLiteStore

__all__ = ["SQLiteSnapshotStore"]


class SQLiteSnapshotStore:
    """The `SnapshotStore` of a `SQLiteStore`."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        row = (
            snapshot.stream_id,
            snapshot.state_type,
            snapshot.version,
            snapshot.schema_version,
            snapshot.data,
            snapshot.event_id,
            snapshot.recorded_us,
            snapshot.taken_us,
        )

        def save(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute(sql.SAVE_SNAPSHOT, row)

        await self._store.on_writer(save)

    async def load_snapshot(
        self,
        stream_id: str,
        state_type: str,
        *,
        max_version: int | None = None,
        max_recorded_us: int | None = None,
    ) -> Snapshot | None:
        bounds = sql.snapshot_bounds(
            stream_id, state_type, bounded(max_version), bounded(max_recorded_us)
        )
        rows = await self._store.fetch(sql.LOAD_SNAPSHOT, bounds)
        return Snapshot(*rows[0]) if rows else None
