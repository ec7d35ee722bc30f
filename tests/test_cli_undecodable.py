"""The CLI shows stored events that do not decode as their stored JSON, and refuses deep input."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import eventfold
from eventfold import NO_STREAM, NewEvent, TypeRegistry
from eventfold.cli import cli

DEEP = 3000


def run(*args: str, input: str | None = None) -> Result:
    env: dict[str, str | None] = {"COLUMNS": "200", "EVENTFOLD_URL": None}
    return CliRunner().invoke(cli, list(args), input=input, env=env, catch_exceptions=False)


def nested_text(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


@pytest.fixture
def url_with_a_deep_event(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A SQLite store holding, at deep-1@2, a payload stored before the nesting limit."""
    url = f"sqlite:///{tmp_path}/x.db"
    monkeypatch.setattr("eventfold.codec.nesting_depth_exceeds", lambda data: False)
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(DEEP - 1):
        inner["a"] = {}
        inner = inner["a"]

    async def write() -> None:
        async with eventfold.connect(url, registry=TypeRegistry()) as store:
            await store.append(
                "deep-1",
                [NewEvent({"ok": True}, type="Deep"), NewEvent(deep, type="Deep")],
                expected_version=NO_STREAM,
            )

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(DEEP * 4)
    try:
        asyncio.run(write())
    finally:
        sys.setrecursionlimit(limit)
    monkeypatch.undo()
    return url


def test_read_shows_an_undecodable_event_as_stored_json(url_with_a_deep_event: str) -> None:
    url = url_with_a_deep_event
    table = run("--url", url, "read", "deep-1")
    assert table.exit_code == 0, table.output
    assert '{"ok":true}' in table.stdout
    assert 'undecodable: {"a":{"a":' in table.stdout
    assert "warning: stored event at deep-1@2" in table.stderr
    assert "nested too deeply" in table.stderr

    lines = run("--url", url, "read", "deep-1", "--format", "jsonl")
    assert lines.exit_code == 0, lines.output
    first, second = (json.loads(line) for line in lines.stdout.splitlines())
    assert first["data"] == {"ok": True}
    assert second["data"] is None
    assert second["raw_data"].startswith('{"a":{"a":')
    assert second["raw_data"].count("{") == DEEP
    assert "deep-1@2" in second["undecodable"]


def test_tail_shows_an_undecodable_event_and_goes_on(url_with_a_deep_event: str) -> None:
    url = url_with_a_deep_event
    result = run("--url", url, "tail", "--from-start", "--count", "2", "--interval", "0.01")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert "deep-1@2" in lines[1]
    assert 'undecodable: {"a":' in lines[1]
    assert "warning: stored event at deep-1@2" in result.stderr


@pytest.mark.parametrize("levels", [101, 990, 5000])
def test_append_refuses_deep_json_with_one_error_line(tmp_path: Path, levels: int) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    result = run("--url", url, "append", "deep-2", "T", "-", input=nested_text(levels))
    assert result.exit_code != 0
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert "100 levels" in line
    assert "Traceback" not in result.output
    # Nothing stored: either the store was never opened or its stream is empty.
    read = run("--url", url, "read", "deep-2")
    assert "no events" in read.stdout or "no eventfold store" in read.stderr, read.output
