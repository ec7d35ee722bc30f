"""Read models in the PostgreSQL store's schema, on its connection pool.

``PostgresReadModelStore(store)`` keeps documents, checkpoints, parked events and version
records in ``ef_*`` tables beside the events (`_read_model_schema`, a migration track of its
own, applied on first use). A transaction is one pooled connection in one database
transaction, so a SQL read model's own statements (`execute`, with psycopg's ``%s`` or
``%(name)s`` parameters) commit atomically with the documents and the checkpoint.

Writes reach the server at once, with one exception that saves a round trip per
document: puts and deletes of documents wait on the client until the transaction's next
statement (of any kind) or its commit, and go in one statement per version. Nobody else
sees any of it before the commit either way, and the transaction's own reads see it.

The checkpoint is a compare-and-set: ``UPDATE ... WHERE position = expected`` (or an
``INSERT ... ON CONFLICT DO NOTHING`` for the first one), and no row changed means
another worker moved it: `CheckpointConflict`. Under ``READ COMMITTED`` a concurrent
writer of the same row waits for the first to finish and then finds it moved, so two
workers can never both commit from one checkpoint. Activation locks the readers' pointer
row, so swaps are serialised too.

A transaction that failed (a conflict, a statement error) keeps nothing: its end rolls
back and raises the first error, even if the block swallowed it. Committed reads run on
any pooled connection, one statement each.

A transaction's first `execute` sets two things for the rest of that transaction: the
store's schema first on the ``search_path`` (so a read model's unqualified tables live
beside the events, one set per schema), and the server's own planner settings (pooled
sessions discourage sorts, see the store), so a read model's queries plan as usual.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import sql as pgsql

from ..._position import Position
from ...errors import CheckpointConflict, ConfigurationError, EventfoldError, InvalidInput
from ...store._read_model_rows import (
    TransactionGuard,
    checkpoint_of,
    ordered,
    parked_of,
    parked_row,
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
from ._errors import driver_errors
from ._read_model_schema import Statements, ensure_schema
from ._store import PostgresStore

__all__ = ["PostgresReadModelStore", "PostgresTransaction"]

_Slot = tuple[str, int]
_PAGE = 1000
# A SQL read model's statements run with the server's planner settings, and with the
# store's schema first on the search path (its tables live beside the events).
_PRELUDE = b"""SELECT set_config(name, reset_val, true) FROM pg_settings
    WHERE name IN ('enable_sort', 'max_parallel_workers_per_gather', 'jit')
    UNION ALL SELECT set_config('search_path', %s, true)"""


class PostgresReadModelStore:
    """A `ReadModelStore` in the schema of a `PostgresStore`, on its connection pool.

    The event store must be open while this one is used; the tables are created on
    first use (or by `ensure_schema`). `commits` counts committed transactions.
    """

    backend = "postgresql"

    def __init__(self, store: PostgresStore) -> None:
        if not isinstance(store, PostgresStore):
            raise ConfigurationError(
                f"PostgresReadModelStore needs a PostgresStore, got {type(store).__name__}; "
                "use read_models_for(store) to pick the read-model store of any event store"
            )
        self.store = store
        self.commits = 0
        """Transactions committed (for tests and metrics)."""
        self.statements = Statements(store.schema)
        """This store's statements (in its schema)."""
        self._search_path = f"{pgsql.Identifier(store.schema).as_string(None)}, public"
        self._ready = False

    def __repr__(self) -> str:
        return f"PostgresReadModelStore({self.store!r})"

    async def ensure_schema(self) -> None:
        """Create or migrate the read-model tables (idempotent; safe from many processes)."""
        if self._ready:
            return
        pool = self.store.require_pool()
        with driver_errors(self.store.where):
            async with pool.connection() as conn:
                await ensure_schema(conn, self.statements)
        self._ready = True

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        """A transaction on one pooled connection: committed when the block ends, rolled
        back if it raises."""
        await self.ensure_schema()
        pool = self.store.require_pool()
        with driver_errors(self.store.where):
            async with pool.connection() as conn, conn.transaction(), self.joined(conn) as tx:
                yield tx
        self.commits += 1

    @asynccontextmanager
    async def joined(
        self, conn: psycopg.AsyncConnection[Any]
    ) -> AsyncIterator[PostgresTransaction]:
        """A transaction on ``conn``, inside the transaction the caller holds open there
        (an append's, for inline projections): what is pending is sent when the block ends,
        and the caller commits or rolls back."""
        tx = PostgresTransaction(self, conn)
        try:
            yield tx
            await tx.finish()
        finally:
            tx.close()

    # -- committed reads ---------------------------------------------------------------

    async def _rows(self, query: bytes, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        await self.ensure_schema()
        return await self.store.fetch_rows(query, params)

    async def get_documents(self, name: str, version: int, ids: Sequence[str]) -> dict[str, bytes]:
        if not ids:
            return {}
        rows = await self._rows(self.statements.load_documents, (name, version, list(ids)))
        return ordered(rows, ids)

    async def iter_documents(
        self, name: str, version: int, *, after: str | None = None, limit: int | None = None
    ) -> AsyncIterator[tuple[str, bytes]]:
        if limit is not None and (isinstance(limit, bool) or limit < 0):
            raise InvalidInput(f"limit must be None or an int >= 0, got {limit!r}")
        remaining = limit
        key = after
        st = self.statements
        while remaining is None or remaining > 0:
            n = _PAGE if remaining is None else min(_PAGE, remaining)
            if key is None:
                rows = await self._rows(st.iter_first, (name, version, n))
            else:
                rows = await self._rows(st.iter_after, (name, version, key, n))
            for doc_id, data in rows:
                yield doc_id, data
            if len(rows) < n:
                return
            if remaining is not None:
                remaining -= n
            key = rows[-1][0]
            await asyncio.sleep(0)

    async def checkpoints(self, name: str, version: int) -> list[Checkpoint]:
        rows = await self._rows(self.statements.checkpoints, (name, version))
        return [checkpoint_of(row) for row in rows]

    async def active_version(self, name: str) -> int | None:
        rows = await self._rows(self.statements.active, (name,))
        return int(rows[0][0]) if rows else None

    async def versions(self, name: str | None = None) -> list[VersionRecord]:
        if name is None:
            rows = await self._rows(self.statements.versions, ())
        else:
            rows = await self._rows(self.statements.versions_of, (name,))
        return [version_of(row) for row in rows]

    async def parked(self, name: str, version: int) -> list[ParkedEvent]:
        rows = await self._rows(self.statements.parked, (name, version))
        return [parked_of(row) for row in rows]

    async def summaries(self, slots: Sequence[tuple[str, int]]) -> list[ProjectionSummary]:
        """Many versions' checkpoints, parked counts and records in one round trip
        (`SupportsProjectionSummaries`)."""
        if not slots:
            return []
        names, versions = [n for n, _ in slots], [v for _, v in slots]
        return summaries_of(slots, await self._rows(self.statements.summaries, (names, versions)))


class PostgresTransaction(TransactionGuard):
    """A `ReadModelTransaction` of a `PostgresReadModelStore` (see the module docstring)."""

    def __init__(self, models: PostgresReadModelStore, conn: psycopg.AsyncConnection[Any]) -> None:
        self._models = models
        self._conn = conn
        self.statements = models.statements
        self._closed = False
        self._failed: BaseException | None = None
        self._pending: dict[_Slot, dict[str, bytes | None]] = {}
        """Document writes not sent yet (see the module docstring)."""
        self._queued: list[tuple[str, Sequence[Any] | Mapping[str, Any]]] = []
        """Statements of `write` not sent yet, in order."""
        self._prelude_sent = False

    async def _run(self, query: bytes, params: Sequence[Any] | Mapping[str, Any]) -> Any:
        """Send the pending document writes, then run one of eventfold's statements."""
        self._check()
        if self._pending or self._queued:
            await self._flush()
        return await self._send(query, params)

    async def _send(self, query: bytes, params: Sequence[Any] | Mapping[str, Any]) -> Any:
        try:
            with driver_errors(self._models.store.where):
                return await self._conn.execute(query, params, binary=True)
        except EventfoldError as error:
            self._fail(error)
            raise

    async def _flush(self) -> None:
        if self._queued:
            await self._send_queued()
        pending, self._pending = self._pending, {}
        st = self.statements
        for (name, version), rows in pending.items():
            puts = [(i, d) for i, d in rows.items() if d is not None]
            deletes = [i for i, d in rows.items() if d is None]
            if puts:
                ids, datas = [i for i, _ in puts], [d for _, d in puts]
                await self._send(st.put_documents, (name, version, ids, datas))
            if deletes:
                await self._send(st.delete_documents, (name, version, deletes))

    async def finish(self) -> None:
        """Before the commit: raise the first failure, or send what is pending."""
        if self._failed is not None:
            raise self._failed
        if self._pending or self._queued:
            await self._flush()

    def close(self) -> None:
        """Refuse any further use (the transaction has ended)."""
        self._closed = True

    # -- documents ---------------------------------------------------------------------

    async def get_documents(self, name: str, version: int, ids: Sequence[str]) -> dict[str, bytes]:
        if not ids:
            self._check()
            return {}
        cur = await self._run(self.statements.load_documents, (name, version, list(ids)))
        return ordered(await cur.fetchall(), ids)

    async def put_document(self, name: str, version: int, doc_id: str, data: bytes) -> None:
        self._check()
        if not isinstance(data, bytes):
            raise InvalidInput(f"document {doc_id!r} must be bytes (JSON), got {type(data)}")
        self._pending.setdefault((name, version), {})[doc_id] = data

    async def delete_document(self, name: str, version: int, doc_id: str) -> None:
        self._check()
        self._pending.setdefault((name, version), {})[doc_id] = None

    # -- checkpoints -------------------------------------------------------------------

    async def get_checkpoint(self, name: str, version: int, partition: int) -> Checkpoint | None:
        cur = await self._run(self.statements.get_checkpoint, (name, version, partition))
        row = await cur.fetchone()
        return None if row is None else checkpoint_of(row)

    async def set_checkpoint(
        self,
        name: str,
        version: int,
        partition: int,
        position: Position,
        *,
        expected: Position | None,
    ) -> None:
        st, now = self.statements, now_us()
        if expected is None:
            params: tuple[Any, ...] = (name, version, partition, position.tx, position.seq, now)
            cur = await self._run(st.insert_checkpoint, params)
        else:
            params = (position.tx, position.seq, now, name, version, partition)
            cur = await self._run(st.move_checkpoint, (*params, expected.tx, expected.seq))
        if cur.rowcount != 1:
            row = await self.get_checkpoint(name, version, partition)
            actual = None if row is None else row.position
            raise self._fail(
                CheckpointConflict(name, version, partition, expected=expected, actual=actual)
            )

    async def set_state(
        self, name: str, version: int, partition: int, state: PartitionState, error: str | None
    ) -> None:
        params = (name, version, partition, PartitionState(state).value, error, now_us())
        await self._run(self.statements.set_state, params)

    # -- parked events -----------------------------------------------------------------

    async def park(self, event: ParkedEvent) -> None:
        await self._run(self.statements.park, parked_row(event))

    async def unpark(self, name: str, version: int, position: Position) -> None:
        await self._run(self.statements.unpark, (name, version, position.tx, position.seq))

    # -- versions ----------------------------------------------------------------------

    async def get_version(self, name: str, version: int) -> VersionRecord | None:
        cur = await self._run(self.statements.get_version, (name, version))
        row = await cur.fetchone()
        return None if row is None else version_of(row)

    async def set_version(
        self, name: str, version: int, state: VersionState, *, expected: VersionState | None
    ) -> None:
        st, now, value = self.statements, now_us(), VersionState(state).value
        if expected is None:
            cur = await self._run(st.insert_version, (name, version, value, now))
        else:
            params = (value, now, name, version, VersionState(expected).value)
            cur = await self._run(st.change_version, params)
        if cur.rowcount != 1:
            record = await self.get_version(name, version)
            actual = None if record is None else record.state
            raise self._fail(
                CheckpointConflict(name, version, None, expected=expected, actual=actual)
            )

    async def activate(self, name: str, version: int) -> int | None:
        st, now = self.statements, now_us()
        # Lock the pointer row (creating it if there is none), so that concurrent swaps
        # of one projection take turns and each sees the one before it.
        row = await (await self._run(st.lock_active, (name,))).fetchone()
        previous: int | None = None
        if row is None:
            created = await self._run(st.insert_active, (name, version))
            if created.rowcount != 1:
                row = await (await self._run(st.lock_active, (name,))).fetchone()
        if row is not None:
            previous = int(row[0])
            await self._run(st.update_active, (version, name))
        if previous is not None and previous != version:
            await self._run(st.retire_version, (now, name, previous))
        await self._run(st.put_version, (name, version, VersionState.ACTIVE.value, now))
        return previous

    async def drop(self, name: str, version: int) -> None:
        await self._run(self.statements.drop, {"n": name, "v": version})

    # -- SQL read models ---------------------------------------------------------------

    async def execute(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        self._check()
        if self._pending or self._queued:
            await self._flush()
        await self._prelude()
        bound: Sequence[Any] | Mapping[str, Any] = (
            params if isinstance(params, Mapping) else tuple(params)
        )
        try:
            with driver_errors(self._models.store.where, query=query):
                # A block of its own syncs a pipeline the transaction may run in (an
                # inline one does): until then a cursor has no description and no rows.
                async with self._conn.pipeline():
                    cur = await self._conn.execute(query, bound)
                if cur.description is None:
                    return []
                rows: list[tuple[Any, ...]] = await cur.fetchall()
        except EventfoldError as error:
            self._fail(error)
            raise
        return rows

    async def write(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> None:
        """Queue a statement whose rows are not needed: it runs, in order, before the next
        read, `execute` or the commit. Queued statements with the same text go to the
        server together (``executemany``: one round trip for the lot)."""
        self._check()
        if self._pending:
            await self._flush()
        self._queued.append((query, params if isinstance(params, Mapping) else tuple(params)))

    async def _prelude(self) -> None:
        if not self._prelude_sent:
            await self._send(_PRELUDE, (self._models._search_path,))
            self._prelude_sent = True

    async def _send_queued(self) -> None:
        queued, self._queued = self._queued, []
        await self._prelude()
        at = 0
        while at < len(queued):
            query = queued[at][0]
            end = at + 1
            while end < len(queued) and queued[end][0] == query:
                end += 1
            try:
                with driver_errors(self._models.store.where, query=query):
                    async with self._conn.cursor() as cur:
                        await cur.executemany(query, [params for _, params in queued[at:end]])
            except EventfoldError as error:
                self._fail(error)
                raise
            at = end
