"""Inline projections: read models written inside the append's own transaction.

::

    await attach_inline(store, [summary])
    await store.append("order-1", [OrderPlaced(...)], expected_version=NO_STREAM)
    # the summary document of order-1 is already there, committed with the event

When the append returns, the projection has applied its events; if a handler raises,
that append fails with `HandlerFailed` and nothing of it is stored (the other appends
of the same group commit). Works on SQLite and PostgreSQL stores.

On SQLite the handlers run on the writer connection inside the group's transaction, so
they must be quick and do no I/O of their own: a handler may only await its transaction
(``tx.get``/``put``/``delete``/``execute``/``write``); anything else is refused with
`InvalidProjection`. `DocumentProjection` evolvers are pure functions, which is exactly
what fits. On PostgreSQL they run in the append's transaction on its pooled connection
(`eventfold.projections._postgres_inline`); every process that appends must attach the
same inline projections, right after opening the store.

`attach_inline` registers the projections as one of the store's transaction participants
(`eventfold.store.TransactionHooks`, named `INLINE_PARTICIPANT`, running first). Adding
it folds the events already in the log into the projection (from its checkpoint), with
appends held back meanwhile, then installs it: no append can fall between the catch-up
and the first inline one. The projection's version is made the one
readers read, and its checkpoint moves with every group, so `wait_for`, lag and
`DocumentView` work as for an async projection. The checkpoint is marked ``inline``
(`PartitionState.INLINE`): status shows the projection as inline, and a daemon given it
stops it with a clear error instead of applying its events a second time.
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from .._coro import WouldSuspend, run_sync
from ..errors import InvalidProjection
from ..events import RecordedEvent
from ..position import START, Position
from ..store.ports import (
    HookOrder,
    HookTransaction,
    SupportsTransactionHooks,
    TransactionParticipant,
    capability,
)
from ..store.protocol import EventStore
from .definition import ProjectionBase
from .store import ReadModelTransaction, VersionState

if TYPE_CHECKING:
    import sqlite3

__all__ = ["INLINE_PARTICIPANT", "attach_inline", "detach_inline"]

INLINE_PARTICIPANT = "eventfold.inline-projections"
"""The name inline projections go by among a store's transaction participants."""

_CATCH_UP_PAGE = 1000
_NO_HOOKS = (
    "inline projections run in the append's transaction, on SQLite and PostgreSQL: run "
    "the projection in a ProjectionDaemon and read with wait_for(position) instead"
)


async def attach_inline(store: EventStore, projections: Sequence[ProjectionBase]) -> None:
    """Run ``projections`` inline in every later append to ``store`` (a SQLite or
    PostgreSQL store).

    Folds the log's earlier events in first (see the module docstring). Attaching again
    replaces the set.
    """
    hooks = capability(store, SupportsTransactionHooks, hint=_NO_HOOKS).transaction_hooks
    for p in projections:
        if p.partitions != 1:
            raise InvalidProjection(
                f"inline projection {p.name!r} has {p.partitions} partitions; an inline "
                "projection has one (it runs in the append itself)"
            )
        if p.depends_on:
            raise InvalidProjection(
                f"inline projection {p.name!r} depends on {list(p.depends_on)}; inline "
                "projections cannot wait for others"
            )
    participant: TransactionParticipant
    if store.backend == "postgresql":
        from ..store.postgres import PostgresStore
        from ._postgres_inline import PostgresInline

        assert isinstance(store, PostgresStore)
        participant = postgres = PostgresInline(INLINE_PARTICIPANT, store, projections)
        await postgres.prepare()
    else:
        participant = _SQLiteInline(list(projections))
    await hooks.add(participant)


async def detach_inline(store: EventStore) -> None:
    """Stop running inline projections in ``store``'s appends."""
    if isinstance(store, SupportsTransactionHooks):
        await store.transaction_hooks.remove(INLINE_PARTICIPANT)


class _SQLiteInline(TransactionParticipant):
    """Inline projections as a SQLite transaction participant: everything runs on the
    writer connection, synchronously (`_run`)."""

    name = INLINE_PARTICIPANT
    order = HookOrder.INLINE_PROJECTIONS

    def __init__(self, projections: list[ProjectionBase]) -> None:
        self._projections = projections

    async def attach(self, tx: HookTransaction) -> None:
        from ._sqlite_schema import ensure_schema_sync

        conn: sqlite3.Connection = tx.connection
        ensure_schema_sync(conn)
        for p in self._projections:
            await self._prepare(tx, conn, p)

    async def _prepare(
        self, tx: HookTransaction, conn: sqlite3.Connection, p: ProjectionBase
    ) -> None:
        """Make ``p``'s version active and fold the log's events after its checkpoint."""
        from . import _sqlite_sync as rm

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
        from . import _sqlite_sync as rm

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
        from ._sqlite_sync import apply_documents_sync

        pending, self._pending = self._pending, {}
        for (name, version), docs in pending.items():
            puts = {i: d for i, d in docs.items() if d is not None}
            gone = [i for i in docs if i not in puts]
            apply_documents_sync(self._conn, name, version, puts, gone)

    async def get_documents(self, name: str, version: int, ids: Sequence[str]) -> dict[str, bytes]:
        from ._sqlite_sync import load_documents_sync

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
