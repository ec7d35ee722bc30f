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

`attach_inline` first folds the events already in the log into the projection (from its
checkpoint), with appends held back meanwhile, then installs it: no append can fall
between the catch-up and the first inline one. The projection's version is made the one
readers read, and its checkpoint moves with every group, so `wait_for`, lag and
`DocumentView` work as for an async projection. The checkpoint is marked ``inline``
(`PartitionState.INLINE`): status shows the projection as inline, and a daemon given it
stops it with a clear error instead of applying its events a second time.
"""

from __future__ import annotations

from asyncio import events as asyncio_events
from collections.abc import Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from ..errors import ConfigurationError
from ..events import RecordedEvent
from ..position import Position
from ..store.protocol import EventStore
from .definition import ProjectionBase
from .errors import InvalidProjection
from .store import ReadModelTransaction, VersionState

if TYPE_CHECKING:
    import sqlite3

__all__ = ["attach_inline", "detach_inline"]

_CATCH_UP_PAGE = 1000


async def attach_inline(store: EventStore, projections: Sequence[ProjectionBase]) -> None:
    """Run ``projections`` inline in every later append to ``store`` (a SQLite or
    PostgreSQL store).

    Folds the log's earlier events in first (see the module docstring). Attaching again
    replaces the set.
    """
    if store.backend not in ("sqlite", "postgresql"):
        raise ConfigurationError(
            f"inline projections run in the append's transaction on SQLite and PostgreSQL; "
            f"this store is {store.backend!r}: run the projection in a ProjectionDaemon and "
            "read with wait_for(position) instead"
        )
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
    if store.backend == "postgresql":
        await _attach_postgres(store, projections)
        return
    hook = _Inline(store, list(projections))
    writer = store._writer  # type: ignore[attr-defined]
    assert writer is not None

    def install(conn: sqlite3.Connection) -> None:
        from ._sqlite_schema import ensure_schema_sync

        ensure_schema_sync(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for p in projections:
                hook.prepare(conn, p)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        writer.group.inline = hook

    await store.on_writer(install)  # type: ignore[attr-defined]


async def _attach_postgres(store: Any, projections: Sequence[ProjectionBase]) -> None:
    from ._postgres_inline import PostgresInline

    hook = PostgresInline(store, projections)
    previous, store._inline = store._inline, hook  # later appends wait for hook.ready
    try:
        await store._appends.drain()  # the appends submitted before: caught up below
        await hook.catch_up()
    except BaseException:
        store._inline = previous
        raise
    finally:
        hook.ready.set()


async def detach_inline(store: EventStore) -> None:
    """Stop running inline projections in ``store``'s appends."""
    if store.backend == "postgresql":
        store._inline = None  # type: ignore[attr-defined]
        await store._appends.drain()  # type: ignore[attr-defined]
        return
    writer = getattr(store, "_writer", None)
    if writer is not None:

        def remove(conn: sqlite3.Connection) -> None:
            writer.group.inline = None

        await store.on_writer(remove)  # type: ignore[attr-defined]


class _Inline:
    """The hook the SQLite group writer calls with each group's (or append's) rows."""

    def __init__(self, store: Any, projections: list[ProjectionBase]) -> None:
        self._codec = store.codec
        self._projections = projections

    def prepare(self, conn: sqlite3.Connection, p: ProjectionBase) -> None:
        """Make ``p``'s version active and fold the log's events after its checkpoint."""
        from ..store import _sqlite_schema as events_sql
        from . import _sqlite_sync as rm

        record = rm.get_version_sync(conn, p.name, p.version)
        if record is None:
            rm.set_version_sync(conn, p.name, p.version, VersionState.BUILDING, expected=None)
            tx = _SyncTransaction(conn, p)
            _run(p, p.run_setup(tx.typed()))
            tx.flush()
        if rm.active_version_sync(conn, p.name) != p.version:
            rm.activate_sync(conn, p.name, p.version)
        row = rm.get_checkpoint_sync(conn, p.name, p.version, 0)
        seq = 0 if row is None else row.position.seq
        while True:
            rows = conn.execute(events_sql.READ_ALL, (seq, _CATCH_UP_PAGE)).fetchall()
            if not rows:
                break
            events = [e for e in self._codec.decode_rows(rows) if p.handles(e)]
            if events:
                _apply(conn, p, events)
            seq = rows[-1][9]
        # Written even when nothing was read: the row marks the projection as inline.
        rm.put_inline_checkpoint_sync(conn, p.name, p.version, Position(0, seq))

    def __call__(self, cur: sqlite3.Cursor, rows: list[tuple[Any, ...]]) -> None:
        from . import _sqlite_sync as rm

        conn = cur.connection
        events = self._codec.decode_rows(
            [(r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], 0, r[0]) for r in rows]
        )
        last = Position(0, rows[-1][0])
        for p in self._projections:
            mine = [e for e in events if p.handles(e)]
            if mine:
                _apply(conn, p, mine)
            rm.put_inline_checkpoint_sync(conn, p.name, p.version, last)


def _apply(conn: sqlite3.Connection, p: ProjectionBase, events: list[RecordedEvent]) -> None:
    tx = _SyncTransaction(conn, p)
    _run(p, p.apply(events, tx.typed()))
    tx.flush()


class _Awaited(BaseException):
    """Raised by `_NoLoop` out of a handler; a BaseException so no handler wrapper keeps it."""


class _NoLoop:
    """Stands in for the running loop while an inline SQLite handler runs.

    The group runs on the event loop's thread or on the writer's thread. Without a stand-in,
    a handler that awaits real I/O would suspend on the first and find no loop on the
    second, so the same mistake would surface as two different errors depending on where
    the group happened to run. With it, both threads see one loop that refuses everything.
    """

    def __getattr__(self, name: str) -> Any:
        raise _Awaited(name)


_NO_LOOP = _NoLoop()


def _run(p: ProjectionBase, coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that only awaits `_SyncTransaction` (which never suspends)."""
    outer = asyncio_events._get_running_loop()
    asyncio_events._set_running_loop(cast(Any, _NO_LOOP))
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    except _Awaited:
        pass
    finally:
        asyncio_events._set_running_loop(outer)
    coro.close()
    raise InvalidProjection(
        f"inline projection {p.name!r} awaited something other than its transaction; an "
        "inline handler runs inside the append and may only use tx (no other I/O)"
    )


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
