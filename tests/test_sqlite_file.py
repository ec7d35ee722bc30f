"""The SQLite store's file: deleted or replaced under an open store, and read-only opens."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import eventfold
from eventfold import ANY, NO_STREAM, NewEvent
from eventfold.backends.sqlite import SQLiteStore


def note(i: int) -> list[NewEvent]:
    return [NewEvent({"i": i}, type="T")]


def sqlite_store(path: Path, **options: bool) -> SQLiteStore:
    return SQLiteStore(str(path), **options)  # type: ignore[arg-type]


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{path}{suffix}")


# -- the file deleted or replaced while the store is open ------------------------------------


@pytest.mark.parametrize("inline_writes", [True, False])
async def test_appends_fail_once_the_file_is_deleted(tmp_path: Path, inline_writes: bool) -> None:
    db = tmp_path / "gone.db"
    async with sqlite_store(db, inline_writes=inline_writes) as store:
        await store.append("d-1", note(0), expected_version=NO_STREAM)
        remove_database(db)
        with pytest.raises(eventfold.StoreError, match="was deleted") as info:
            await store.append("d-1", note(1), expected_version=ANY)
        assert "not committed" in str(info.value)
        # A group of concurrent appends (queued, committed together) fails as a whole.
        results = await asyncio.gather(
            *(store.append(f"d-{i}", note(i), expected_version=ANY) for i in range(2, 12)),
            return_exceptions=True,
        )
        assert all(isinstance(r, eventfold.StoreError) for r in results), results
    assert not db.exists(), "nothing recreated the file"


async def test_appends_fail_once_the_file_is_replaced(tmp_path: Path) -> None:
    db, backup = tmp_path / "live.db", tmp_path / "backup.db"
    async with sqlite_store(db) as store:
        await store.append("r-1", note(0), expected_version=NO_STREAM)
    shutil.copy(db, backup)
    async with sqlite_store(db) as store:
        await store.append("r-1", note(1), expected_version=1)
        # An operator restores the backup over the live file (and drops its WAL, which
        # belongs to the file replaced).
        os.replace(backup, db)
        for suffix in ("-wal", "-shm"):
            os.remove(f"{db}{suffix}")
        with pytest.raises(eventfold.StoreError, match="was replaced"):
            await store.append("r-1", note(2), expected_version=ANY)
        with pytest.raises(eventfold.StoreError, match="was replaced"):
            await store.append("other-1", note(3), expected_version=ANY)
    async with sqlite_store(db) as again:
        # The restored file has what the backup had; the refused appends landed nowhere.
        assert [e.data["i"] async for e in again.read_all()] == [0]


async def test_a_store_reopened_on_a_new_file_writes_again(tmp_path: Path) -> None:
    db = tmp_path / "again.db"
    async with sqlite_store(db) as store:
        await store.append("a-1", note(0), expected_version=NO_STREAM)
        remove_database(db)
        with pytest.raises(eventfold.StoreError):
            await store.append("a-1", note(1), expected_version=ANY)
    async with sqlite_store(db) as store:
        result = await store.append("a-1", note(2), expected_version=NO_STREAM)
        assert (result.version, result.position.seq) == (1, 1)


# -- read-only opens -----------------------------------------------------------------------


async def test_read_only_never_creates_a_file(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    with pytest.raises(eventfold.StoreNotFound, match=r"no eventfold store at .*does not exist"):
        async with eventfold.connect(f"sqlite:///{missing}", read_only=True):
            pass
    assert not missing.exists()


async def test_read_only_leaves_another_applications_database_alone(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE users (id)")
        conn.commit()
    before = other.read_bytes()
    with pytest.raises(eventfold.StoreNotFound, match="no eventfold tables"):
        async with eventfold.connect(f"sqlite:///{other}", read_only=True):
            pass
    assert other.read_bytes() == before, "no tables added, not switched to WAL"
    not_sqlite = tmp_path / "notes.db"
    not_sqlite.write_text("not a database, but some text that is long enough " * 40)
    with pytest.raises(eventfold.StoreNotFound, match="not a SQLite database"):
        async with eventfold.connect(f"sqlite:///{not_sqlite}", read_only=True):
            pass


async def test_read_only_reads_and_refuses_writes(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    async with eventfold.connect(f"sqlite:///{db}") as store:
        await store.append("s-1", note(0), expected_version=NO_STREAM)
    async with eventfold.connect(f"sqlite:///{db}", read_only=True) as store:
        assert [e.data["i"] async for e in store.read_stream("s-1")] == [0]
        assert (await store.stats()).events == 1
        with pytest.raises(eventfold.StoreReadOnly, match="read-only"):
            await store.append("s-1", note(1), expected_version=ANY)
    async with eventfold.connect(f"sqlite:///{db}") as store:
        assert await store.stream_version("s-1") == 1


async def test_read_only_does_not_migrate_an_older_store(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    async with eventfold.connect(f"sqlite:///{db}") as store:
        await store.append("s-1", note(0), expected_version=NO_STREAM)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("DELETE FROM eventfold_migrations WHERE number >= 3")
        conn.commit()
    with pytest.raises(eventfold.StoreError, match="at migration 2, older"):
        async with eventfold.connect(f"sqlite:///{db}", read_only=True):
            pass
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT max(number) FROM eventfold_migrations").fetchone() == (2,)


@contextlib.contextmanager
def unwritable(directory: Path) -> Iterator[None]:
    """Make ``directory`` and its files unwritable, even for root (``chattr +i``)."""
    paths = [*directory.iterdir(), directory]
    if os.geteuid() != 0:
        for path in paths:
            path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            for path in paths:
                path.chmod(0o755 if path.is_dir() else 0o644)
        return
    # Root writes through any mode bits: only the immutable flag stops it. Where that is
    # unavailable (no chattr, a filesystem without the flag) the case cannot be made here;
    # CI's machine has it, so there it is a failure.
    problem = None
    if shutil.which("chattr") is None:
        problem = "running as root without chattr: cannot make a file read-only"
    else:
        made = subprocess.run(["chattr", "+i", *map(str, paths)], capture_output=True, text=True)
        if made.returncode != 0:
            problem = f"running as root and chattr +i is not allowed here: {made.stderr.strip()}"
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(problem, pytrace=False)
        pytest.skip(problem)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *map(str, paths)], check=True)


async def test_read_only_reads_a_file_in_an_unwritable_directory(tmp_path: Path) -> None:
    backup = tmp_path / "backup"
    backup.mkdir()
    db = backup / "s.db"
    async with eventfold.connect(f"sqlite:///{db}") as store:
        await store.append("s-1", note(0), expected_version=NO_STREAM)
    assert sorted(p.name for p in backup.iterdir()) == ["s.db"]
    with unwritable(backup):
        with pytest.raises(eventfold.ConfigurationError, match="may read and write"):
            async with eventfold.connect(f"sqlite:///{db}"):
                pass
        async with eventfold.connect(f"sqlite:///{db}", read_only=True) as store:
            assert [e.data["i"] async for e in store.read_stream("s-1")] == [0]
            assert (await store.head()).seq == 1
