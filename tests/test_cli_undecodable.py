"""The CLI shows stored events that do not decode as their stored JSON, and refuses deep input."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import eventfold
from eventfold import NO_STREAM, NewEvent, TypeRegistry
from eventfold.cli import cli
from eventfold.store import SupportsCodec, capability

DEEP = 100_000
"""Deeper than any supported interpreter decodes (3.13 follows a few thousand levels)."""


def run(*args: str, input: str | None = None) -> Result:
    env: dict[str, str | None] = {"COLUMNS": "200", "EVENTFOLD_URL": None}
    return CliRunner().invoke(cli, list(args), input=input, env=env, catch_exceptions=False)


def nested_text(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


class _StoresRawFor:
    """Stands in for a codec's encoder: ``marker`` encodes as ``raw``, anything else as usual.

    How a payload too deep for any reader got into a store (written before the nesting
    limit, or by another producer): no interpreter could have encoded it through msgspec.
    """

    def __init__(self, encoder: Any, marker: object, raw: bytes) -> None:
        self._encoder, self._marker, self._raw = encoder, marker, raw

    def encode(self, value: Any) -> bytes:
        return self._raw if value is self._marker else bytes(self._encoder.encode(value))


@pytest.fixture
def url_with_a_deep_event(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A SQLite store holding, at deep-1@2, a payload nested deeper than a reader follows."""
    url = f"sqlite:///{tmp_path}/x.db"
    monkeypatch.setattr("eventfold._codec.nesting_depth_exceeds", lambda data: False)
    marker: dict[str, Any] = {}

    async def write() -> None:
        async with eventfold.connect(url, registry=TypeRegistry()) as store:
            codec: Any = capability(store, SupportsCodec).codec
            codec._encoder = _StoresRawFor(codec._encoder, marker, nested_text(DEEP).encode())
            await store.append(
                "deep-1",
                [NewEvent({"ok": True}, type="Deep"), NewEvent(marker, type="Deep")],
                expected_version=NO_STREAM,
            )

    asyncio.run(write())
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
