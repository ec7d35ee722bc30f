"""A PostgreSQL store moved to another server keeps its global log: epochs.

The real move: ``pg_dump`` of a store's schema on the test server and ``pg_restore`` into
a second cluster (``EVENTFOLD_TEST_POSTGRES_URL_2``, made by ``scripts/pg-second-cluster``)
whose transaction counter lies behind the stored ids. Then the same with stored ids far
ahead of the counter in one cluster, the migration of a store that never moved, and the
warning for rows the horizon hides too long.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

import eventfold
from conftest import server_url
from eventfold import ANY, RecordedEvent
from eventfold.backends.postgres import PostgresStore
from eventfold.backends.postgres._schema import Statements
from eventfold.cli import cli
from eventfold.projections import (
    DaemonOptions,
    DocumentProjection,
    ProjectionDaemon,
    read_models_for,
)
from eventfold.testing import settle

pytestmark = pytest.mark.postgres

FIRST_ENV = "EVENTFOLD_TEST_POSTGRES_URL"
SECOND_ENV = "EVENTFOLD_TEST_POSTGRES_URL_2"
FAST = DaemonOptions(batch_size=10, poll_interval=0.01, lease_retry=0.02)


class Moved(eventfold.Event):
    __event_type__ = "reloc.Moved"
    n: int


class Tally(msgspec.Struct):
    count: int = 0


def with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def schema() -> str:
    return f"reloc_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def first(schema: str) -> Iterator[str]:
    base = server_url(FIRST_ENV, "the PostgreSQL tests must run")
    yield base
    drop_schema(base, schema)


@pytest.fixture
def second(schema: str) -> Iterator[str]:
    base = server_url(SECOND_ENV, "scripts/pg-second-cluster makes the second server")
    yield base
    drop_schema(base, schema)


class Seen:
    """A projection counting events per stream, and the ids it handled, in order."""

    def __init__(self) -> None:
        self.ids: list[uuid.UUID] = []
        self.projection = DocumentProjection("tally", document=Tally)

        @self.projection.on(Moved)
        def count(doc: Tally, event: RecordedEvent) -> Tally:
            self.ids.append(event.event_id)
            return Tally(doc.count + 1)

    async def catch_up(self, store: PostgresStore) -> dict[str, Any]:
        models = read_models_for(store)
        async with ProjectionDaemon(store, models, [self.projection], options=FAST) as daemon:
            await daemon.catch_up(timeout=30)
            status = await daemon.status("tally")
        docs = models.iter_documents("tally", self.projection.version)
        tallies = {i: msgspec.json.decode(d, type=Tally).count async for i, d in docs}
        return {"position": status.position, "tallies": tallies}


async def fill(url: str, streams: int = 5) -> tuple[list[RecordedEvent], Seen, dict[str, Any]]:
    """``streams`` events on the server at ``url``, read back, and a projection caught up."""
    seen = Seen()
    async with PostgresStore(url) as store:
        last = None
        for n in range(streams):
            last = await store.append(f"moved-{n}", [Moved(n=n)], expected_version=ANY)
        assert last is not None
        await settle(store, last.position)
        events = [e async for e in store.read_all()]
        state = await seen.catch_up(store)
    assert [e.data for e in events] == [Moved(n=n) for n in range(streams)]
    assert state["position"] == events[-1].position
    return events, seen, state


async def after_move(
    url: str, before: list[RecordedEvent], seen: Seen
) -> tuple[PostgresStore, list[RecordedEvent]]:
    """Open the moved store, append three events, and check the log and the projection."""
    seen.ids.clear()
    async with PostgresStore(url) as store:
        assert [e.event_id async for e in store.read_all()] == [e.event_id for e in before]
        new = []
        for n in range(3):
            result = await store.append(f"moved-{n}", [Moved(n=10 + n)], expected_version=ANY)
            assert result.position > before[-1].position
            new.append(result)
        await settle(store, new[-1].position)
        log = [e async for e in store.read_all()]
        assert [e.data.n for e in log] == [0, 1, 2, 3, 4, 10, 11, 12]
        assert [e.position for e in log] == sorted(e.position for e in log)
        assert [e.position for e in log[:5]] == [e.position for e in before]
        # Read from a checkpoint taken before the move: exactly the new events.
        tail = [e async for e in store.read_all(after=before[-1].position)]
        assert [e.position for e in tail] == [r.position for r in new]
        state = await seen.catch_up(store)
        assert seen.ids == [e.event_id for e in tail]
        assert state["tallies"] == {
            "moved-0": 2,
            "moved-1": 2,
            "moved-2": 2,
            "moved-3": 1,
            "moved-4": 1,
        }
        assert state["position"] == log[-1].position
        assert (await store.stats()).epoch == store.epoch.number
    return store, log


def set_base(url: str, schema: str, base: int) -> None:
    """Make new rows of ``schema`` take the server's transaction ids plus ``base``."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(Statements(schema).epoch_default(base))


def next_xid(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::int8").fetchone()
    assert row is not None
    return int(row[0])


def burn_xids(url: str, count: int) -> None:
    """Advance a server's transaction counter by about ``count`` (a subtransaction each)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE burn (n int)")
        conn.execute(
            sql.SQL(
                "DO $$ BEGIN FOR i IN 1..{} LOOP BEGIN INSERT INTO burn VALUES (i); "
                "EXCEPTION WHEN others THEN NULL; END; END LOOP; END $$"
            ).format(sql.Literal(count))
        )


def run(*args: str) -> None:
    if shutil.which(args[0]) is None:
        pytest.fail(f"{args[0]} is not on PATH: install the PostgreSQL client tools")
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


async def test_pg_dump_and_restore_to_a_server_behind_keeps_the_log_and_checkpoints(
    schema: str, first: str, second: str, tmp_path: Path
) -> None:
    # The stored ids must lie ahead of the second server's counter, as in production.
    lead = next_xid(second) + 1000 - next_xid(first)
    if lead > 0:
        burn_xids(first, lead)
    before, seen, _ = await fill(with_schema(first, schema))
    assert before[0].position.tx > next_xid(second)

    dump = tmp_path / "store.dump"
    run("pg_dump", f"--dbname={first}", "-n", schema, "-Fc", "-f", str(dump))
    run("pg_restore", f"--dbname={second}", "--no-owner", str(dump))

    store, log = await after_move(with_schema(second, schema), before, seen)
    assert store.epoch.number == 1
    # The new events got the second server's ids plus the epoch's base.
    assert log[-1].position.tx - store.epoch.base < before[0].position.tx
    # Reopening finds nothing ahead of the counter: the same epoch.
    async with PostgresStore(with_schema(second, schema)) as again:
        assert again.epoch == store.epoch
        assert [e.position async for e in again.read_all()] == [e.position for e in log]


async def test_a_store_whose_stored_ids_lie_far_ahead_starts_a_new_epoch(
    schema: str, first: str
) -> None:
    # The history of a server whose counter was 10**12 ahead of this one: written here in
    # an epoch of that base, then seen as a copy would be on this server (no epoch yet).
    url = with_schema(first, schema)
    async with PostgresStore(url):
        pass
    far = 10**12
    epochs = sql.SQL("UPDATE {} SET base = %s").format(sql.Identifier(schema, "epochs"))
    with psycopg.connect(first, autocommit=True) as conn:
        conn.execute(epochs, (far,))
    set_base(first, schema, far)
    before, seen, _ = await fill(url)
    assert all(e.position.tx > far for e in before)
    with psycopg.connect(first, autocommit=True) as conn:
        conn.execute(epochs, (0,))
    set_base(first, schema, 0)

    # Concurrent opens: one starts the epoch, the others find it.
    stores = [PostgresStore(url) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))
    await asyncio.gather(*(s.close() for s in stores))
    assert {s.epoch for s in stores} == {stores[0].epoch}
    assert stores[0].epoch.number == 1
    assert stores[0].epoch.base > far - next_xid(first)

    store, _ = await after_move(url, before, seen)
    assert store.epoch == stores[0].epoch


async def test_a_store_that_never_moved_stays_in_epoch_0(schema: str, first: str) -> None:
    url = with_schema(first, schema)
    async with PostgresStore(url) as store:
        result = await store.append("still-1", [Moved(n=1)], expected_version=ANY)
        assert store.epoch == (0, 0)
        await settle(store, result.position)
        # Epoch 0's positions are the server's own transaction ids.
        assert result.position.tx < next_xid(first)
    async with PostgresStore(url) as again:
        assert again.epoch == (0, 0)
        assert (await again.stats()).epoch == 0


def test_info_shows_the_epoch(schema: str, first: str) -> None:
    url = with_schema(first, schema)

    async def create() -> None:  # info opens read-only: it creates no store
        async with PostgresStore(url):
            pass

    asyncio.run(create())
    result = CliRunner().invoke(cli, ["--url", url, "info", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert msgspec.json.decode(result.stdout)["epoch"] == 0
    table = CliRunner().invoke(cli, ["--url", url, "info"], env={"COLUMNS": "200"}).stdout
    assert [line.split() for line in table.splitlines() if "epoch" in line] == [["epoch", "0"]]


CAUSES = {
    "copy": ("ahead of this server's counter", "restart the process"),
    "transaction": ("a write transaction in this cluster has been open", "pid"),
}


@pytest.mark.parametrize("cause", sorted(CAUSES))
async def test_rows_hidden_too_long_are_warned_about_with_their_cause(
    schema: str, first: str, caplog: pytest.LogCaptureFixture, cause: str
) -> None:
    caplog.set_level(logging.WARNING, logger="eventfold.postgres")
    async with (
        PostgresStore(with_schema(first, schema)) as store,
        await psycopg.AsyncConnection.connect(first) as holder,
    ):
        if cause == "copy":
            set_base(first, schema, 10**9)  # a copy arriving while the store is open
        else:
            await holder.execute("SELECT pg_current_xact_id()")  # takes an xid, stays open
        await store.append("hidden-1", [Moved(n=1)], expected_version=ANY)
        store.horizon.after = 0.2
        for _ in range(3):
            assert [e async for e in store.read_all()] == []
            await asyncio.sleep(0.3)
        await store.head()
        await holder.rollback()
    warned = [r.getMessage() for r in caplog.records if r.name == "eventfold.postgres"]
    # Whoever holds the oldest transaction in the cluster, the cause is named.
    assert len(warned) == 1, warned
    assert all(part in warned[0] for part in CAUSES[cause]), warned[0]


async def test_pg_dump_and_restore_keeps_the_outbox_in_order(
    schema: str, first: str, second: str, tmp_path: Path
) -> None:
    # Messages only, no events: the outbox's own ids decide the new epoch's base.
    lead = next_xid(second) + 1000 - next_xid(first)
    if lead > 0:
        burn_xids(first, lead)
    async with PostgresStore(with_schema(first, schema)) as store:
        store.declare_destination("billing")
        for n in range(3):
            async with store.unit_of_work() as uow:
                uow.publish("billing", str(n))
        before = await outbox_until(store, 3)
    assert before[0].position.tx > next_xid(second)

    dump = tmp_path / "store.dump"
    run("pg_dump", f"--dbname={first}", "-n", schema, "-Fc", "-f", str(dump))
    run("pg_restore", f"--dbname={second}", "--no-owner", str(dump))

    async with PostgresStore(with_schema(second, schema)) as store:
        assert store.epoch.number == 1
        store.declare_destination("billing")
        for n in range(3, 5):
            async with store.unit_of_work() as uow:
                uow.publish("billing", str(n))
        after = await outbox_until(store, 5)
        assert [m.payload for m in after] == [b"0", b"1", b"2", b"3", b"4"]
        assert [m.position for m in after[:3]] == [m.position for m in before]
        tail = await store.read_outbox(before[-1].position, 100)
        assert [m.payload for m in tail] == [b"3", b"4"]
        assert await store.outbox_head() == after[-1].position


async def outbox_until(store: PostgresStore, count: int) -> list[eventfold.store.OutboxMessage]:
    for _ in range(3000):
        found = await store.read_outbox(eventfold.START, 100)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} messages not readable")
