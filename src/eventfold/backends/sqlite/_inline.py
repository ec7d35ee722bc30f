"""Inline projections on SQLite: a transaction participant that runs on the writer
connection, synchronously, inside the group's transaction (see
`eventfold.projections.inline`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, cast

from ..._coro import WouldSuspend, run_sync
from ..._events import RecordedEvent
from ..._position import START, Position
from ...errors import InvalidProjection
from ...store.ports import (
    INLINE_PARTICIPANT,
    HookOrder,
    HookTransaction,
    ReadModelTransaction,
    TransactionParticipant,
    VersionState,
)
from ...store.ports import InlineProjection as ProjectionBase

__all__ = ["SQLiteInline"]

_CATCH_UP_PAGE = 1000


class SQLiteInline(TransactionParticipant):
    """Inline projections as a SQLite transaction participant: everything runs on the
    writer connection, synchronously (`_run`)."""

    name = INLINE_PARTICIPANT
    order = HookOrder.INLINE_PROJECTIONS

    def __init__(self, projections: list[ProjectionBase]) -> None:
        self._projections = projections

    async def attach(self, tx: HookTransaction) -> None:
        from ._read_model_schema import ensure_schema_sync

        conn: sqlite3.Connection = tx.connection
        ensure_schema_sync(conn)
        for p in self._projections:
            await self._prepare(tx, conn, p)

    async def _prepare(
        self, tx: HookTransaction, conn: sqlite3.Connection, p: ProjectionBase
    ) -> None:
        """Make ``p``'s version active and fold the log's events after its checkpoint."""
        from . import _read_model_sync as rm

        record = rm.get_version_sync(conn, p.name, p.version)
        if record is None:
            rm.set_version_sync(conn, p.name, p.version, VersionState.BUILDING, expected=None)
            models_tx = _SyncTransaction(conn, p)
            _run(p, p.run_setup(models_tx.typed()))
            models_tx.flush()
        if rm.active_version_sync(conn, p.name) != p.version:
            rm.activate_sync(conn, p.name, p.version)
        row = rm.get_checkpoint_sync(conn, p.name, p.version, 0)
        at: Position = START if row is None else Position(0, row.position.seq)
        while events := await tx.read_all(at, _CATCH_UP_PAGE):
            mine = [e for e in events if p.handles(e)]
            if mine:
                _apply(conn, p, mine)
            at = Position(0, events[-1].position.seq)
        # Written even when nothing was read: the row marks the projection as inline.
        rm.put_inline_checkpoint_sync(conn, p.name, p.version, at)

    async def apply(self, tx: HookTransaction, events: Sequence[RecordedEvent]) -> None:
        from . import _read_model_sync as rm

        conn: sqlite3.Connection = tx.connection
        last = events[-1].position
        for p in self._projections:
            mine = [e for e in events if p.handles(e)]
            if mine:
                _apply(conn, p, mine)
            rm.put_inline_checkpoint_sync(conn, p.name, p.version, last)


def _apply(conn: sqlite3.Connection, p: ProjectionBase, events: list[RecordedEvent]) -> None:
    models_tx = _SyncTransaction(conn, p)
    _run(p, p.apply(events, models_tx.typed()))
    models_tx.flush()


def _run(p: ProjectionBase, coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that only awaits `_SyncTransaction` (which never suspends)."""
    try:
        return run_sync(coro)
    except WouldSuspend:
        raise InvalidProjection(
            f"inline projection {p.name!r} awaited something other than its transaction; an "
            "inline handler runs inside the append and may only use tx (no other I/O)"
        ) from None


class _SyncTransaction:
    """A `ReadModelTransaction` on the writer connection, inside the caller's transaction.

    Its coroutines never suspend: each runs its statement and returns. Document puts and
    deletes wait until the next read or statement (or `flush`) and go in one statement
    per version, as on PostgreSQL.
    """

    def __init__(self, conn: sqlite3.Connection, p: ProjectionBase) -> None:
        self._conn = conn
        self._p = p
        self._pending: dict[tuple[str, int], dict[str, bytes | None]] = {}

    def typed(self) -> ReadModelTransaction:
        return cast(ReadModelTransaction, self)

    def flush(self) -> None:
        """Write the buffered document changes."""
        from ._read_model_sync import apply_documents_sync

        pending, self._pending = self._pending, {}
        for (name, version), docs in pending.items():
            puts = {i: d for i, d in docs.items() if d is not None}
            gone = [i for i in docs if i not in puts]
            apply_documents_sync(self._conn, name, version, puts, gone)

    async def get_documents(self, name: str, version: int, ids: Sequence[str]) -> dict[str, bytes]:
        from ._read_model_sync import load_documents_sync

        if self._pending:
            self.flush()
        return load_documents_sync(self._conn, name, version, ids)

    async def put_document(self, name: str, version: int, doc_id: str, data: bytes) -> None:
        self._pending.setdefault((name, version), {})[doc_id] = data

    async def delete_document(self, name: str, version: int, doc_id: str) -> None:
        self._pending.setdefault((name, version), {})[doc_id] = None

    async def execute(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        if self._pending:
            self.flush()
        return self._conn.execute(query, params).fetchall()

    async def write(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> None:
        if self._pending:
            self.flush()
        self._conn.execute(query, params)

    def __getattr__(self, name: str) -> Any:
        raise InvalidProjection(
            f"inline projection {self._p.name!r} called tx.{name}, which inline projections "
            "do not have (checkpoints and versions are eventfold's)"
        )
