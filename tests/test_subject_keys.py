"""Subject keys (crypto-shredding's key table) over each backend that keeps them: the
shipped suite, and what is particular to each backend."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

import eventfold
from eventfold.backends.postgres._keys import PostgresSubjectKeys
from eventfold.testing import SubjectKeysConformance
from eventfold.testing.subject_keys import keys_of

KEY_BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
"""The backends whose stores keep subject keys, each a parameter of `store_url`."""


@pytest.fixture(params=KEY_BACKENDS)
def store_url(request: pytest.FixtureRequest) -> str:
    """A URL to a fresh store of each backend in `KEY_BACKENDS` in turn."""
    if request.param == "memory":
        return "memory://"
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[eventfold.EventStore]:
    async with eventfold.connect(store_url) as store:
        yield store


class TestSubjectKeys(SubjectKeysConformance):
    """The shipped suite over `store`: each backend in turn."""


class TestMemorySubjectKeys(SubjectKeysConformance):
    """The shipped suite over the memory backend, but for what needs a second store
    object on the same database (a memory store's data is its object's alone)."""

    test_lookups_before_any_key_find_nothing = None  # type: ignore[assignment]
    test_another_store_object_sees_adds_and_forgets = None  # type: ignore[assignment]
    test_read_only_store_reads_and_refuses_writes = None  # type: ignore[assignment]
    test_keys_need_an_open_store_and_outlive_it = None  # type: ignore[assignment]
    # No transaction hooks on memory: nothing gives it a transaction to write keys in.
    test_add_in_commits_with_the_append = None  # type: ignore[assignment]
    test_add_in_rolls_back_with_a_failed_append = None  # type: ignore[assignment]
    test_add_in_does_not_bring_back_a_key_stored_with_an_event = None  # type: ignore[assignment]
    test_add_in_refuses_bad_input_and_stores_nothing = None  # type: ignore[assignment]

    @pytest.fixture
    async def store(self) -> AsyncIterator[eventfold.EventStore]:
        async with eventfold.connect("memory://") as store:
            yield store


async def test_memory_keys_need_an_open_store_and_refuse_writes_when_read_only() -> None:
    store = eventfold.connect("memory://")
    with pytest.raises(eventfold.StoreClosed):
        keys_of(store).current("ann")
    async with store:
        keys_of(store).add(b"k" * 16, "ann", b"m" * 32)
    with pytest.raises(eventfold.StoreClosed):
        keys_of(store).find([b"k" * 16])
    async with eventfold.connect("memory://", read_only=True) as reader:
        assert keys_of(reader).current("ann") is None
        with pytest.raises(eventfold.StoreReadOnly):
            keys_of(reader).add(b"k" * 16, "ann", b"m" * 32)
        with pytest.raises(eventfold.StoreReadOnly):
            keys_of(reader).forget("ann")


# -- SQLite ----------------------------------------------------------------------------


def _path(sqlite_url: str) -> str:
    return sqlite_url.removeprefix("sqlite:///")


def _tables(path: str) -> set[str]:
    # sqlite3's own context manager commits but does not close.
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}


async def test_sqlite_read_only_store_without_the_key_table_finds_nothing(
    sqlite_url: str,
) -> None:
    async with eventfold.connect(sqlite_url):
        pass
    path = _path(sqlite_url)
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE eventfold_subject_keys")
    conn.commit()
    conn.close()
    async with eventfold.connect(sqlite_url, read_only=True) as reader:
        keys = keys_of(reader)
        assert keys.find([b"k" * 16]) == {}
        assert keys.current("ann") is None
        with pytest.raises(eventfold.StoreReadOnly):
            keys.add(b"k" * 16, "ann", b"m" * 32)
    assert "eventfold_subject_keys" not in _tables(path)


async def test_sqlite_store_of_an_older_migration_gets_the_key_table(sqlite_url: str) -> None:
    async with eventfold.connect(sqlite_url):
        pass
    path = _path(sqlite_url)
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE eventfold_subject_keys")
    conn.execute("DELETE FROM eventfold_migrations WHERE number = 5")
    conn.commit()
    conn.close()
    async with eventfold.connect(sqlite_url) as store:
        keys_of(store).add(b"k" * 16, "ann", b"m" * 32)
        assert keys_of(store).current("ann") == (b"k" * 16, b"m" * 32)
    assert {"eventfold_subject_keys", "eventfold_subject_keys_by_subject"} <= _tables(path)


async def test_sqlite_forgotten_material_is_not_left_in_the_file(sqlite_url: str) -> None:
    secret = b"\x8f-forget-me-material-\xd1" * 2
    async with eventfold.connect(sqlite_url) as store:
        keys = keys_of(store)
        keys.add(b"k" * 16, "ann", secret)
        keys.add(b"j" * 16, "bob", b"kept-material-" * 2)
        assert keys.forget("ann") == 1
    # Closing checkpoints the WAL into the file and removes it.
    data = await asyncio.to_thread(Path(_path(sqlite_url)).read_bytes)
    assert b"kept-material-" in data
    assert secret not in data


# -- PostgreSQL -------------------------------------------------------------------------


def _key_connection(store: eventfold.EventStore) -> psycopg.Connection[tuple[object, ...]]:
    keys = keys_of(store)
    assert isinstance(keys, PostgresSubjectKeys)
    conn = keys._conn
    assert conn is not None
    return conn


@pytest.mark.postgres
async def test_postgres_read_only_store_without_the_key_table_finds_nothing(
    postgres_url: str,
) -> None:
    async with eventfold.connect(postgres_url) as store:
        schema = store.schema  # type: ignore[attr-defined]
        with psycopg.connect(postgres_url.partition("?")[0], autocommit=True) as admin:
            admin.execute(f'DROP TABLE "{schema}".subject_keys')
        # A write never passes for done without its table.
        with pytest.raises(eventfold.StoreError, match="subject_keys"):
            keys_of(store).add(b"k" * 16, "ann", b"m" * 32)
        assert keys_of(store).current("ann") is None
        async with eventfold.connect(postgres_url, read_only=True) as reader:
            keys = keys_of(reader)
            assert keys.find([b"k" * 16]) == {}
            assert keys.current("ann") is None
            with pytest.raises(eventfold.StoreReadOnly):
                keys.forget("ann")


@pytest.mark.postgres
async def test_postgres_key_connection_is_bounded_and_replaced_when_dropped(
    postgres_url: str,
) -> None:
    async with eventfold.connect(postgres_url) as store:
        keys = keys_of(store)
        keys.add(b"k" * 16, "ann", b"m" * 32)
        conn = _key_connection(store)
        assert conn.execute("SHOW statement_timeout").fetchone() == ("5s",)
        pid = conn.info.backend_pid
        with psycopg.connect(postgres_url.partition("?")[0], autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # The next call finds its connection dropped, opens another and goes on.
        assert keys.find([b"k" * 16]) == {b"k" * 16: b"m" * 32}
        assert _key_connection(store).info.backend_pid != pid
        keys.add(b"j" * 16, "ann", b"n" * 32)
        assert keys.current("ann") == (b"j" * 16, b"n" * 32)
    assert keys_of(store)._conn is None  # type: ignore[attr-defined]


async def test_sqlite_keys_are_not_added_inside_a_unit_of_work(sqlite_url: str) -> None:
    async with eventfold.connect(sqlite_url) as store:
        keys = keys_of(store)
        keys.add(b"k" * 16, "ann", b"m" * 32)
        async with store.unit_of_work() as uow:  # type: ignore[attr-defined]
            # Lookups read beside the unit; writes would wait for the unit's lock.
            assert keys.current("ann") == (b"k" * 16, b"m" * 32)
            with pytest.raises(eventfold.InvalidInput, match="before the unit begins"):
                keys.add(b"j" * 16, "ann", b"n" * 32)
            with pytest.raises(eventfold.InvalidInput, match="before the unit begins"):
                keys.forget("ann")
            assert uow is not None
        keys.add(b"j" * 16, "ann", b"n" * 32)
        assert keys.current("ann") == (b"j" * 16, b"n" * 32)
