"""Opening a store read-only (``connect(url, read_only=True)``) and the inspection
commands that use it: nothing created, migrated or written, on every backend."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import uuid
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

import eventfold
from eventfold import ANY, NO_STREAM, NewEvent
from eventfold.cli import cli
from eventfold.write import Snapshot, SnapshotStore


def note(i: int) -> list[NewEvent]:
    return [NewEvent({"i": i}, type="T")]


def schema_exists(url: str) -> bool:
    base, _, schema = url.rpartition("schema=")
    with psycopg.connect(base.rstrip("?&")) as conn:
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        return found.fetchone() is not None


def nothing_at(url: str) -> bool:
    """Whether no store exists where ``url`` points."""
    if url.startswith("sqlite"):
        return not Path(url.removeprefix("sqlite:///")).exists()
    return not schema_exists(url)


async def test_a_missing_store_is_not_created(sql_url: str) -> None:
    # memory:// keeps nothing, so a read-only one is simply an empty store.
    with pytest.raises(eventfold.StoreNotFound, match="no eventfold store at"):
        async with eventfold.connect(sql_url, read_only=True):
            pass
    assert await asyncio.to_thread(nothing_at, sql_url)


async def test_read_only_reads_and_refuses_every_write(store_url: str) -> None:
    async with eventfold.connect(store_url) as store:
        first = await store.append("s-1", note(0), expected_version=NO_STREAM)
    async with eventfold.connect(store_url, read_only=True) as store:
        if store_url != "memory://":  # a read-only memory store is a new, empty one
            assert [e.data async for e in store.read_stream("s-1")] == [{"i": 0}]
            assert await store.stream_version("s-1") == 1
        with pytest.raises(eventfold.StoreReadOnly, match="opened read-only"):
            await store.append("s-1", note(1), expected_version=ANY)
        snapshots = getattr(store, "snapshots", None)
        if isinstance(snapshots, SnapshotStore) and store_url != "memory://":
            snapshot = Snapshot("s-1", "S", 1, 1, b"{}", uuid.uuid4().bytes, 0, 0)
            with pytest.raises(eventfold.StoreReadOnly):
                await snapshots.save_snapshot(snapshot)
    if store_url != "memory://":
        async with eventfold.connect(store_url) as store:
            assert await store.stream_version("s-1") == 1
            assert first.version == 1


# -- the inspection commands ---------------------------------------------------------------


def run(*args: str) -> Result:
    environ: dict[str, str | None] = {"COLUMNS": "200", "EVENTFOLD_URL": None}
    return CliRunner().invoke(cli, list(args), env=environ, catch_exceptions=False)


def assert_error(result: Result, code: int, fragment: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: "), line
    assert fragment in line, line


@pytest.mark.parametrize(
    "command",
    [["info"], ["streams"], ["read", "order-1"], ["tail", "--from-start", "--count", "1"],
     ["state", "order-1", "--decider", "bank:account"]],
)  # fmt: skip
def test_inspection_of_a_mistyped_path_creates_nothing(tmp_path: Path, command: list[str]) -> None:
    typo = tmp_path / "typo.db"
    assert_error(run("--url", f"sqlite:///{typo}", *command), 4, "no eventfold store at")
    assert list(tmp_path.iterdir()) == []


def test_info_leaves_another_applications_database_alone(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE users (id)")
        conn.commit()
    before = other.read_bytes()
    assert_error(run("--url", f"sqlite:///{other}", "info"), 4, "holds no eventfold tables")
    assert other.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


@pytest.mark.parametrize("big", [str(2**63), "9" * 30])
def test_numbers_past_64_bits_on_the_command_line(tmp_path: Path, big: str) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    assert run("--url", url, "append", "s-1", "T", "{}").exit_code == 0
    forwards = run("--url", url, "read", "s-1", "--from-version", big, "--format", "jsonl")
    assert (forwards.exit_code, forwards.stdout) == (0, "")
    backwards = run(
        "--url", url, "read", "s-1", "--backwards", "--from-version", big, "--format", "jsonl"
    )
    assert [json.loads(line)["version"] for line in backwards.stdout.splitlines()] == [1]
    assert_error(run("--url", url, "tail", "--after", big), 2, "at most 9223372036854775807")
    state = run("--url", url, "state", "s-1", "--decider", "bank:account", "--at-version", big)
    assert_error(state, 2, "past its end")
