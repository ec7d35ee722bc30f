"""PostgreSQL-specific behaviour of `PostgresStore` (the shared contract is in the
conformance suite): the xid8 horizon, the planner, schemas, migrations, errors, races.

The server comes from ``EVENTFOLD_TEST_POSTGRES_URL``; each test gets its own schema and
drops it afterwards.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

import eventfold
from eventfold import ANY, NO_STREAM, START, Event, NewEvent, Position, RecordedEvent
from eventfold.backends.postgres import DEFAULT_SCHEMA, PostgresStore
from eventfold.backends.postgres._append import append_statement
from eventfold.backends.postgres._conn import configure
from eventfold.backends.postgres._schema import MIGRATIONS
from eventfold.testing.conformance import settle
from eventfold.write import Snapshot

ENV = "EVENTFOLD_TEST_POSTGRES_URL"
BASE_URL = os.environ.get(ENV, "")
if not BASE_URL:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {ENV} is not: the PostgreSQL tests must run", pytrace=False)
    pytest.skip(f"set {ENV} to run the PostgreSQL tests", allow_module_level=True)

pytestmark = pytest.mark.postgres


class Opened(Event):
    __event_type__ = "pgtest.Opened"
    n: int


class Closed(Event):
    __event_type__ = "pgtest.Closed"
    n: int


def url_for(schema: str, **options: str) -> str:
    extra = "".join(f"&{k}={v}" for k, v in options.items())
    sep = "&" if "?" in BASE_URL else "?"
    return f"{BASE_URL}{sep}schema={schema}{extra}"


async def drop(schema: str) -> None:
    async with await psycopg.AsyncConnection.connect(BASE_URL, autocommit=True) as conn:
        await conn.execute(
            psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                psycopg.sql.Identifier(schema)
            )
        )


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = f"pgtest_{uuid.uuid4().hex[:12]}"
    yield name
    await drop(name)


@pytest.fixture
async def store(schema: str) -> AsyncIterator[PostgresStore]:
    async with PostgresStore(url_for(schema)) as opened:
        yield opened


async def collect(events: AsyncIterator[RecordedEvent]) -> list[RecordedEvent]:
    return [e async for e in events]


async def wait_for_head(store: PostgresStore, at_least: Position) -> None:
    """Wait until the horizon passes ``at_least``: any write transaction in the cluster
    (another test, autovacuum) may hold it back for a moment."""
    for _ in range(500):
        if await store.head() >= at_least:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the head never reached {at_least}")


# -- the global order never skips a late commit ------------------------------------------


async def test_a_late_commit_is_never_skipped(
    store: PostgresStore,
) -> None:
    first = await store.append("early-1", [Opened(n=0)], expected_version=NO_STREAM)
    await wait_for_head(store, first.position)
    checkpoint = first.position  # a tailing reader that has read everything so far

    # Transaction A appends through the store's own statement and stays open ...
    slow = await psycopg.AsyncConnection.connect(BASE_URL)
    try:
        encoded = store.codec.encode("slow-1", [Opened(n=1)])
        query, params = append_statement(store.statements, "slow-1", encoded, NO_STREAM)
        await slow.execute(query, params)
        # ... while a younger transaction B appends and commits.
        fast = await store.append("fast-1", [Opened(n=2)], expected_version=NO_STREAM)
        assert await store.stream_version("fast-1") == 1  # committed and in its stream

        # B sorts after A, and A is still running: the log shows neither yet.
        assert [e.stream_id async for e in store.read_all()] == ["early-1"]
        assert await collect(store.read_all(after=checkpoint)) == []
        assert await store.head() == first.position
        await slow.commit()
    finally:
        await slow.close()

    await wait_for_head(store, fast.position)
    log = await collect(store.read_all())
    assert [e.stream_id for e in log] == ["early-1", "slow-1", "fast-1"]
    assert log[1].position < log[2].position == fast.position
    resumed = await collect(store.read_all(after=checkpoint))
    assert [e.stream_id for e in resumed] == ["slow-1", "fast-1"]


async def test_tailing_reader_misses_nothing_under_concurrent_writers(
    store: PostgresStore,
) -> None:
    writers, appends = 8, 40

    async def writer(w: int) -> None:
        for i in range(appends):
            batch = [Opened(n=i), Closed(n=i)] if i % 3 == 0 else [Opened(n=i)]
            await store.append(f"w{w}-{i % 4}", batch, expected_version=ANY)

    task = asyncio.gather(*(writer(w) for w in range(writers)))
    seen: list[RecordedEvent] = []
    checkpoint: Position = START
    while True:
        done = task.done()
        async for event in store.read_all(after=checkpoint):
            seen.append(event)
            checkpoint = event.position
        if done:
            break
        await asyncio.sleep(0.002)
    await task
    total = writers * sum(2 if i % 3 == 0 else 1 for i in range(appends))
    for _ in range(300):  # the horizon may trail the last commit for a moment
        if len(seen) >= total:
            break
        await asyncio.sleep(0.01)
        seen.extend([e async for e in store.read_all(after=checkpoint)])
        checkpoint = seen[-1].position
    keys = [(e.stream_id, e.version) for e in seen]
    assert len(keys) == len(set(keys)) == total
    assert [e.position for e in seen] == sorted(e.position for e in seen)


async def test_readers_that_stop_early_leave_the_pool_healthy(store: PostgresStore) -> None:
    written = await store.append(
        "long-1", [Opened(n=k) for k in range(6000)], expected_version=NO_STREAM
    )
    await wait_for_head(store, written.position)
    for _ in range(20):
        async for _event in store.read_all():
            break
        async for _event in store.read_stream("long-1", backwards=True):
            break
    reader = store.read_all(after=START)
    assert (await anext(reader)).version == 1
    await reader.aclose()
    assert len(await collect(store.read_all(limit=4500))) == 4500
    assert await store.stream_version("long-1") == 6000
    pool = store.require_pool()
    await store.close()  # waits for pages still being fetched ahead
    stats = pool.get_stats()
    assert stats.get("returns_bad", 0) == stats.get("connections_lost", 0) == 0


# -- the planner walks the (transaction_id, seq) index ------------------------------------


def numbered(query: bytes) -> tuple[str, list[str]]:
    """The statement with ``%(name)s`` placeholders turned into ``$n`` (for PREPARE)."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"%\((\w+)\)[sb]", number, query.decode()), names


async def test_read_all_pages_walk_the_index_at_any_depth(store: PostgresStore) -> None:
    # A log with both shapes of transactions: big batches and many single events.
    for i in range(60):
        events = [Opened(n=k) if k % 3 else Closed(n=k) for k in range(1000)]
        await store.append(f"cat{i % 5}-{i}", events, expected_version=NO_STREAM)
    sem = asyncio.Semaphore(8)

    async def single(i: int) -> None:
        async with sem:
            await store.append(f"one{i % 7}-{i}", [Opened(n=i)], expected_version=ANY)

    await asyncio.gather(*(single(i) for i in range(400)))
    assert await store.fetch_rows(b"SHOW enable_sort", ()) == [("off",)]
    conn = await psycopg.AsyncConnection.connect(BASE_URL, autocommit=True)
    try:
        await configure(conn)  # the session settings of the store's own pool
        await conn.execute(
            psycopg.sql.SQL("ANALYZE {}.events").format(psycopg.sql.Identifier(store.schema))
        )
        cur = await conn.execute(
            psycopg.sql.SQL(
                "SELECT transaction_id::text, seq FROM {}.events ORDER BY transaction_id, seq"
            ).format(psycopg.sql.Identifier(store.schema))
        )
        keys = await cur.fetchall()
        depths = [("0", 0), keys[len(keys) // 2], keys[-30], keys[-1]]
        filters: list[tuple[list[str] | None, list[str] | None]] = [
            (None, None),
            (["pgtest.Closed"], None),
            (None, ["cat3"]),
            (["pgtest.Opened", "nothing.Here"], ["one2", "cat1"]),
        ]
        for types, cats in filters:
            query = store.statements.read_all[(types is not None, cats is not None)]
            text, names = numbered(query)
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            await conn.execute(f"PREPARE page AS {text}")
            for x, s in depths:
                values: dict[str, Any] = {"x": x, "s": s, "n": 5000, "types": types, "cats": cats}
                literals = psycopg.sql.SQL(", ").join(
                    psycopg.sql.Literal(values[name]) for name in names
                )
                for mode in ("force_custom_plan", "force_generic_plan"):
                    await conn.execute(f"SET plan_cache_mode = {mode}")
                    if mode == "force_custom_plan":
                        cur = await conn.execute(b"EXPLAIN " + query, values)
                    else:
                        cur = await conn.execute(
                            psycopg.sql.SQL("EXPLAIN EXECUTE page({})").format(literals)
                        )
                    plan = [row[0] for row in await cur.fetchall()]
                    where = f"{mode}, types={types}, categories={cats}, after={x}:{s}"
                    assert plan[0].startswith("Limit"), (where, plan)
                    assert "Index Scan using events_pkey" in plan[1], (where, plan)
                    assert not any(
                        word in line for line in plan for word in ("Sort", "Seq Scan", "Bitmap")
                    ), (where, plan)
            await conn.execute("DEALLOCATE page")
    finally:
        await conn.close()


async def test_read_stream_walks_the_stream_index(store: PostgresStore) -> None:
    await store.append("big-1", [Opened(n=k) for k in range(3000)], expected_version=NO_STREAM)
    conn = await psycopg.AsyncConnection.connect(BASE_URL, autocommit=True)
    try:
        await configure(conn)
        for query in (store.statements.read_forwards, store.statements.read_backwards):
            cur = await conn.execute(b"EXPLAIN " + query, {"sid": "big-1", "at": 10, "n": 5000})
            plan = [row[0] for row in await cur.fetchall()]
            assert plan[0].startswith("Limit"), plan
            assert re.search(r"Index Scan (Backward )?using events_stream_version_key", plan[1]), (
                plan
            )
    finally:
        await conn.close()


# -- schemas and migrations --------------------------------------------------------------


async def test_schema_option_isolates_stores(schema: str) -> None:
    other = f'{schema}_Other-"q"'  # needs quoting: upper case, a dash, a double quote
    try:
        async with (
            PostgresStore(url_for(schema)) as one,
            PostgresStore(url_for(other.replace('"', "%22"))) as two,
        ):
            assert two.schema == other
            written = await one.append("order-1", [Opened(n=1)], expected_version=NO_STREAM)
            await two.append("order-1", [Opened(n=2), Opened(n=3)], expected_version=NO_STREAM)
            assert await one.stream_version("order-1") == 1
            assert await two.stream_version("order-1") == 2
            await wait_for_head(one, written.position)
            assert [e.data for e in await collect(one.read_all())] == [Opened(n=1)]
            assert (await two.stats()).events == 2
        async with await psycopg.AsyncConnection.connect(BASE_URL) as conn:
            cur = await conn.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema IN (%s, %s) ORDER BY 1, 2",
                (schema, other),
            )
            tables = await cur.fetchall()
        assert {name for _, name in tables} == {
            "events",
            "streams",
            "schema_migrations",
            "snapshots",
            "epochs",
            "outbox",
            "subject_keys",
        }
        assert {s for s, _ in tables} == {schema, other}
    finally:
        await drop(other)


def test_default_schema_and_repr_hide_the_password() -> None:
    store = PostgresStore("postgresql://ann:pa55word@db.example:6543/shop")
    assert store.schema == DEFAULT_SCHEMA == "eventfold"
    assert (store.host, store.port) == ("db.example", 6543)
    assert "pa55word" not in repr(store)


def test_bad_options_are_configuration_errors() -> None:
    with pytest.raises(eventfold.ConfigurationError, match="pool_max_size"):
        PostgresStore(url_for("x", pool_max_size="lots"))
    with pytest.raises(eventfold.ConfigurationError, match="schema"):
        PostgresStore(url_for("x" * 64))
    with pytest.raises(eventfold.ConfigurationError) as info:
        PostgresStore("postgresql://ann:pa55word@localhost/db?no_such_option=1")
    assert "pa55word" not in str(info.value)


async def test_migrations_are_recorded_and_a_newer_schema_is_refused(schema: str) -> None:
    # Concurrent first opens of one schema: the advisory lock lets one do the work.
    stores = [PostgresStore(url_for(schema)) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    await asyncio.gather(*(s.close() for s in stores))
    table = psycopg.sql.SQL("{}.schema_migrations").format(psycopg.sql.Identifier(schema))
    async with await psycopg.AsyncConnection.connect(BASE_URL, autocommit=True) as conn:
        cur = await conn.execute(psycopg.sql.SQL("SELECT version FROM {} ORDER BY 1").format(table))
        assert [row[0] for row in await cur.fetchall()] == list(range(1, len(MIGRATIONS) + 1))
        async with PostgresStore(url_for(schema)) as again:  # reopening changes nothing
            assert await again.head() == START
        await conn.execute(
            psycopg.sql.SQL("INSERT INTO {} (version) VALUES (%s)").format(table), (999,)
        )
    with pytest.raises(eventfold.SchemaTooNew) as info:
        await PostgresStore(url_for(schema)).open()
    assert (info.value.found, info.value.known) == (999, len(MIGRATIONS))


# -- errors ------------------------------------------------------------------------------


async def test_unreachable_server_names_host_and_port_but_not_the_password() -> None:
    store = PostgresStore("postgresql://ann:s3cret-Pw@127.0.0.1:1/db?schema=x")
    with pytest.raises(eventfold.StoreUnavailable) as info:
        await store.open()
    error = info.value
    assert (error.backend, error.host, error.port) == ("postgresql", "127.0.0.1", 1)
    assert "127.0.0.1:1" in str(error)
    assert "s3cret-Pw" not in str(error)
    assert "s3cret-Pw" not in str(error.__cause__)
    with pytest.raises(eventfold.StoreClosed):
        await store.head()
    await store.close()


async def test_dropped_connections_are_replaced(schema: str) -> None:
    app = f"pgtest-{uuid.uuid4().hex[:8]}"
    async with PostgresStore(url_for(schema, application_name=app)) as store:
        await store.append("order-1", [Opened(n=1)], expected_version=NO_STREAM)

        async def kill() -> None:
            async with await psycopg.AsyncConnection.connect(BASE_URL, autocommit=True) as c:
                await c.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = %s",
                    (app,),
                )
            await asyncio.sleep(0.05)

        await kill()
        assert await store.stream_version("order-1") == 1  # a read retries once
        await kill()
        with pytest.raises(eventfold.StoreUnavailable) as info:  # an append does not
            await store.append("order-1", [Opened(n=2)], expected_version=1)
        assert info.value.port == store.port
        await store.append("order-1", [Opened(n=2)], expected_version=1)
        assert await store.stream_version("order-1") == 2


async def test_stored_events_cannot_be_changed(store: PostgresStore) -> None:
    await store.append("order-1", [Opened(n=1)], expected_version=NO_STREAM)
    events = psycopg.sql.SQL("{}.events").format(psycopg.sql.Identifier(store.schema))
    async with await psycopg.AsyncConnection.connect(BASE_URL, autocommit=True) as conn:
        for statement in ("UPDATE {} SET version = 2", "DELETE FROM {}", "TRUNCATE {}"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                await conn.execute(psycopg.sql.SQL(statement).format(events))
    assert await store.stream_version("order-1") == 1
    assert len(await collect(store.read_stream("order-1"))) == 1


async def test_other_driver_errors_become_store_errors(store: PostgresStore) -> None:
    async with await psycopg.AsyncConnection.connect(BASE_URL, autocommit=True) as conn:
        await conn.execute(
            psycopg.sql.SQL("DROP TABLE {}.events").format(psycopg.sql.Identifier(store.schema))
        )
    with pytest.raises(eventfold.StoreError, match="42P01") as info:
        await store.head()
    assert isinstance(info.value.__cause__, psycopg.errors.UndefinedTable)


async def test_version_key_backstop_is_a_wrong_expected_version(store: PostgresStore) -> None:
    await store.append("order-1", [Opened(n=1), Opened(n=2)], expected_version=NO_STREAM)
    async with await psycopg.AsyncConnection.connect(BASE_URL, autocommit=True) as conn:
        await conn.execute(  # a streams row out of step with the events (never in use)
            psycopg.sql.SQL("UPDATE {}.streams SET version = 1").format(
                psycopg.sql.Identifier(store.schema)
            )
        )
    with pytest.raises(eventfold.WrongExpectedVersion) as info:
        await store.append("order-1", [Opened(n=3)], expected_version=ANY)
    assert (info.value.stream_id, info.value.expected, info.value.actual) == ("order-1", ANY, 1)
    assert isinstance(info.value.__cause__, psycopg.errors.UniqueViolation)


async def test_find_events_returns_stream_order_and_skips_missing_ids(
    store: PostgresStore,
) -> None:
    ids = [uuid.uuid4() for _ in range(5)]
    batch = [NewEvent(Opened(n=k), event_id=ids[k]) for k in range(5)]
    await store.append("order-1", batch, expected_version=NO_STREAM)
    found = await store.find_events("order-1", [ids[3], uuid.uuid4(), ids[0]])
    assert [(e.version, e.event_id) for e in found] == [(1, ids[0]), (4, ids[3])]
    assert await store.find_events("order-2", ids) == []
    assert await store.find_events("order-1", []) == []


# -- races between store instances (separate pools) ---------------------------------------


async def test_concurrent_appends_from_many_instances_have_one_winner(schema: str) -> None:
    stores = [PostgresStore(url_for(schema)) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:

        async def attempt(i: int, stream: str, expected: Any) -> str | int:
            try:
                await stores[i % 4].append(stream, [Opened(n=i)], expected_version=expected)
            except eventfold.WrongExpectedVersion as exc:
                return exc.actual
            return "won"

        for round_ in range(6):
            outcomes = await asyncio.gather(*(attempt(i, "race-1", round_) for i in range(24)))
            assert outcomes.count("won") == 1, outcomes
            assert all(o == round_ + 1 for o in outcomes if o != "won"), outcomes
        for s in range(4):
            outcomes = await asyncio.gather(*(attempt(i, f"new-{s}", NO_STREAM) for i in range(16)))
            assert sorted(outcomes, key=str) == [1] * 15 + ["won"]
        await asyncio.gather(*(attempt(i, "any-1", ANY) for i in range(40)))
        versions = [e.version async for e in stores[0].read_stream("any-1")]
        assert versions == list(range(1, 41))
        assert [e.version async for e in stores[1].read_stream("race-1")] == list(range(1, 7))
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_racing_retries_of_one_append_store_it_once(schema: str) -> None:
    stores = [PostgresStore(url_for(schema)) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        batch = [NewEvent(Opened(n=k), event_id=uuid.uuid4()) for k in range(3)]
        for expected in (ANY, NO_STREAM):
            stream = f"retry-{expected}"
            results = await asyncio.gather(
                *(stores[i % 3].append(stream, batch, expected_version=expected) for i in range(12))
            )
            assert len(set(results)) == 1
            assert results[0].version == 3
            stored = await collect(stores[0].read_stream(stream))
            assert [e.event_id for e in stored] == [n.event_id for n in batch]
    finally:
        await asyncio.gather(*(s.close() for s in stores))


# -- batching: what many tasks ask for at once goes together -------------------------------


async def test_appends_asked_for_together_share_one_commit(store: PostgresStore) -> None:
    await store.append("order-0", [Opened(n=0)], expected_version=NO_STREAM)
    results = await asyncio.gather(
        *(store.append(f"order-{i}", [Opened(n=i)], expected_version=NO_STREAM) for i in range(12)),
        return_exceptions=True,
    )
    assert isinstance(results[0], eventfold.WrongExpectedVersion), "a conflict fails alone"
    assert results[0].actual == 1
    appended = [r for r in results[1:] if isinstance(r, eventfold.AppendResult)]
    assert len(appended) == 11
    assert len({r.position.tx for r in appended}) == 1, "one transaction, one commit"
    assert len({r.position for r in appended}) == 11
    await settle(store, max(r.position for r in appended))
    events = await collect(store.read_all())
    in_stream_order = sorted(f"order-{i}" for i in range(1, 12))  # the batch's lock order
    assert [e.stream_id for e in events] == ["order-0", *in_stream_order]


async def test_an_error_in_a_batch_fails_only_its_own_append(store: PostgresStore) -> None:
    event_id = uuid.uuid4()
    await store.append("order-1", [NewEvent(Opened(n=1), event_id=event_id)], expected_version=ANY)
    results = await asyncio.gather(
        store.append("order-2", [Opened(n=2)], expected_version=NO_STREAM),
        # The same id with other content: the batch's transaction fails on the unique key,
        # and each append then runs on its own.
        store.append("order-1", [NewEvent(Closed(n=1), event_id=event_id)], expected_version=ANY),
        store.append("order-3", [Opened(n=3)], expected_version=NO_STREAM),
        return_exceptions=True,
    )
    assert isinstance(results[0], eventfold.AppendResult)
    assert isinstance(results[1], eventfold.DuplicateEventId)
    assert isinstance(results[2], eventfold.AppendResult)
    assert [await store.stream_version(f"order-{i}") for i in (1, 2, 3)] == [1, 1, 1]


async def test_loads_asked_for_together_each_get_their_own(store: PostgresStore) -> None:
    for i in range(6):
        await store.append(f"order-{i}", [Opened(n=k) for k in range(i + 1)], expected_version=0)
    events = await collect(store.read_stream("order-5", from_version=3, limit=1))
    saved = Snapshot("order-5", "S", 3, 1, b"{}", events[0].raw_event_id, events[0].recorded_us, 9)
    await store.snapshots.save_snapshot(saved)
    loads = await asyncio.gather(*(store.read_for_load(f"order-{i}", "S") for i in range(6)))
    for i, rows in enumerate(loads):
        assert rows.rest is None
        if i == 5:
            assert (rows.snapshot, rows.anchor) == (saved, events[0].raw_event_id)
            assert [row[0] for row in rows.first] == [4, 5, 6], "the events after it"
        else:
            assert (rows.snapshot, rows.anchor) == (None, None)
            assert [row[1].n for row in rows.first] == list(range(i + 1))


async def test_read_for_load_pages_a_long_stream(store: PostgresStore) -> None:
    await store.append("order-1", [Opened(n=k) for k in range(4500)], expected_version=0)
    rows = await store.read_for_load("order-1", "S", max_version=4200)
    assert rows.snapshot is None
    assert rows.rest is not None
    versions = [row[0] for row in rows.first] + [row[0] async for page in rows.rest for row in page]
    assert versions == list(range(1, 4201))
    assert {row[2] for row in rows.first} == {0}, "no recorded times unless bounded by time"
    events = await collect(store.read_stream("order-1", limit=10))
    rows = await store.read_for_load("order-1", "S", max_recorded_us=events[-1].recorded_us)
    assert rows.rest is not None
    assert [row[2] for row in rows.first[:10]] == [e.recorded_us for e in events]


async def test_close_waits_for_batches_in_flight(schema: str) -> None:
    store = PostgresStore(url_for(schema))
    await store.open()
    tasks = [
        asyncio.create_task(store.append(f"order-{i}", [Opened(n=i)], expected_version=NO_STREAM))
        for i in range(20)
    ]
    await asyncio.sleep(0)
    await store.close()
    assert all(t.result().version == 1 for t in tasks)
    async with PostgresStore(url_for(schema)) as again:
        assert (await again.stats()).events == 20
