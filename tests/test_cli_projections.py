"""``eventfold projections | run | rebuild | parked | replay-parked`` over a SQLite file.

The application module is written into the test's directory (the working directory is
importable, as for ``--decider``); its events are appended through ``eventfold append``
with the example bank's event types.
"""

from __future__ import annotations

import json
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
