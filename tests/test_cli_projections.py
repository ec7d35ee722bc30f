"""``eventfold projections | run | rebuild | parked | replay-parked`` over a SQLite file.

The application module is written into the test's directory (the working directory is
importable, as for ``--decider``); its events are appended through ``eventfold append``
with the example bank's event types.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from eventfold.cli import cli

APP = """
import msgspec
from eventfold.projections import DocumentProjection, PoisonPolicy
import bank

VERSION = {version}
FAIL_ON = {fail_on!r}


class Balance(msgspec.Struct):
    balance: int = 0
    deposits: int = 0


balances = DocumentProjection(
    "balances",
    document=Balance,
    version=VERSION,
    poison=PoisonPolicy(action="park", retries=0, backoff=0.0),
)


@balances.on(bank.Deposited)
def deposited(doc, event):
    if event.data.amount == FAIL_ON:
        raise ValueError("amounts of " + str(FAIL_ON) + " are refused")
    return Balance(doc.balance + event.data.amount, doc.deposits + 1)
"""


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [m for m in sys.modules if m.startswith("balances_app")]:
        del sys.modules[name]


def write_app(tmp_path: Path, module: str, *, version: int = 1, fail_on: int | None = None) -> str:
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(APP).format(version=version, fail_on=fail_on)
    )
    return module


def run(url: str, *args: str) -> Result:
    environ: dict[str, str | None] = {"COLUMNS": "200", "EVENTFOLD_URL": None}
    return CliRunner().invoke(cli, ["--url", url, *args], env=environ, catch_exceptions=False)


def ok(url: str, *args: str) -> Result:
    result = run(url, *args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def status(url: str, app: str) -> dict[str, Any]:
    (line,) = ok(url, "projections", "--app", app, "--json").stdout.strip().splitlines()
    found: dict[str, Any] = json.loads(line)
    return found


def test_run_rebuild_and_parked_events_from_the_command_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    ok(url, "append", "account-1", "bank.AccountOpened", '{"owner": "ann"}')
    for amount in (5, 7, 13):
        ok(url, "append", "account-1", "bank.Deposited", json.dumps({"amount": amount}))

    app = write_app(tmp_path, "balances_app1", fail_on=7)
    before = status(url, app)
    # Lag counts the events it handles: the three deposits, not the opening.
    assert (before["state"], before["lag_events"]) == ("new", 3)

    ran = ok(url, "run", "--app", app, "--until-caught-up")
    assert "balances" in ran.stdout
    after = status(url, app)
    assert (after["state"], after["lag_events"], after["parked"]) == ("active", 0, 1)

    parked = ok(url, "parked", "balances", "--app", app, "--json").stdout.strip().splitlines()
    (row,) = (json.loads(line) for line in parked)
    assert row["stream_id"] == "account-1"
    assert "amounts of 7 are refused" in row["error"]
    table = ok(url, "parked", "balances", "--app", app).stdout
    assert "account-1" in table

    # Still failing: it stays parked and the command says so with a non-zero exit.
    failing = run(url, "replay-parked", "balances", "--app", app)
    assert failing.exit_code == 1
    assert "still failing 1" in failing.stdout

    fixed = write_app(tmp_path, "balances_app2")
    replayed = ok(url, "replay-parked", "balances", "--app", fixed)
    assert "replayed 1, still failing 0" in replayed.stdout
    assert status(url, fixed)["parked"] == 0

    # A new version builds beside the old one and takes over.
    v2 = write_app(tmp_path, "balances_app3", version=2)
    rebuilt = ok(url, "rebuild", "balances", "--app", v2)
    assert "balances v2 is active" in rebuilt.stdout
    now = status(url, v2)
    assert (now["version"], now["state"], now["active_version"]) == (2, "active", 2)

    human = ok(url, "projections", "--app", v2).stdout
    assert "balances" in human
    assert "active" in human


def test_an_app_without_projections_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty_app.py").write_text("x = 1\n")
    result = run(f"sqlite:///{tmp_path}/e.db", "projections", "--app", "empty_app")
    assert result.exit_code == 2
    assert "defines no projection" in result.stderr


def test_an_unknown_projection_name_lists_the_known_ones(tmp_path: Path) -> None:
    app = write_app(tmp_path, "balances_app4")
    result = run(f"sqlite:///{tmp_path}/e.db", "rebuild", "nope", "--app", app)
    assert result.exit_code == 2
    assert "no projection named 'nope'" in result.stderr
    assert "balances" in result.stderr


STRICT_APP = """
from eventfold.projections import DocumentProjection

strict = DocumentProjection("strict", document=dict)  # the default policy: stop
fine = DocumentProjection("fine", document=dict)


@strict.on("T")
def refuse(doc, event):
    raise ValueError("poison")


@fine.on("T")
def count(doc, event):
    return {"n": doc.get("n", 0) + 1}
"""


def test_until_caught_up_exits_1_once_a_projection_has_stopped(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    (tmp_path / "strict_app.py").write_text(STRICT_APP)
    ok(url, "append", "t-1", "T", "{}")
    result = run(url, "run", "--app", "strict_app", "--until-caught-up")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "ValueError: poison" in result.stderr
    assert "eventfold run" in result.stderr
    assert "eventfold replay-parked" in result.stderr
    assert "daemon.resume" not in result.stderr
    # The table still shows both: the other projection ran to the head.
    assert "failed" in result.stdout
    assert "active" in result.stdout
    assert status(url, "strict_app:fine")["lag_events"] == 0


PARK_APP = """
import eventfold
from eventfold.projections import DocumentProjection, PoisonPolicy


class Placed(eventfold.Event):
    __event_type__ = "{type}"
    order_id: str


parkme = DocumentProjection(
    "parkme", document=dict, partitions={partitions}, poison=PoisonPolicy(action="{action}")
)


@parkme.on(Placed)
def placed(doc, event):
    return {{"id": event.data.order_id}}
"""


APPEND = """
import asyncio, json, sys, eventfold
async def main():
    async with eventfold.connect(sys.argv[1]) as store:
        for i, order_id in enumerate(json.loads(sys.argv[3])):
            event = eventfold.NewEvent({"order_id": order_id}, type=sys.argv[2])
            await store.append(f"order-{i}", [event], expected_version=0)
asyncio.run(main())
"""


def append_elsewhere(url: str, type: str, order_ids: list[object]) -> None:
    """Append as another producer would: a process that has not imported the class."""
    subprocess.run([sys.executable, "-c", APPEND, url, type, json.dumps(order_ids)], check=True)


@pytest.mark.parametrize("partitions", [1, 3])
def test_an_event_that_does_not_decode_is_parked_and_status_still_shows(
    tmp_path: Path, partitions: int
) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    app, type = f"park_app{partitions}", f"shop{partitions}.Placed"
    (tmp_path / f"{app}.py").write_text(
        PARK_APP.format(partitions=partitions, action="park", type=type)
    )
    # order-1's order_id is not a str: no schema was published to refuse it.
    append_elsewhere(url, type, ["a", 1, *(str(i) for i in range(2, 8))])

    ok(url, "run", "--app", app, "--until-caught-up")
    now = status(url, app)
    assert (now["state"], now["lag_events"], now["parked"]) == ("active", 0, 1)
    (line,) = ok(url, "parked", "parkme", "--app", app, "--json").stdout.strip().splitlines()
    parked = json.loads(line)
    assert (parked["position"], parked["stream_id"], parked["type"]) == (
        "2",
        "order-1",
        type,
    )
    assert "order_id" in parked["error"]

    still = run(url, "replay-parked", "parkme", "--app", app)
    assert still.exit_code == 1
    assert "does not decode" in still.stderr


def test_a_stop_policy_stops_on_an_event_that_does_not_decode(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    type = "shop_stop.Placed"
    (tmp_path / "stop_app.py").write_text(PARK_APP.format(partitions=1, action="stop", type=type))
    append_elsewhere(url, type, ["a", 1])
    result = run(url, "run", "--app", "stop_app", "--until-caught-up")
    assert result.exit_code == 1
    assert f"cannot read the {type} event at position 2" in result.stderr
    now = status(url, "stop_app")
    assert (now["state"], now["position"], now["parked"]) == ("failed", "1", 0)


def test_replaying_a_position_that_is_not_parked_is_an_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    app = write_app(tmp_path, "balances_app5")
    result = run(url, "replay-parked", "balances", "--app", app, "--position", "99")
    assert result.exit_code == 2
    assert "no parked event at position 99" in result.stderr


def test_two_projections_of_one_name_are_refused_by_every_command(tmp_path: Path) -> None:
    (tmp_path / "twins_app.py").write_text(
        "from eventfold.projections import DocumentProjection\n"
        "a = DocumentProjection('twin', document=dict)\n"
        "b = DocumentProjection('twin', document=dict)\n"
        "for p in (a, b):\n"
        "    p.on('T')(lambda doc, event: doc)\n"
    )
    url = f"sqlite:///{tmp_path}/e.db"
    for command in (["projections"], ["run", "--until-caught-up"]):
        result = run(url, *command, "--app", "twins_app")
        assert result.exit_code == 2, command
        assert "two projections are named 'twin'" in result.stderr


def test_the_status_table_keeps_names_and_positions_whole_at_80_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    (tmp_path / "wide_app.py").write_text(
        "from eventfold.projections import DocumentProjection\n"
        "order_summaries_by_day = DocumentProjection('order_summaries_by_day', document=dict)\n"
        "order_summaries_by_day.on('T')(lambda doc, event: doc)\n"
    )
    for _ in range(3):
        ok(url, "append", "t-1", "T", "{}")
    environ: dict[str, str | None] = {"COLUMNS": "80", "EVENTFOLD_URL": None}
    result = CliRunner().invoke(
        cli, ["--url", url, "projections", "--app", "wide_app"], env=environ
    )
    assert result.exit_code == 0
    assert "order_summaries_by_day" in result.stdout
    assert "…" not in result.stdout
