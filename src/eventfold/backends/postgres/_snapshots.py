"""Snapshots in the PostgreSQL store's schema, beside its events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ...store._common import bounded
from ...store.ports import Snapshot

if TYPE_CHECKING:
    from ._store import PostgresStore

__all__ = ["PostgresSnapshotStore"]

_NO_BOUND: Final = 2**63 - 1


class PostgresSnapshotStore:
    """The `SnapshotStore` of a `PostgresStore`."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot``, replacing one of the same stream, state type and version."""
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
        await self._store.fetch_rows(self._store.statements.save_snapshot, row)

    async def load_snapshot(
        self,
        stream_id: str,
        state_type: str,
        *,
        max_version: int | None = None,
        max_recorded_us: int | None = None,
    ) -> Snapshot | None:
        """The newest snapshot at or before the bounds, or None."""
        rows = await self._store.fetch_rows(
            self._store.statements.load_snapshot,
            {
                "sid": stream_id,
                "type": state_type,
                "version": _NO_BOUND if max_version is None else bounded(max_version),
                "recorded": _NO_BOUND if max_recorded_us is None else bounded(max_recorded_us),
            },
        )
        return Snapshot(*rows[0]) if rows else None
