"""``eventfold relay [status | parked | replay]`` over a SQLite file, with the in-process
sink (the application module decides which streams it refuses)."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from eventfold import ANY, NewEvent, connect
from eventfold.cli import cli

APP = """
from eventfold.relay import InProcessSink, Relay, RelayOptions

REFUSE = {refuse!r}
SENT = []

class Sink(InProcessSink):
    async def send(self, message):
        result = await super().send(message)
        SENT.append(message)
        return result

def relays(store):
    sink = Sink(reject=lambda m: "refused" if m.key == REFUSE else None)
    options = RelayOptions(retries=0, checkpoint_interval=0.01, poll_interval=0.02)
    return [
        Relay(store, sink, destination="orders", categories=["order"], options=options),
        Relay(store, sink, destination="audit", options=options),
    ]

not_a_function = 42
"""


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [m for m in sys.modules if m.startswith("relay_app")]:
        del sys.modules[name]


def write_app(tmp_path: Path, refuse: str | None) -> None:
    for name in [m for m in sys.modules if m.startswith("relay_app")]:
        del sys.modules[name]
    (tmp_path / "relay_app.py").write_text(textwrap.dedent(APP).format(refuse=refuse))


def run(url: str, *args: str) -> Result:
    environ: dict[str, str | None] = {"COLUMNS": "200", "EVENTFOLD_URL": None}
    return CliRunner().invoke(cli, ["--url", url, *args], env=environ, catch_exceptions=False)


def ok(url: str, *args: str) -> Result:
    result = run(url, *args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def statuses(url: str) -> dict[str, dict[str, Any]]:
    lines = ok(url, "relay", "status", "--app", "relay_app", "--json").stdout.splitlines()
    return {row["destination"]: row for row in map(json.loads, lines)}


def append(url: str, stream: str, n: int) -> None:
    async def go() -> None:
        async with connect(url) as store:
            events = [NewEvent({"i": i}, type="Placed") for i in range(n)]
            await store.append(stream, events, expected_version=ANY)

    asyncio.run(go())


def test_run_status_parked_and_replay(sqlite_url: str, tmp_path: Path) -> None:
    write_app(tmp_path, refuse="order-2")
    append(sqlite_url, "order-1", 3)
    append(sqlite_url, "order-2", 2)
    append(sqlite_url, "invoice-1", 1)
    before = statuses(sqlite_url)
    assert before["orders"]["lag_events"] == 5
    assert before["audit"]["lag_events"] == 6
    assert before["orders"]["outbox_lag"] == 0  # the store keeps an outbox; nothing in it
    result = ok(sqlite_url, "relay", "--app", "relay_app", "--until-caught-up")
    assert "orders" in result.stdout
    after = statuses(sqlite_url)
    assert after["orders"]["lag_events"] == 0
    assert after["orders"]["parked"] == 2
    assert after["orders"]["oldest_parked_seconds"] is not None
    assert after["audit"]["parked"] == 2
    parked = ok(sqlite_url, "relay", "parked", "--app", "relay_app", "--json").stdout
    rows = [json.loads(line) for line in parked.splitlines()]
    assert [(r["destination"], r["stream_id"]) for r in rows] == [("orders", "order-2")] * 2 + [
        ("audit", "order-2")
    ] * 2
    table = ok(sqlite_url, "relay", "parked", "--app", "relay_app", "--destination", "orders")
    assert "refused" in table.stdout
    # Still refused: the replay says so and exits 1; the stream stays parked.
    failing = run(sqlite_url, "relay", "replay", "--app", "relay_app", "--destination", "orders")
    assert failing.exit_code == 1
    assert "still failing 1" in failing.stdout
    write_app(tmp_path, refuse=None)
    done = ok(sqlite_url, "relay", "replay", "--app", "relay_app", "--stream", "order-2")
    assert "orders: replayed 2, still failing 0" in done.stdout
    assert "audit: replayed 2, still failing 0" in done.stdout
    import relay_app  # type: ignore[import-not-found]

    versions = [m.headers["Eventfold-Stream-Version"] for m in relay_app.SENT]
    assert versions == ["1", "2", "1", "2"]
    assert all(r["parked"] == 0 for r in statuses(sqlite_url).values())


def test_bad_input_names_what_is_wrong(sqlite_url: str, tmp_path: Path) -> None:
    write_app(tmp_path, refuse=None)
    unknown = run(sqlite_url, "relay", "status", "--app", "relay_app", "--destination", "nope")
    assert unknown.exit_code == 2
    assert "no relay for destination 'nope'; it has: audit, orders" in unknown.stderr
    not_callable = run(sqlite_url, "relay", "status", "--app", "relay_app:not_a_function")
    assert not_callable.exit_code == 2
    assert "not a function that takes the store" in not_callable.stderr
    missing = run(sqlite_url, "relay", "status")
    assert missing.exit_code == 2
    assert "--app MODULE[:NAME]" in missing.stderr
    no_stream = run(sqlite_url, "relay", "replay", "--app", "relay_app", "--stream", "x-1")
    assert no_stream.exit_code == 2
    assert "no parked message of stream 'x-1'" in no_stream.stderr
