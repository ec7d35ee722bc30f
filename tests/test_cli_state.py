"""``eventfold state`` and ``eventfold snapshot``: a stream folded with the user's decider.

The stores are seeded through ``eventfold append`` with the example bank's and order's
event types (examples/ is on sys.path, see conftest.py), so ``--decider bank:account``
reads them back as typed events.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from eventfold.cli import cli
from eventfold.cli.decider_commands import AsOfParam, load_decider


@pytest.fixture(autouse=True)
def restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--decider`` puts the working directory on sys.path; undo that after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/x.db"


def run(*args: str) -> Result:
    environ: dict[str, str | None] = {"COLUMNS": "200", "EVENTFOLD_URL": None}
    return CliRunner().invoke(cli, list(args), env=environ, catch_exceptions=False)


def ok(*args: str) -> Result:
    result = run(*args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def assert_one_line_error(result: Result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def append(url: str, stream: str, type: str, data: dict[str, Any]) -> None:
    ok("--url", url, "append", stream, type, json.dumps(data))


def open_account(url: str, stream: str = "account-1", *deposits: int) -> None:
    append(url, stream, "bank.AccountOpened", {"owner": "ann", "overdraft_limit": 0})
    for amount in deposits:
        append(url, stream, "bank.Deposited", {"amount": amount})


def state_json(url: str, stream: str, *options: str, decider: str = "bank:account") -> Any:
    out = ok("--url", url, "state", stream, "--decider", decider, "--json", *options).stdout
    return json.loads(out)


# -- state ---------------------------------------------------------------------------------


def test_state_now(url: str) -> None:
    open_account(url, "account-1", 100, 50)
    out = ok("--url", url, "state", "account-1", "--decider", "bank:account").stdout
    first, *rest = out.splitlines()
    assert first == "account-1 at version 3 (3 events folded, no snapshot)"
    pretty = "\n".join(rest)
    assert "'balance': 150" in pretty
    assert "'owner': 'ann'" in pretty


def test_state_json(url: str) -> None:
    open_account(url, "account-1", 100, 50)
    assert state_json(url, "account-1") == {
        "stream_id": "account-1",
        "version": 3,
        "snapshot_version": 0,
        "replayed": 3,
        "state": {"opened": True, "owner": "ann", "balance": 150, "overdraft_limit": 0},
    }


def test_state_at_a_version(url: str) -> None:
    open_account(url, "account-1", 100, 50, 25)
    at_two = state_json(url, "account-1", "--at-version", "2")
    assert (at_two["version"], at_two["state"]["balance"]) == (2, 100)
    at_zero = state_json(url, "account-1", "--at-version", "0")
    assert (at_zero["version"], at_zero["state"]["opened"]) == (0, False)
    out = ok("--url", url, "state", "account-1", "--decider", "bank:account", "--at-version", "0")
    assert out.stdout.startswith("account-1 at version 0: no events, the decider's initial state")


def test_state_past_the_end_exits_2(url: str) -> None:
    open_account(url, "account-1", 100)
    result = run(
        "--url", url, "state", "account-1", "--decider", "bank:account", "--at-version", "9"
    )  # fmt: skip
    assert_one_line_error(result, 2, "has 2 events", "at_version=9 is past its end")


def test_state_as_of_a_time(url: str) -> None:
    open_account(url, "account-1", 100)
    time.sleep(0.02)
    between = dt.datetime.now(dt.UTC)
    time.sleep(0.02)
    append(url, "account-1", "bank.Deposited", {"amount": 50})

    then = state_json(url, "account-1", "--as-of", between.isoformat())
    assert (then["version"], then["state"]["balance"]) == (2, 100)
    # A time without an offset is UTC; any other offset means the same instant.
    naive = between.replace(tzinfo=None).isoformat()
    assert state_json(url, "account-1", "--as-of", naive) == then
    paris = between.astimezone(dt.timezone(dt.timedelta(hours=1))).isoformat()
    assert state_json(url, "account-1", "--as-of", paris) == then
    now = state_json(url, "account-1", "--as-of", "now")
    assert (now["version"], now["state"]["balance"]) == (3, 150)
    before = state_json(url, "account-1", "--as-of", "2000-01-01")
    assert before["version"] == 0

    text = ok(
        "--url", url, "state", "account-1", "--decider", "bank:account",
        "--as-of", between.isoformat(),
    ).stdout  # fmt: skip
    assert text.startswith(f"account-1 at version 2 as of {between.isoformat()} (")


def test_as_of_parsing() -> None:
    param = AsOfParam()
    utc = param.convert("2026-11-26T15:00:00", None, None)
    assert utc == dt.datetime(2026, 11, 26, 15, tzinfo=dt.UTC)
    assert param.convert("2026-11-26T16:00:00+01:00", None, None) == utc
    assert param.convert("2026-11-26T15:00:00Z", None, None) == utc
    now = param.convert(" NOW ", None, None)
    assert now.tzinfo is not None
    assert abs(dt.datetime.now(dt.UTC) - now) < dt.timedelta(seconds=5)


def test_bad_as_of_is_a_usage_error(url: str) -> None:
    result = run("--url", url, "state", "a-1", "--decider", "bank:account", "--as-of", "soon")
    assert result.exit_code == 2
    assert "'soon' is not a time" in result.stderr
    assert "no offset means UTC" in result.stderr


def test_at_version_and_as_of_together_is_a_usage_error(url: str) -> None:
    result = run(
        "--url", url, "state", "a-1", "--decider", "bank:account",
        "--at-version", "1", "--as-of", "now",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "give --at-version or --as-of, not both" in result.stderr


def test_state_of_an_empty_stream_is_the_initial_state(url: str) -> None:
    open_account(url)  # the store must exist: `state` never creates one
    record = state_json(url, "account-9")
    assert (record["version"], record["replayed"], record["state"]["balance"]) == (0, 0, 0)


# -- the decider reference -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "fragments"),
    [
        ("bank", ["is not MODULE:NAME", "e.g. --decider bank:account"]),
        (":account", ["is not MODULE:NAME"]),
        ("bank:", ["is not MODULE:NAME"]),
        ("no_such_module_xyz:account", ["no module named 'no_such_module_xyz'", "Python path"]),
        ("bank:accounts", ["module 'bank' has no attribute 'accounts'", "its deciders: account"]),
    ],
)
def test_bad_decider_reference_exits_2(url: str, reference: str, fragments: list[str]) -> None:
    result = run("--url", url, "state", "account-1", "--decider", reference)
    assert_one_line_error(result, 2, f"--decider {reference!r}", *fragments)


@pytest.mark.parametrize(
    ("reference", "kind"),
    [
        ("bank:evolve", "an object of type function"),
        ("bank:Deposit", "the class Deposit"),
        ("bank:__name__", "an object of type str"),
    ],
)
def test_not_a_decider_exits_2(url: str, reference: str, kind: str) -> None:
    result = run("--url", url, "state", "account-1", "--decider", reference)
    assert_one_line_error(
        result, 2, f"is {kind}, not an eventfold.Decider or an eventfold.Aggregate subclass"
    )


def test_decider_is_required(url: str) -> None:
    result = run("--url", url, "state", "account-1")
    assert result.exit_code == 2
    assert "Missing option '--decider'" in result.stderr


@pytest.fixture
def working_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh module name; the test writes ``tmp_path/<name>.py`` and runs from tmp_path."""
    name = f"cli_domain_{uuid.uuid4().hex[:10]}"
    monkeypatch.chdir(tmp_path)
    sys.path[:] = [p for p in sys.path if p not in ("", str(tmp_path))]
    yield name
    sys.modules.pop(name, None)


COUNTER = """
from dataclasses import dataclass

import eventfold


@dataclass(frozen=True)
class Count:
    ticks: int = 0
    total: int = 0


def evolve(state, event):
    return Count(state.ticks + 1, state.total + event["n"])


def decide(command, state):
    return []


counter = eventfold.Decider(initial_state=Count(), evolve=evolve, decide=decide)
not_a_decider = 42
"""


def test_decider_from_the_working_directory(tmp_path: Path, working_module: str) -> None:
    (tmp_path / f"{working_module}.py").write_text(textwrap.dedent(COUNTER))
    url = "sqlite:///x.db"  # relative: the working directory is tmp_path
    for n in (3, 4):
        append(url, "counter-1", "clitest.Ticked", {"n": n})
    record = state_json(url, "counter-1", decider=f"{working_module}:counter")
    assert record["state"] == {"ticks": 2, "total": 7}
    assert str(tmp_path) in sys.path
    result = run("--url", url, "state", "counter-1", "--decider", f"{working_module}:not_a_decider")
    assert_one_line_error(result, 2, "is an object of type int, not an eventfold.Decider")


def test_a_module_that_fails_to_import_exits_2(tmp_path: Path, working_module: str) -> None:
    (tmp_path / f"{working_module}.py").write_text("import no_such_dependency_xyz\n")
    result = run("--url", "memory://", "state", "s-1", "--decider", f"{working_module}:d")
    assert_one_line_error(result, 2, f"importing {working_module!r} failed", "no_such_dependency")
    (tmp_path / f"{working_module}.py").write_text("raise RuntimeError('boom')\n")
    sys.modules.pop(working_module, None)
    result = run("--url", "memory://", "state", "s-1", "--decider", f"{working_module}:d")
    assert_one_line_error(result, 2, "failed: RuntimeError: boom")


def place_and_ship(url: str, stream: str) -> None:
    placed = {"order_id": stream, "sku": "SKU-1", "quantity": 2, "unit_price_cents": 1250}
    append(url, stream, "orders.OrderPlaced", placed)
    append(url, stream, "orders.OrderShipped", {"carrier": "DHL"})


@pytest.mark.parametrize("reference", ["orders:Order", "orders:order"])
def test_an_aggregate_class_or_its_decider(url: str, reference: str) -> None:
    place_and_ship(url, "order-1")
    record = state_json(url, "order-1", decider=reference)
    assert record["state"] == {"status": "shipped", "total_cents": 2500, "refunded_cents": 0}
    text = ok("--url", url, "state", "order-1", "--decider", reference).stdout
    assert "'status': 'shipped'" in text


def test_load_decider_turns_an_aggregate_into_a_decider() -> None:
    decider = load_decider("orders:Order")
    assert decider.state_type == "Order"
    assert load_decider("bank:account").state_type == "Account"


# -- snapshot ------------------------------------------------------------------------------


def test_snapshot_then_state_starts_from_it(url: str) -> None:
    open_account(url, "account-1", 10, 20, 30, 40)
    out = ok("--url", url, "snapshot", "account-1", "--decider", "bank:account").stdout
    assert out.startswith(
        "snapshot of account-1 at version 5: state type Account, schema version 1"
    )
    assert state_json(url, "account-1") == {
        "stream_id": "account-1",
        "version": 5,
        "snapshot_version": 5,
        "replayed": 0,
        "state": {"opened": True, "owner": "ann", "balance": 100, "overdraft_limit": 0},
    }
    append(url, "account-1", "bank.Deposited", {"amount": 1})
    later = state_json(url, "account-1")
    assert (later["snapshot_version"], later["replayed"], later["state"]["balance"]) == (5, 1, 101)
    text = ok("--url", url, "state", "account-1", "--decider", "bank:account").stdout
    assert "(the snapshot at version 5, taken " in text
    assert "UTC, then 1 event folded)" in text
    # A load before the snapshot cannot use it.
    early = state_json(url, "account-1", "--at-version", "3")
    assert (early["snapshot_version"], early["replayed"]) == (0, 3)


def test_snapshot_json(url: str) -> None:
    open_account(url, "account-1", 10)
    record = json.loads(
        ok("--url", url, "snapshot", "account-1", "--decider", "bank:account", "--json").stdout
    )
    assert record.pop("bytes") > 0
    assert record == {
        "stream_id": "account-1",
        "taken": True,
        "version": 2,
        "state_type": "Account",
        "schema_version": 1,
    }


def test_snapshot_of_an_empty_stream_says_so(url: str) -> None:
    out = ok("--url", url, "snapshot", "account-0", "--decider", "bank:account").stdout
    assert out.strip() == "nothing to snapshot: stream 'account-0' has no events"
    record = json.loads(
        ok("--url", url, "snapshot", "account-0", "--decider", "bank:account", "--json").stdout
    )
    assert (record["taken"], record["version"], record["state_type"]) == (False, 0, None)


def test_snapshot_with_a_bad_decider_exits_2(url: str) -> None:
    result = run("--url", url, "snapshot", "account-1", "--decider", "bank:nope")
    assert_one_line_error(result, 2, "has no attribute 'nope'")


ORDER_V2 = """
from orders import Order

order_v2 = Order.decider(state_version=2)
"""


def test_state_never_writes_a_snapshot(url: str, tmp_path: Path, working_module: str) -> None:
    # A load that meets a snapshot of another schema version would replace it; `state`
    # is an inspection and must leave the application's snapshot alone.
    (tmp_path / f"{working_module}.py").write_text(ORDER_V2)
    place_and_ship(url, "order-1")
    ok("--url", url, "snapshot", "order-1", "--decider", "orders:Order")
    other = state_json(url, "order-1", decider=f"{working_module}:order_v2")
    assert (other["snapshot_version"], other["replayed"]) == (0, 2)
    assert other["state"]["status"] == "shipped"
    again = state_json(url, "order-1", decider="orders:Order")
    assert (again["snapshot_version"], again["replayed"]) == (2, 0)
