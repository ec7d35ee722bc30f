"""What only the SQLite backend does: group commit, pragmas, migrations, several processes."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import eventfold
from eventfold import ANY, NO_STREAM, Event, NewEvent, RecordedEvent
from eventfold.backends.sqlite import SQLiteStore
from eventfold.backends.sqlite._schema import MIGRATIONS
from eventfold.backends.sqlite._writer import SQLiteWriter
from eventfold.store._common import PAGE_SIZE
from eventfold.write import Snapshot


class Tick(Event):
    __event_type__ = "sqlite_test.Tick"
    n: int


def ticks(count: int, start: int = 0) -> list[Event]:
    return [Tick(n=i) for i in range(start, start + count)]


async def collect(events: AsyncIterator[RecordedEvent]) -> list[RecordedEvent]:
    return [e async for e in events]


def open_sqlite(path: Path, query: str = "") -> SQLiteStore:
    store = eventfold.connect(f"sqlite:///{path}{query}")
    assert isinstance(store, SQLiteStore)
    return store


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


@pytest.fixture
async def store(db: Path) -> AsyncIterator[SQLiteStore]:
    async with open_sqlite(db) as s:
        yield s


@contextmanager
def raw(db: Path) -> Iterator[sqlite3.Connection]:
    """A plain connection to the file, as another program would open it; closed on exit
    (sqlite3's own context manager only ends the transaction)."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


async def writer_pragma(store: SQLiteStore, name: str) -> object:
    """A pragma's value on the store's own writer connection (read on its thread)."""

    def read(conn: sqlite3.Connection) -> object:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]

    return await store.on_writer(read)


# -- group commit ------------------------------------------------------------------------


async def test_concurrent_appends_share_transactions(store: SQLiteStore) -> None:
    before = store.commits
    results = await asyncio.gather(
        *(store.append(f"tick-{i}", ticks(1), expected_version=NO_STREAM) for i in range(200))
    )
    assert store.commits - before < 20, "200 concurrent appends should need few commits"
    positions = sorted(r.position.seq for r in results)
    assert positions == list(range(1, 201)), "positions are unique and gap-free"
    assert len(await collect(store.read_all())) == 200


async def test_a_conflict_fails_alone_inside_a_shared_transaction(store: SQLiteStore) -> None:
    await store.append("tick-0", ticks(1), expected_version=NO_STREAM)
    before = store.commits
    count = 50
    results = await asyncio.gather(
        *(store.append(f"tick-{i}", ticks(2), expected_version=NO_STREAM) for i in range(count)),
        return_exceptions=True,
    )
    assert store.commits - before == 1, "appends made in one turn of the loop go together"
    assert isinstance(results[0], eventfold.WrongExpectedVersion)
    assert results[0].actual == 1
    assert all(isinstance(r, eventfold.AppendResult) for r in results[1:])
    assert await store.stream_version("tick-0") == 1
    assert len(await collect(store.read_all())) == 1 + (count - 1) * 2


async def test_a_failed_insert_is_rolled_back_to_its_savepoint(
    store: SQLiteStore, db: Path
) -> None:
    await store.append("tick-1", ticks(2), expected_version=NO_STREAM)
    # Another program writes version 4 behind eventfold's back, so the version check
    # passes but the append's second insert hits UNIQUE (stream_id, version).
    with raw(db) as conn:
        conn.execute(
            "INSERT INTO events (event_id, stream_id, version, type, schema_version, data, "
            "metadata, recorded_at) VALUES (randomblob(16), 'tick-1', 4, 'x', 1, '{}', '{}', 0)"
        )
    results = await asyncio.gather(
        store.append("tick-1", ticks(2, 10), expected_version=2),
        store.append("tick-2", ticks(3), expected_version=NO_STREAM),
        return_exceptions=True,
    )
    assert isinstance(results[0], eventfold.WrongExpectedVersion)
    assert results[0].actual == 4
    assert isinstance(results[1], eventfold.AppendResult)
    assert [e.version for e in await collect(store.read_stream("tick-1"))] == [1, 2, 4]
    assert await store.stream_version("tick-2") == 3


async def test_an_error_in_one_append_leaves_the_others(store: SQLiteStore, db: Path) -> None:
    with raw(db) as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.stream_id = 'bad-1' "
            "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"
        )
    results = await asyncio.gather(
        store.append("good-1", ticks(2), expected_version=NO_STREAM),
        store.append("bad-1", ticks(2), expected_version=NO_STREAM),
        store.append("good-2", ticks(2), expected_version=NO_STREAM),
        return_exceptions=True,
    )
    assert isinstance(results[0], eventfold.AppendResult)
    assert isinstance(results[1], eventfold.StoreError)
    assert "refused by a test trigger" in str(results[1])
    assert isinstance(results[2], eventfold.AppendResult)
    assert await store.stream_version("bad-1") == 0
    assert [e.stream_id for e in await collect(store.read_all())] == ["good-1"] * 2 + ["good-2"] * 2


async def test_a_failed_transaction_fails_every_append_in_it(store: SQLiteStore, db: Path) -> None:
    await store.append("tick-1", ticks(1), expected_version=NO_STREAM)
    with raw(db) as conn:
        conn.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.stream_id = 'poison-1' "
            "BEGIN SELECT RAISE(ROLLBACK, 'the whole transaction is rolled back'); END"
        )
    results = await asyncio.gather(
        *(store.append(f"tick-{i}", ticks(1), expected_version=ANY) for i in range(2, 6)),
        store.append("poison-1", ticks(1), expected_version=NO_STREAM),
        return_exceptions=True,
    )
    assert all(isinstance(r, eventfold.StoreError) for r in results)
    assert len({id(r) for r in results}) == len(results), "each caller gets its own error"
    assert [e.stream_id for e in await collect(store.read_all())] == ["tick-1"]
    result = await store.append("tick-2", ticks(1), expected_version=NO_STREAM)
    assert result.position.seq == 2, "the writer recovers and positions stay gap-free"


async def test_close_commits_what_is_queued(db: Path) -> None:
    store = open_sqlite(db)
    await store.open()
    tasks = [
        asyncio.create_task(store.append(f"tick-{i}", ticks(1), expected_version=NO_STREAM))
        for i in range(100)
    ]
    await asyncio.sleep(0)  # let every task queue its append
    await store.close()
    assert all(t.result().version == 1 for t in tasks)
    await store.close()  # twice is fine
    with pytest.raises(eventfold.StoreClosed):
        await store.append("tick-0", ticks(1), expected_version=ANY)
    async with open_sqlite(db) as again:
        assert (await again.stats()).events == 100


async def test_a_retry_in_the_same_group_returns_the_first_result(store: SQLiteStore) -> None:
    ids = [uuid.uuid4() for _ in range(2)]

    def batch() -> list[Event | NewEvent]:
        return [NewEvent(Tick(n=i), event_id=event_id) for i, event_id in enumerate(ids)]

    first, again = await asyncio.gather(
        store.append("tick-1", batch(), expected_version=NO_STREAM),
        store.append("tick-1", batch(), expected_version=NO_STREAM),
    )
    assert first == again == eventfold.AppendResult(2, eventfold.Position(0, 2))
    assert again.retry
    assert [e.event_id for e in await collect(store.read_stream("tick-1"))] == ids


async def test_groups_of_every_size_get_gap_free_positions(store: SQLiteStore) -> None:
    # Groups are written with multi-row statements in power-of-two chunks; sizes around
    # the chunk limits and more streams than an IN list takes must all land in order.
    for count in (1, 2, 3, 63, 64, 65, 130):
        results = await asyncio.gather(
            *(
                store.append(f"g{count}-{i}", ticks(1 + i % 3), expected_version=NO_STREAM)
                for i in range(count)
            )
        )
        assert all(r.version == 1 + i % 3 for i, r in enumerate(results))
    positions = [e.position.seq for e in await collect(store.read_all())]
    assert positions == list(range(1, len(positions) + 1))
    assert (await store.stats()).streams == 1 + 2 + 3 + 63 + 64 + 65 + 130


async def test_an_append_on_the_loop_waits_for_another_process_lock(db: Path) -> None:
    # An append to an idle store commits on the loop's thread, but never waits there for
    # another process's write lock: it hands the append to the writer's thread instead.
    async with SQLiteStore(str(db), busy_timeout=5) as store:
        assert store.inline_writes
        with raw(db) as blocker:
            blocker.execute("BEGIN IMMEDIATE")
            loop = asyncio.get_running_loop()
            released = loop.create_future()

            def release() -> None:
                blocker.execute("ROLLBACK")
                released.set_result(loop.time())

            loop.call_later(0.2, release)
            started = loop.time()
            result = await store.append("tick-1", ticks(1), expected_version=NO_STREAM)
            assert result.version == 1
            assert loop.time() - started >= 0.19, "the append waited for the other lock"
            assert released.done()
        # The writer's own busy timeout is back in force for its thread.
        assert await writer_pragma(store, "busy_timeout") == 5000


async def test_inline_writes_can_be_turned_off(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object) -> None:
        raise AssertionError("inline_writes=False must not write on the loop's thread")

    monkeypatch.setattr(SQLiteWriter, "write_inline", never)
    async with SQLiteStore(str(db), inline_writes=False) as store:
        await store.append("tick-1", ticks(2), expected_version=NO_STREAM)
        await asyncio.gather(
            *(store.append(f"tick-{i}", ticks(1), expected_version=NO_STREAM) for i in range(2, 9))
        )
        assert (await store.stats()).events == 9


async def test_read_for_load_pages_a_long_stream_from_its_snapshot(store: SQLiteStore) -> None:
    await store.append("tick-1", ticks(300), expected_version=NO_STREAM)
    rows = await store.read_for_load("tick-1", "Counter")
    assert (rows.snapshot, rows.stream_id, rows.anchor) == (None, "tick-1", None)
    assert [row[0] for row in rows.first] == list(range(1, len(rows.first) + 1))
    assert rows.rest is not None
    later = [row[0] async for page in rows.rest for row in page]
    assert [row[0] for row in rows.first] + later == list(range(1, 301))

    events = await collect(store.read_stream("tick-1", from_version=250, limit=1))
    saved = Snapshot(
        "tick-1", "Counter", 250, 1, b"{}", events[0].raw_event_id, events[0].recorded_us, 0
    )
    await store.snapshots.save_snapshot(saved)
    rows = await store.read_for_load("tick-1", "Counter")
    assert (rows.snapshot, rows.anchor) == (saved, events[0].raw_event_id)
    assert [row[0] for row in rows.first] == list(range(251, 301)), "the events after it"
    assert {row[2] for row in rows.first} == {0}, "no recorded times unless bounded by time"
    assert rows.rest is None
    rows = await store.read_for_load("tick-1", "Counter", max_version=200)
    assert rows.snapshot is None, "the snapshot lies past the version asked for"
    assert rows.rest is not None
    assert [row[0] async for page in rows.rest for row in page][-1] == 200
    rows = await store.read_for_load("tick-1", "Other")
    assert rows.snapshot is None
    assert rows.first[0][0] == 1
    all_events = await collect(store.read_stream("tick-1"))
    rows = await store.read_for_load("tick-1", "Other", max_recorded_us=all_events[-1].recorded_us)
    assert [row[2] for row in rows.first] == [e.recorded_us for e in all_events[: len(rows.first)]]


# -- pragmas, schema and migrations ------------------------------------------------------


async def test_wal_and_full_synchronous_by_default(store: SQLiteStore, db: Path) -> None:
    assert store.synchronous == "FULL"
    assert await writer_pragma(store, "synchronous") == 2  # FULL
    assert await writer_pragma(store, "journal_mode") == "wal"
    with raw(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_normal_synchronous_from_the_url(db: Path) -> None:
    async with open_sqlite(db, "?synchronous=normal") as store:
        assert store.synchronous == "NORMAL"
        assert await writer_pragma(store, "synchronous") == 1  # NORMAL


async def test_migrations_are_recorded(store: SQLiteStore, db: Path) -> None:
    with raw(db) as conn:
        numbers = [n for (n,) in conn.execute("SELECT number FROM eventfold_migrations")]
        tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
    assert numbers == list(range(1, len(MIGRATIONS) + 1))
    assert {"events", "streams", "eventfold_migrations"} <= tables


async def test_a_newer_schema_is_refused(store: SQLiteStore, db: Path) -> None:
    await store.close()
    newer = len(MIGRATIONS) + 1
    with raw(db) as conn:
        conn.execute("INSERT INTO eventfold_migrations VALUES (?, 0)", (newer,))
    again = open_sqlite(db)
    with pytest.raises(eventfold.SchemaTooNew) as info:
        await again.open()
    assert (info.value.found, info.value.known) == (newer, len(MIGRATIONS))
    with pytest.raises(eventfold.StoreClosed):
        await again.head()


async def test_stored_events_cannot_be_changed(store: SQLiteStore, db: Path) -> None:
    await store.append("tick-1", ticks(1), expected_version=NO_STREAM)
    with raw(db) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE events SET data = '{}'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM events")


async def test_reopening_sees_earlier_events(db: Path) -> None:
    async with open_sqlite(db) as store:
        first = await store.append("tick-1", ticks(3), expected_version=NO_STREAM)
    async with open_sqlite(db) as store:
        assert await store.head() == first.position
        assert [e.data for e in await collect(store.read_stream("tick-1"))] == ticks(3)
        second = await store.append("tick-1", ticks(1, 3), expected_version=3)
        assert second.position.seq == first.position.seq + 1
    await store.open()  # the same instance opens again after close
    try:
        assert await store.stream_version("tick-1") == 4
    finally:
        await store.close()


# -- bad files and locks -------------------------------------------------------------------


async def test_an_unopenable_path_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "events.db"
    with pytest.raises(eventfold.ConfigurationError, match="missing-dir"):
        await open_sqlite(path).open()


async def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are not the pages you are looking for " * 200)
    with pytest.raises(eventfold.ConfigurationError, match=r"notes\.txt"):
        await open_sqlite(path).open()


async def test_a_database_with_foreign_tables(db: Path) -> None:
    with raw(db) as conn:
        conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY)")
    with pytest.raises(eventfold.ConfigurationError, match="did not create"):
        await open_sqlite(db).open()


def test_an_in_memory_database_is_refused() -> None:
    with pytest.raises(eventfold.ConfigurationError, match="memory://"):
        eventfold.connect("sqlite:///:memory:")


async def test_a_held_write_lock_times_out_with_a_clear_error(db: Path) -> None:
    async with SQLiteStore(str(db), busy_timeout=0.2) as store:
        await store.append("tick-1", ticks(1), expected_version=NO_STREAM)
        with raw(db) as blocker:
            blocker.execute("BEGIN IMMEDIATE")
            with pytest.raises(eventfold.StoreError, match="locked") as info:
                await store.append("tick-1", ticks(1), expected_version=1)
            assert str(db) in str(info.value)
            assert info.value.__cause__ is not None
            assert await store.stream_version("tick-1") == 1, "reads go on during a write lock"
        assert (await store.append("tick-1", ticks(1), expected_version=1)).version == 2


# -- reading -----------------------------------------------------------------------------


async def test_each_page_sees_commits_made_while_reading(store: SQLiteStore, db: Path) -> None:
    await store.append("tick-1", ticks(PAGE_SIZE + 500), expected_version=NO_STREAM)
    seen = 0
    async with open_sqlite(db) as other:
        async for _ in store.read_all():
            seen += 1
            if seen == 1:  # the first page is already in hand
                await other.append("tick-2", ticks(10), expected_version=NO_STREAM)
    assert seen == PAGE_SIZE + 510


async def test_categories_are_matched_literally(store: SQLiteStore) -> None:
    for stream in ("a_b-1", "axb-1", "a%-1", "a-1", "a_b", "-1"):
        await store.append(stream, ticks(1), expected_version=NO_STREAM)

    async def streams_of(*categories: str) -> list[str]:
        return [e.stream_id async for e in store.read_all(categories=list(categories))]

    assert await streams_of("a_b") == ["a_b-1", "a_b"]
    assert await streams_of("a%") == ["a%-1"]
    assert await streams_of("a") == ["a-1"]
    assert await streams_of("") == ["-1"]
    assert await streams_of("a_b-1") == []
    assert [s.stream_id async for s in store.streams(category="a_b")] == ["a_b", "a_b-1"]


# -- several stores and processes on one file ----------------------------------------------


async def test_two_stores_on_one_file_detect_conflicts(store: SQLiteStore, db: Path) -> None:
    async with open_sqlite(db) as other:
        assert await store.stream_version("tick-1") == await other.stream_version("tick-1") == 0
        results = await asyncio.gather(
            store.append("tick-1", ticks(1), expected_version=NO_STREAM),
            other.append("tick-1", ticks(1, 1), expected_version=NO_STREAM),
            return_exceptions=True,
        )
        wins = [r for r in results if isinstance(r, eventfold.AppendResult)]
        losses = [r for r in results if isinstance(r, eventfold.WrongExpectedVersion)]
        assert len(wins) == 1
        assert len(losses) == 1
        assert losses[0].actual == 1
        await other.append("tick-1", ticks(1, 5), expected_version=1)
        with pytest.raises(eventfold.WrongExpectedVersion):
            await store.append("tick-1", ticks(1, 6), expected_version=1)
        assert [e.version for e in await collect(store.read_stream("tick-1"))] == [1, 2]


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    import eventfold

    async def main() -> None:
        async with eventfold.connect(sys.argv[1]) as store:
            v = await store.stream_version("child-1")
            r = await store.append(
                "child-1",
                [eventfold.NewEvent({"n": i}, type="FromChild") for i in range(3)],
                expected_version=v,
            )
            print(r.position)

    asyncio.run(main())
    """
)


async def test_another_process_appends_are_seen(store: SQLiteStore, db: Path) -> None:
    await store.append("tick-1", ticks(2), expected_version=NO_STREAM)
    assert await store.head() == eventfold.Position(0, 2)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        f"sqlite:///{db}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await child.communicate()
    assert child.returncode == 0, err.decode()
    assert out.decode().strip() == "5"
    assert await store.head() == eventfold.Position(0, 5)
    assert await store.stream_version("child-1") == 3
    events = await collect(store.read_all(after="2"))
    assert [(e.stream_id, e.type, e.data) for e in events] == [
        ("child-1", "FromChild", {"n": i}) for i in range(3)
    ]
    result = await store.append("tick-1", [NewEvent(Tick(n=9))], expected_version=2)
    assert result.position.seq == 6


async def test_stores_opening_a_new_file_at_once_migrate_it_once(db: Path) -> None:
    stores = [open_sqlite(db) for _ in range(6)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        results = await asyncio.gather(
            *(s.append("tick-1", ticks(1), expected_version=ANY) for s in stores)
        )
        assert sorted(r.version for r in results) == [1, 2, 3, 4, 5, 6]
    finally:
        for s in stores:
            await s.close()
    with raw(db) as conn:
        numbers = [n for (n,) in conn.execute("SELECT number FROM eventfold_migrations")]
    assert numbers == list(range(1, len(MIGRATIONS) + 1))
