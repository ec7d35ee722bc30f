"""Read models in the SQLite store's own file, written through its single writer.

``SQLiteReadModelStore(store)`` keeps documents, checkpoints, parked events and version
records in ``ef_*`` tables beside the events (`_read_model_schema`, a migration track of its
own, applied on first use). Every write goes through the event store's writer connection
(`SQLiteStore.on_writer`), so read models never fight the appends for the file's write
lock, and several processes may share one file.

A transaction has two modes:

- **Buffered** (documents, checkpoints, parking, versions): its writes are kept on the
  event loop's side in order, and its reads see them over the committed rows (as in
  `MemoryReadModelStore`). At commit all of them are applied in one hand-off to the
  writer's thread, in one write transaction (`_tx`), where every compare-and-set
  is checked again; a conflict there rolls the whole transaction back. A transaction
  that writes nothing never touches the writer.
- **On the writer** (from its first `execute`): a SQL read model's statements must run
  in order with the other writes and return their rows at once, so the transaction
  takes the writer for itself until it ends (`_read_model_session`): a job on the writer's
  thread begins a write transaction and parks, the writes buffered so far are applied,
  then the statement, and from then on every call runs in that transaction (writes that
  cannot fail are sent along with the next call). Statements run on the event loop's
  thread, on the writer's connection, as the store's short reads and idle appends do
  (keep them short); the commit goes back to the writer's thread. Meanwhile this store's
  appends wait (other processes wait for the write lock as usual), so keep such
  transactions short: one that leaves the writer idle for longer than the store's
  ``busy_timeout`` is rolled back, and one that waits for an append to the same store
  would wait for itself. A statement uses SQLite's ``?`` (or ``:name``) parameters, and
  must not begin or end transactions itself.

Committed reads run on the event loop's thread, one short autocommit query each (on the
store's writer connection when it is free, else a reader connection), and never wait for
the writer. A transaction that failed (a conflict, a statement error) keeps nothing: its
end raises the first error, even if the block swallowed it.

Its statements run on the writer connection through the synchronous helpers of
`_read_model_sync`, which inline projections use too.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

from ..._position import START, Position
from ...errors import CheckpointConflict, ConfigurationError, InvalidInput
from ...store._read_model_rows import (
    TransactionGuard,
    checkpoint_of,
    ordered,
    parked_of,
    summaries_of,
    version_of,
)
from ...store.ports import (
    Checkpoint,
    ParkedEvent,
    PartitionState,
    ProjectionSummary,
    VersionRecord,
    VersionState,
    now_us,
)
from . import _read_model_schema as sql
from ._errors import is_driver_error, statement_error
from ._read_model_schema import ensure_schema_sync
from ._read_model_session import WriterSession, rollback
from ._read_model_sync import (
    activate_sync,
    apply_documents_sync,
    documents_query,
    drop_sync,
    get_checkpoint_sync,
    get_version_sync,
    load_documents_sync,
    park_sync,
    set_checkpoint_sync,
    set_state_sync,
    set_version_sync,
    unpark_sync,
)
from ._store import SQLiteStore
from ._tx import transaction

__all__ = ["SQLiteReadModelStore", "SQLiteTransaction"]

_Slot = tuple[str, int]
_CpKey = tuple[str, int, int]
_Op = Callable[[sqlite3.Connection], object]
_T = TypeVar("_T")
_PAGE = 500


class SQLiteReadModelStore:
    """A `ReadModelStore` in the file of a `SQLiteStore`, written by its writer thread.

    The event store must be open while this one is used; the tables are created on
    first use (or by `ensure_schema`). `commits` counts committed transactions that
    wrote something.
    """

    backend = "sqlite"

    def __init__(self, store: SQLiteStore) -> None:
        if not isinstance(store, SQLiteStore):
            raise ConfigurationError(
                f"SQLiteReadModelStore needs a SQLiteStore, got {type(store).__name__}; use "
                "read_models_for(store) to pick the read-model store of any event store"
            )
        self.store = store
        self.commits = 0
        """Transactions committed that wrote something (for tests and metrics)."""
        self._ready = False

    def __repr__(self) -> str:
        return f"SQLiteReadModelStore({self.store.path!r})"

    async def ensure_schema(self) -> None:
        """Create or migrate the read-model tables (idempotent; safe from many processes)."""
        if not self._ready:
            await self.store.on_writer(ensure_schema_sync)
            self._ready = True

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SQLiteTransaction]:
        """A transaction whose writes apply together when the block ends without error."""
        await self.ensure_schema()
        tx = SQLiteTransaction(self)
        try:
            yield tx
        except BaseException:
            await tx._rollback()
            raise
        await tx._commit()

    # -- committed reads ---------------------------------------------------------------

    def _read(self, query: str, params: Sequence[Any]) -> list[Any]:
        return self.store.fetch_few(query, params)

    async def get_documents(self, name: str, version: int, ids: Sequence[str]) -> dict[str, bytes]:
        await self.ensure_schema()
        if not ids:
            return {}
        return ordered(self._read(*documents_query(name, version, ids)), ids)

    async def iter_documents(
        self, name: str, version: int, *, after: str | None = None, limit: int | None = None
    ) -> AsyncIterator[tuple[str, bytes]]:
        if limit is not None and (isinstance(limit, bool) or limit < 0):
            raise InvalidInput(f"limit must be None or an int >= 0, got {limit!r}")
        await self.ensure_schema()
        remaining = limit
        key = after
        while remaining is None or remaining > 0:
            n = _PAGE if remaining is None else min(_PAGE, remaining)
            if key is None:
                rows = self.store.fetch_rows(sql.ITER_DOCUMENTS_FIRST, (name, version, n))
            else:
                rows = self.store.fetch_rows(sql.ITER_DOCUMENTS, (name, version, key, n))
            for doc_id, data in rows:
                yield doc_id, data
            if len(rows) < n:
                return
            if remaining is not None:
                remaining -= n
            key = rows[-1][0]
            await asyncio.sleep(0)

    async def checkpoints(self, name: str, version: int) -> list[Checkpoint]:
        await self.ensure_schema()
        return [checkpoint_of(row) for row in self._read(sql.CHECKPOINTS, (name, version))]

    async def active_version(self, name: str) -> int | None:
        await self.ensure_schema()
        rows = self._read(sql.ACTIVE, (name,))
        return int(rows[0][0]) if rows else None

    async def versions(self, name: str | None = None) -> list[VersionRecord]:
        await self.ensure_schema()
        rows = (
            self._read(sql.VERSIONS, ()) if name is None else self._read(sql.VERSIONS_OF, (name,))
        )
        return [version_of(row) for row in rows]

    async def parked(self, name: str, version: int) -> list[ParkedEvent]:
        await self.ensure_schema()
        return [parked_of(row) for row in self._read(sql.PARKED, (name, version))]

    async def summaries(self, slots: Sequence[tuple[str, int]]) -> list[ProjectionSummary]:
        """Many versions' checkpoints, parked counts and records in one query (a few
        hundred slots each) (`SupportsProjectionSummaries`)."""
        await self.ensure_schema()
        found: list[ProjectionSummary] = []
        chunk = sql.SUMMARIES_CHUNK
        for at in range(0, len(slots), chunk):
            part = list(slots[at : at + chunk])
            params = [x for i, (n, v) in enumerate(part, 1) for x in (i, n, v)]
            found.extend(summaries_of(part, self._read(sql.summaries_query(len(part)), params)))
        return found


class SQLiteTransaction(TransactionGuard):
    """A `ReadModelTransaction` of a `SQLiteReadModelStore` (see the module docstring)."""

    def __init__(self, models: SQLiteReadModelStore) -> None:
        self._models = models
        self._closed = False
        self._failed: BaseException | None = None
        self._ops: list[_Op] = []
        """Writes not yet applied, in order."""
        self._session: WriterSession | None = None
        # What this transaction wrote, over the committed rows (buffered mode only).
        self._dropped: set[_Slot] = set()
        self._docs: dict[_Slot, dict[str, bytes | None]] = {}
        self._checkpoints: dict[_CpKey, Checkpoint | None] = {}
        self._versions: dict[_Slot, VersionRecord | None] = {}
        self._active: dict[str, int | None] = {}

    def _read(self, query: str, params: Sequence[Any]) -> list[Any]:
        return self._models._read(query, params)

    def _write(self, op: _Op) -> None:
        self._ops.append(op)

    async def _on_writer(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """In the writer session: apply the pending writes, then ``work``."""
        session = self._session
        assert session is not None
        ops, self._ops = self._ops, []

        def run(conn: sqlite3.Connection) -> _T:
            for op in ops:
                op(conn)
            return work(conn)

        try:
            return await session.call(run)
        except BaseException as exc:
            self._fail(exc)
            raise

    # -- documents ---------------------------------------------------------------------

    async def get_documents(self, name: str, version: int, ids: Sequence[str]) -> dict[str, bytes]:
        self._check()
        if self._session is not None:
            return await self._on_writer(
                partial(load_documents_sync, name=name, version=version, ids=ids)
            )
        slot = (name, version)
        overlay = self._docs.get(slot, {})
        missing = [i for i in ids if i not in overlay]
        committed: dict[str, bytes] = {}
        if missing and slot not in self._dropped:
            committed = dict(self._read(*documents_query(name, version, missing)))
        found: dict[str, bytes] = {}
        for i in ids:
            data = overlay[i] if i in overlay else committed.get(i)
            if data is not None:
                found[i] = data
        return found

    async def put_document(self, name: str, version: int, doc_id: str, data: bytes) -> None:
        self._check()
        if not isinstance(data, bytes):
            raise InvalidInput(f"document {doc_id!r} must be bytes (JSON), got {type(data)}")
        self._doc_write(name, version, doc_id, data)

    async def delete_document(self, name: str, version: int, doc_id: str) -> None:
        self._check()
        self._doc_write(name, version, doc_id, None)

    def _doc_write(self, name: str, version: int, doc_id: str, data: bytes | None) -> None:
        if self._session is None:
            self._docs.setdefault((name, version), {})[doc_id] = data
        last = self._ops[-1] if self._ops else None
        if isinstance(last, _DocWrites) and last.slot == (name, version):
            last.rows[doc_id] = data
        else:
            self._write(_DocWrites((name, version), {doc_id: data}))

    # -- checkpoints -------------------------------------------------------------------

    def _checkpoint_view(self, key: _CpKey) -> Checkpoint | None:
        if key in self._checkpoints:
            return self._checkpoints[key]
        if key[:2] in self._dropped:
            return None
        rows = self._read(sql.GET_CHECKPOINT, key)
        return checkpoint_of(rows[0]) if rows else None

    async def get_checkpoint(self, name: str, version: int, partition: int) -> Checkpoint | None:
        self._check()
        if self._session is not None:
            return await self._on_writer(
                partial(get_checkpoint_sync, name=name, version=version, partition=partition)
            )
        return self._checkpoint_view((name, version, partition))

    async def set_checkpoint(
        self,
        name: str,
        version: int,
        partition: int,
        position: Position,
        *,
        expected: Position | None,
    ) -> None:
        self._check()
        now = now_us()
        op = partial(
            set_checkpoint_sync,
            name=name,
            version=version,
            partition=partition,
            position=position,
            expected=expected,
            now=now,
        )
        if self._session is not None:
            await self._on_writer(op)
            return
        key = (name, version, partition)
        row = self._checkpoint_view(key)
        actual = None if row is None else row.position
        if actual != expected:
            raise self._fail(
                CheckpointConflict(name, version, partition, expected=expected, actual=actual)
            )
        self._write(op)
        self._checkpoints[key] = Checkpoint(name, version, partition, position, updated_us=now)

    async def set_state(
        self, name: str, version: int, partition: int, state: PartitionState, error: str | None
    ) -> None:
        self._check()
        now = now_us()
        self._write(
            partial(
                set_state_sync,
                name=name,
                version=version,
                partition=partition,
                state=state,
                error=error,
                now=now,
            )
        )
        if self._session is None:
            key = (name, version, partition)
            row = self._checkpoint_view(key)
            position = START if row is None else row.position
            self._checkpoints[key] = Checkpoint(
                name, version, partition, position, PartitionState(state), error, now
            )

    # -- parked events -----------------------------------------------------------------

    async def park(self, event: ParkedEvent) -> None:
        self._check()
        self._write(partial(park_sync, event=event))

    async def unpark(self, name: str, version: int, position: Position) -> None:
        self._check()
        self._write(partial(unpark_sync, name=name, version=version, position=position))

    # -- versions ----------------------------------------------------------------------

    def _version_view(self, slot: _Slot) -> VersionRecord | None:
        if slot in self._versions:
            return self._versions[slot]
        if slot in self._dropped:
            return None
        rows = self._read(sql.GET_VERSION, slot)
        return version_of(rows[0]) if rows else None

    def _active_view(self, name: str) -> int | None:
        if name in self._active:
            return self._active[name]
        rows = self._read(sql.ACTIVE, (name,))
        return int(rows[0][0]) if rows else None

    async def get_version(self, name: str, version: int) -> VersionRecord | None:
        self._check()
        if self._session is not None:
            return await self._on_writer(partial(get_version_sync, name=name, version=version))
        return self._version_view((name, version))

    async def set_version(
        self, name: str, version: int, state: VersionState, *, expected: VersionState | None
    ) -> None:
        self._check()
        now = now_us()
        op = partial(
            set_version_sync, name=name, version=version, state=state, expected=expected, now=now
        )
        if self._session is not None:
            await self._on_writer(op)
            return
        slot = (name, version)
        record = self._version_view(slot)
        actual = None if record is None else record.state
        if actual != expected:
            raise self._fail(
                CheckpointConflict(name, version, None, expected=expected, actual=actual)
            )
        self._write(op)
        self._versions[slot] = VersionRecord(name, version, VersionState(state), now)

    async def activate(self, name: str, version: int) -> int | None:
        self._check()
        now = now_us()
        op = partial(activate_sync, name=name, version=version, now=now)
        if self._session is not None:
            return await self._on_writer(op)
        previous = self._active_view(name)
        retired = previous is not None and previous != version
        if retired and previous is not None and self._version_view((name, previous)):
            self._versions[(name, previous)] = VersionRecord(
                name, previous, VersionState.RETIRED, now
            )
        self._versions[(name, version)] = VersionRecord(name, version, VersionState.ACTIVE, now)
        self._active[name] = version
        self._write(op)
        return previous

    async def drop(self, name: str, version: int) -> None:
        self._check()
        self._write(partial(drop_sync, name=name, version=version))
        if self._session is not None:
            return
        slot = (name, version)
        if self._active_view(name) == version:
            self._active[name] = None
        self._dropped.add(slot)
        self._docs.pop(slot, None)
        self._versions.pop(slot, None)
        for key in [k for k in self._checkpoints if k[:2] == slot]:
            del self._checkpoints[key]

    # -- SQL read models ---------------------------------------------------------------

    async def execute(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        self._check()
        if self._session is None:
            # From now on this transaction runs on the writer (see the module docstring).
            store = self._models.store
            self._session = WriterSession(store, idle_timeout=store.busy_timeout)
            self._docs, self._checkpoints, self._versions, self._active = {}, {}, {}, {}
            self._dropped = set()
        bound: Sequence[Any] | dict[str, Any] = (
            dict(params) if isinstance(params, Mapping) else tuple(params)
        )
        return await self._on_writer(partial(_statement, query, bound, self._models.store))

    async def write(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> None:
        """`execute` without the rows (SQLite runs statements in-process: no round trip)."""
        await self.execute(query, params)

    # -- the end -----------------------------------------------------------------------

    async def _commit(self) -> None:
        if self._closed:
            raise InvalidInput("this read-model transaction has ended; open a new one")
        self._closed = True
        session, ops, failed = self._session, self._ops, self._failed
        self._ops = []
        if failed is not None:
            if session is not None:
                await session.finish(rollback)
            raise failed
        if session is not None:
            await session.finish(partial(_apply_and_commit, ops))
        elif ops:
            await self._models.store.on_writer(partial(_begin_apply_commit, ops))
        else:
            return
        self._models.commits += 1

    async def _rollback(self) -> None:
        self._closed = True
        self._ops = []
        session, self._session = self._session, None
        if session is not None:
            await session.finish(rollback)


class _DocWrites:
    """Consecutive document writes to one version: the last write of each id wins."""

    __slots__ = ("rows", "slot")

    def __init__(self, slot: _Slot, rows: dict[str, bytes | None]) -> None:
        self.slot = slot
        self.rows = rows

    def __call__(self, conn: sqlite3.Connection) -> None:
        puts = {i: d for i, d in self.rows.items() if d is not None}
        deletes = [i for i, d in self.rows.items() if d is None]
        apply_documents_sync(conn, *self.slot, puts, deletes)


def _statement(
    query: str, params: Sequence[Any] | dict[str, Any], store: SQLiteStore, conn: sqlite3.Connection
) -> list[tuple[Any, ...]]:
    """Run a SQL read model's statement; its own mistakes are `InvalidInput` (a poison
    event for the daemon), the database's troubles a `StoreError` (retried)."""
    try:
        rows: list[tuple[Any, ...]] = conn.execute(query, params).fetchall()
    except Exception as exc:
        if is_driver_error(exc):
            raise statement_error(exc, query, store.path) from exc
        raise
    return rows


def _begin_apply_commit(ops: list[_Op], conn: sqlite3.Connection) -> None:
    with transaction(conn):
        for op in ops:
            op(conn)


def _apply_and_commit(ops: list[_Op], conn: sqlite3.Connection) -> None:
    with transaction(conn, begun=True):
        for op in ops:
            op(conn)
