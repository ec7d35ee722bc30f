"""The read-model store contract over every backend: memory, SQLite and PostgreSQL.

The contract is `eventfold.testing.ReadModelStoreConformance`, run here over each
backend; what differs between backends is tested beside it. Each read-model store comes
from `read_models_for` over a fresh event store of its backend, so the SQL ones share the
event store's file or schema as in production. The SQL backends also run SQL read
models' own statements (`execute`) and keep nothing of a transaction that failed;
SQLite's stores share one file between several store objects.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import eventfold
from eventfold import Position
from eventfold.backends.sqlite import SQLiteStore
from eventfold.backends.sqlite import _read_model_schema as rm_schema
from eventfold.backends.sqlite import _read_model_sync as rm_sync
from eventfold.projections import (
    CheckpointConflict,
    DaemonOptions,
    MemoryReadModelStore,
    Polling,
    PostgresReadModelStore,
    Projection,
    ProjectionDaemon,
    ProjectionTransaction,
    ReadModelStore,
    ReadModelTransaction,
    SQLiteReadModelStore,
    VersionState,
    read_models_for,
)
from eventfold.testing import ProjectionSummariesConformance, ReadModelStoreConformance


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[eventfold.EventStore]:
    async with eventfold.connect(store_url) as store:
        yield store


@pytest.fixture
def models(store: eventfold.EventStore) -> ReadModelStore:
    return read_models_for(store)


SQL_BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=SQL_BACKENDS)
async def sql_store(request: pytest.FixtureRequest) -> AsyncIterator[eventfold.EventStore]:
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    async with eventfold.connect(url) as store:
        yield store


@pytest.fixture
def sql_models(sql_store: eventfold.EventStore) -> ReadModelStore:
    return read_models_for(sql_store)


def P(seq: int, tx: int = 0) -> Position:
    return Position(tx, seq)


def sql_of(models: ReadModelStore, sqlite: str, postgres: str) -> str:
    """The statement in the dialect (parameter style) of the backend."""
    return sqlite if models.backend == "sqlite" else postgres


# -- the backend for each event store ---------------------------------------------------


async def test_each_event_store_gets_its_own_kind_of_read_model_store(
    store: eventfold.EventStore, models: ReadModelStore
) -> None:
    kinds = {
        "memory": MemoryReadModelStore,
        "sqlite": SQLiteReadModelStore,
        "postgresql": PostgresReadModelStore,
    }
    assert isinstance(models, kinds[store.backend])
    assert models.backend == store.backend
    assert isinstance(models, ReadModelStore)
    async with models.transaction() as tx:
        assert isinstance(tx, ReadModelTransaction)


def test_an_unknown_event_store_has_no_read_model_store() -> None:
    with pytest.raises(eventfold.ConfigurationError, match="no read-model store"):
        read_models_for(object())  # type: ignore[arg-type]


# -- the contract every backend keeps ----------------------------------------------------


class TestReadModelStore(ReadModelStoreConformance):
    """The shipped suite over `models`: each backend's store beside a fresh event store."""


class TestProjectionSummaries(ProjectionSummariesConformance):
    """The optional summaries port, which every backend's read-model store offers."""


# -- SQL read models ---------------------------------------------------------------------


async def test_execute_runs_statements_in_the_transaction(models: ReadModelStore) -> None:
    if models.backend == "memory":
        with pytest.raises(eventfold.ConfigurationError, match="SQLite or PostgreSQL"):
            async with models.transaction() as tx:
                await tx.execute("SELECT 1")
        return
    insert = sql_of(
        models,
        "INSERT INTO orders_v1 (id, total) VALUES (?, ?)",
        "INSERT INTO orders_v1 (id, total) VALUES (%s, %s)",
    )
    async with models.transaction() as tx:
        await tx.put_document("docs", 1, "before", b"1")
        assert await tx.execute("CREATE TABLE orders_v1 (id text PRIMARY KEY, total int)") == []
        assert await tx.execute(insert, ("o-1", 10)) == []
        await tx.execute(insert, ["o-2", 32])
        assert await tx.get_documents("docs", 1, ["before"]) == {"before": b"1"}
        await tx.put_document("docs", 1, "after", b"2")
        assert await tx.get_documents("docs", 1, ["after"]) == {"after": b"2"}
        rows = await tx.execute("SELECT id, total FROM orders_v1 ORDER BY id")
        assert rows == [("o-1", 10), ("o-2", 32)]
        await tx.set_checkpoint("docs", 1, 0, P(3), expected=None)
        assert (await tx.get_checkpoint("docs", 1, 0)) is not None
        await tx.set_version("docs", 1, VersionState.BUILDING, expected=None)
        assert await tx.activate("docs", 1) is None
    assert await models.get_documents("docs", 1, ["before", "after"]) == {
        "before": b"1",
        "after": b"2",
    }
    assert await models.active_version("docs") == 1
    named = sql_of(
        models,
        "SELECT total FROM orders_v1 WHERE id = :id",
        "SELECT total FROM orders_v1 WHERE id = %(id)s",
    )

    async def crash() -> None:
        async with models.transaction() as tx:
            assert await tx.execute(named, {"id": "o-2"}) == [(32,)]
            await tx.execute(insert, ("o-3", 1))
            await tx.put_document("docs", 1, "crash", b"{}")
            raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        await crash()
    async with models.transaction() as tx:
        assert await tx.execute("SELECT count(*) FROM orders_v1") == [(2,)]
    assert await models.get_documents("docs", 1, ["crash"]) == {}


async def test_a_failed_transaction_keeps_nothing_even_if_the_error_is_swallowed(
    sql_models: ReadModelStore,
) -> None:
    models = sql_models
    async with models.transaction() as tx:
        await tx.execute("CREATE TABLE t (n int)")
        await tx.set_checkpoint("docs", 1, 0, P(1), expected=None)

    async def swallow(bad: str) -> None:
        async with models.transaction() as tx:
            await tx.put_document("docs", 1, "a", b"{}")
            await tx.execute("INSERT INTO t VALUES (1)")
            with pytest.raises(eventfold.InvalidInput, match="SQL statement failed") as info:
                await tx.execute(bad)
            assert not isinstance(info.value, eventfold.StoreError)  # poison, not an outage
            with pytest.raises(eventfold.InvalidInput, match="already failed"):
                await tx.put_document("docs", 1, "b", b"{}")

    for bad in ("SELEC 1", "INSERT INTO missing VALUES (1)"):
        with pytest.raises(eventfold.InvalidInput, match="SQL statement failed"):
            await swallow(bad)

    async def swallow_conflict() -> None:
        async with models.transaction() as tx:
            await tx.put_document("docs", 1, "c", b"{}")
            with pytest.raises(CheckpointConflict):
                await tx.set_checkpoint("docs", 1, 0, P(2), expected=P(7))

    with pytest.raises(CheckpointConflict):
        await swallow_conflict()
    assert await models.get_documents("docs", 1, ["a", "b", "c"]) == {}
    async with models.transaction() as tx:
        assert await tx.execute("SELECT count(*) FROM t") == [(0,)]


async def test_a_cancelled_sql_transaction_is_rolled_back(sql_models: ReadModelStore) -> None:
    """A daemon stopping mid-batch: the task is cancelled inside the transaction."""
    started = asyncio.Event()

    async def batch() -> None:
        async with sql_models.transaction() as tx:
            await tx.execute("CREATE TABLE half (n int)")
            await tx.put_document("docs", 1, "half", b"{}")
            started.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(batch())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with sql_models.transaction() as tx:  # the connection (or writer) is free
        await tx.execute("CREATE TABLE half (n int)")  # the first one was rolled back
        await tx.put_document("docs", 1, "whole", b"{}")
    assert await sql_models.get_documents("docs", 1, ["half", "whole"]) == {"whole": b"{}"}


async def test_drop_leaves_a_sql_read_models_own_tables(sql_models: ReadModelStore) -> None:
    async with sql_models.transaction() as tx:
        await tx.execute("CREATE TABLE totals_v1 (n int)")
        await tx.execute("INSERT INTO totals_v1 VALUES (5)")
        await tx.set_version("totals", 1, VersionState.BUILDING, expected=None)
    async with sql_models.transaction() as tx:
        await tx.drop("totals", 1)
    async with sql_models.transaction() as tx:
        assert await tx.execute("SELECT n FROM totals_v1") == [(5,)]
    assert await sql_models.versions("totals") == []


class Deposited(eventfold.Event):
    __event_type__ = "read_model_test.Deposited"
    cents: int


async def test_the_daemon_runs_a_sql_read_model(
    sql_store: eventfold.EventStore, sql_models: ReadModelStore
) -> None:
    mark = "?" if sql_models.backend == "sqlite" else "%s"
    ledger = Projection("ledger")

    @ledger.on_setup
    async def create(tx: ProjectionTransaction) -> None:
        table = tx.table("ledger")
        await tx.execute(f"CREATE TABLE {table} (stream text PRIMARY KEY, cents int NOT NULL)")

    @ledger.on(Deposited)
    async def deposited(event: eventfold.RecordedEvent, tx: ProjectionTransaction) -> None:
        table = tx.table("ledger")
        await tx.execute(
            f"INSERT INTO {table} (stream, cents) VALUES ({mark}, {mark}) ON CONFLICT (stream) "
            f"DO UPDATE SET cents = {table}.cents + excluded.cents",
            (event.stream_id, event.data.cents),
        )
        await tx.put(event.stream_id, {"last": event.version})

    for i in range(12):
        last = await sql_store.append(
            f"acct-{i % 3}", [Deposited(cents=i)], expected_version=eventfold.ANY
        )
    options = DaemonOptions(batch_size=5, poll_interval=0.01, lease_retry=0.02)
    daemon = ProjectionDaemon(sql_store, sql_models, [ledger], options=options, notifier=Polling())
    async with daemon:
        await daemon.catch_up(last.position, timeout=20)
    async with sql_models.transaction() as tx:
        rows = await tx.execute('SELECT stream, cents FROM "ledger_v1" ORDER BY stream')
    assert rows == [("acct-0", 0 + 3 + 6 + 9), ("acct-1", 22), ("acct-2", 26)]
    assert await sql_models.get_documents("ledger", 1, ["acct-0"]) == {"acct-0": b'{"last":4}'}
    (checkpoint,) = await sql_models.checkpoints("ledger", 1)
    assert checkpoint.position == last.position
    assert await sql_models.active_version("ledger") == 1


# -- SQLite: one file, several stores ----------------------------------------------------


def open_sqlite(path: Path, **options: Any) -> SQLiteStore:
    return SQLiteStore(str(path), **options)


async def test_two_sqlite_stores_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with open_sqlite(path) as one, open_sqlite(path) as two:
        a, b = SQLiteReadModelStore(one), SQLiteReadModelStore(two)
        await asyncio.gather(a.ensure_schema(), b.ensure_schema())  # created once
        async with a.transaction() as tx:
            await tx.put_document("docs", 1, "a", b"1")
            await tx.set_checkpoint("docs", 1, 0, P(10), expected=None)
        assert await b.get_documents("docs", 1, ["a"]) == {"a": b"1"}
        (row,) = await b.checkpoints("docs", 1)
        assert row.position == P(10)

        async def stale() -> None:
            async with b.transaction() as tx:
                await tx.put_document("docs", 1, "b", b"2")
                assert (await tx.get_checkpoint("docs", 1, 0)) == row
                await asyncio.sleep(0.02)
                await tx.set_checkpoint("docs", 1, 0, P(20), expected=P(10))
                async with a.transaction() as first:  # another process gets there first
                    await first.set_checkpoint("docs", 1, 0, P(15), expected=P(10))

        with pytest.raises(CheckpointConflict) as info:
            await stale()
        assert info.value.actual == P(15)
        assert await a.get_documents("docs", 1, ["b"]) == {}

        # A SQL transaction on one store holds the file's write lock; the other's
        # commit waits for it (within its busy timeout), then lands.
        async with a.transaction() as tx:
            await tx.execute("CREATE TABLE t (n int)")
            await tx.execute("INSERT INTO t VALUES (1)")
            waiting = asyncio.create_task(_put(b, "c"))
            await asyncio.sleep(0.05)
            assert not waiting.done()
        await asyncio.wait_for(waiting, 5)
        assert await a.get_documents("docs", 1, ["c"]) == {"c": b"{}"}


async def _put(models: ReadModelStore, doc_id: str) -> None:
    async with models.transaction() as tx:
        await tx.put_document("docs", 1, doc_id, b"{}")


async def test_sqlite_read_models_share_the_event_stores_writer(tmp_path: Path) -> None:
    class Noted(eventfold.Event):
        n: int

    async with open_sqlite(tmp_path / "events.db") as store:
        models = SQLiteReadModelStore(store)
        before = store.commits
        async with models.transaction() as tx:
            await tx.put_document("docs", 1, "a", b"{}")
            await tx.set_checkpoint("docs", 1, 0, P(1), expected=None)
        assert models.commits == 1
        # An append made while a SQL transaction holds the writer waits for its end.
        async with models.transaction() as tx:
            await tx.execute("CREATE TABLE t (n int)")
            append = asyncio.create_task(
                store.append("note-1", [Noted(n=1)], expected_version=eventfold.NO_STREAM)
            )
            await asyncio.sleep(0.05)
            assert not append.done()
            await tx.execute("INSERT INTO t VALUES (1)")
        result = await asyncio.wait_for(append, 5)
        assert result.version == 1
        assert models.commits == 2
        assert store.commits > before
    conn = sqlite3.connect(tmp_path / "events.db")
    try:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert {"ef_documents", "ef_checkpoints", "ef_parked", "ef_versions"} <= tables
        assert conn.execute("SELECT max(number) FROM ef_read_model_migrations").fetchone() == (1,)
    finally:
        conn.close()


async def test_a_sqlite_transaction_that_holds_the_writer_idle_is_rolled_back(
    tmp_path: Path,
) -> None:
    async with open_sqlite(tmp_path / "events.db", busy_timeout=0.2) as store:
        models = SQLiteReadModelStore(store)

        async def idle() -> None:
            async with models.transaction() as tx:
                await tx.execute("CREATE TABLE t (n int)")
                await asyncio.sleep(0.5)
                await tx.execute("INSERT INTO t VALUES (1)")

        with pytest.raises(eventfold.StoreError, match="held the SQLite writer idle"):
            await idle()
        async with models.transaction() as tx:  # the writer is free again
            await tx.put_document("docs", 1, "a", b"{}")
            tables = await tx.execute("SELECT name FROM sqlite_master WHERE name = 't'")
            assert tables == []  # its CREATE TABLE was rolled back
        assert await models.get_documents("docs", 1, ["a"]) == {"a": b"{}"}


async def test_the_sync_helpers_write_inside_the_callers_transaction(tmp_path: Path) -> None:
    async with open_sqlite(tmp_path / "events.db") as store:
        models = SQLiteReadModelStore(store)

        def inline(conn: sqlite3.Connection) -> dict[str, bytes]:
            rm_schema.ensure_schema_sync(conn)
            conn.execute("BEGIN IMMEDIATE")
            try:
                rm_schema.ensure_schema_sync(conn)  # inside a transaction: a no-op
                rm_sync.apply_documents_sync(
                    conn, "docs", 1, {"a": b"1", "b": b"2"}, deletes=["gone"]
                )
                rm_sync.apply_documents_sync(conn, "docs", 1, {}, deletes=["b"])
                rm_sync.set_checkpoint_sync(conn, "docs", 1, 0, P(4), expected=None)
                found = rm_sync.load_documents_sync(conn, "docs", 1, ["b", "a"])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return found

        assert await store.on_writer(inline) == {"a": b"1"}
        assert await models.get_documents("docs", 1, ["a", "b"]) == {"a": b"1"}
        assert [c.position for c in await models.checkpoints("docs", 1)] == [P(4)]

        def stale(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            rm_sync.apply_documents_sync(conn, "docs", 1, {"c": b"3"})
            rm_sync.set_checkpoint_sync(conn, "docs", 1, 0, P(5), expected=P(3))

        with pytest.raises(CheckpointConflict):
            await store.on_writer(stale)  # the writer rolls the transaction back
        assert await models.get_documents("docs", 1, ["c"]) == {}


async def test_sqlite_read_models_need_a_sqlite_store() -> None:
    with pytest.raises(eventfold.ConfigurationError, match="needs a SQLiteStore"):
        SQLiteReadModelStore(eventfold.connect("memory://"))  # type: ignore[arg-type]


async def test_queued_writes_run_in_order_before_reads_and_at_commit(
    sql_models: ReadModelStore,
) -> None:
    mark = "?" if sql_models.backend == "sqlite" else "%s"
    upsert = (
        f"INSERT INTO totals (id, n) VALUES ({mark}, {mark}) "
        "ON CONFLICT (id) DO UPDATE SET n = totals.n + excluded.n"
    )
    async with sql_models.transaction() as tx:
        await tx.execute("CREATE TABLE totals (id TEXT PRIMARY KEY, n BIGINT NOT NULL)")
        for i in range(50):
            await tx.write(upsert, (f"k{i % 5}", i))
        await tx.put_document("docs", 1, "after", b"{}")
        await tx.write(f"DELETE FROM totals WHERE id = {mark}", ("k4",))
        # A read sees every queued statement, in the order they were queued.
        rows = await tx.execute("SELECT id, n FROM totals ORDER BY id")
        assert rows == [(f"k{k}", sum(range(k, 50, 5))) for k in range(4)]
        await tx.write(upsert, ("k0", 1000))  # only the commit sends this one
    async with sql_models.transaction() as tx:
        assert await tx.execute(f"SELECT n FROM totals WHERE id = {mark}", ("k0",)) == [
            (sum(range(0, 50, 5)) + 1000,)
        ]
    assert await sql_models.get_documents("docs", 1, ["after"]) == {"after": b"{}"}


async def test_a_failing_queued_write_fails_the_commit_and_keeps_nothing(
    sql_models: ReadModelStore,
) -> None:
    async with sql_models.transaction() as tx:
        await tx.execute("CREATE TABLE once (id TEXT PRIMARY KEY)")
    mark = "?" if sql_models.backend == "sqlite" else "%s"

    async def batch() -> None:
        async with sql_models.transaction() as tx:
            await tx.put_document("docs", 1, "lost", b"{}")
            await tx.write(f"INSERT INTO once (id) VALUES ({mark})", ("a",))
            await tx.write(f"INSERT INTO once (id) VALUES ({mark})", ("a",))

    with pytest.raises(eventfold.InvalidInput, match="statement failed"):
        await batch()
    async with sql_models.transaction() as tx:
        assert await tx.execute("SELECT count(*) FROM once") == [(0,)]
    assert await sql_models.get_documents("docs", 1, ["lost"]) == {}


@pytest.mark.postgres
async def test_postgres_read_models_migrate_once_and_refuse_a_newer_track(
    postgres_url: str,
) -> None:
    from eventfold.backends.postgres import PostgresStore
    from eventfold.backends.postgres._read_model_schema import MIGRATIONS
    from eventfold.projections import PostgresReadModelStore

    async with PostgresStore(postgres_url) as store:
        # Concurrent first uses: the advisory lock lets one apply the migrations.
        await asyncio.gather(*(PostgresReadModelStore(store).ensure_schema() for _ in range(4)))
        pool = store.require_pool()
        table = f'"{store.schema}".ef_read_model_migrations'
        async with pool.connection() as conn:
            cur = await conn.execute(f"SELECT version FROM {table} ORDER BY 1")
            assert [r[0] for r in await cur.fetchall()] == list(range(1, len(MIGRATIONS) + 1))
            await conn.execute(f"INSERT INTO {table} (version) VALUES (99)")
        with pytest.raises(eventfold.SchemaTooNew) as info:
            await PostgresReadModelStore(store).ensure_schema()
        assert (info.value.found, info.value.known) == (99, len(MIGRATIONS))
