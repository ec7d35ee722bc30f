"""``eventfold schema``: check, publish, show and list, as CI and an operator use them.

The check scenarios run the real command in a child process per step, as CI would: each
step is a new version of the application's code under the same module and type names,
which one process could not import twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import eventfold
from eventfold.cli import cli

FIXTURES = Path(__file__).resolve().parent / "fixtures"
if str(FIXTURES) not in sys.path:
    sys.path.insert(0, str(FIXTURES))

import shop_today  # noqa: E402

MAIN = "from eventfold.cli import main; main()"
V1 = """
    import eventfold

    class Order(eventfold.Event):
        __event_type__ = "clitest.Order"
        order_id: str
        note: str
"""
V1_OPTIONAL_FIELD = (
    V1
    + """
        gift: bool = False
"""
)
V1_FIELD_REMOVED = """
    import eventfold

    class Order(eventfold.Event):
        __event_type__ = "clitest.Order"
        order_id: str
"""
V2_NO_UPCASTER = """
    import eventfold

    class Order(eventfold.Event):
        __event_type__ = "clitest.Order"
        __schema_version__ = 2
        order_id: str
"""
V2_WITH_UPCASTER = (
    V2_NO_UPCASTER
    + """
    @eventfold.default_registry.upcaster("clitest.Order", from_version=1)
    def drop_note(data):
        return {"order_id": data["order_id"]}
"""
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_url(request: pytest.FixtureRequest) -> str:
    """A store that outlives a process (so not ``memory://``)."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


class App:
    """An application module, ``cliapp.py`` in a directory of its own, and the CLI on it."""

    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url

    def write(self, source: str) -> None:
        (self.root / "cliapp.py").write_text(textwrap.dedent(source))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "200"}
        env.pop("EVENTFOLD_URL", None)
        return subprocess.run(
            [sys.executable, "-c", MAIN, "--url", self.url, "schema", *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture
def app(tmp_path: Path, shared_url: str) -> App:
    root = tmp_path / "app"
    root.mkdir()
    return App(root, shared_url)


def test_check_fails_on_a_removed_field_until_an_upcaster_is_registered(app: App) -> None:
    app.write(V1)
    published = app.run("publish", "--app", "cliapp")
    assert published.returncode == 0, published.stderr
    assert "recorded clitest.Order v1" in published.stdout

    app.write(V2_NO_UPCASTER)
    failed = app.run("check", "--app", "cliapp")
    assert failed.returncode == 1, failed.stdout
    assert "removed field" in failed.stdout
    assert "BREAKING" in failed.stdout
    assert failed.stderr.startswith("error: ")
    assert "no upcaster from clitest.Order v1" in failed.stderr
    assert "Traceback" not in failed.stderr
    refused = app.run("publish", "--app", "cliapp")
    assert refused.returncode == 1
    assert "incompatible" in refused.stderr

    app.write(V2_WITH_UPCASTER)
    passed = app.run("check", "--app", "cliapp")
    assert passed.returncode == 0, passed.stderr
    assert "removed field" in passed.stdout
    assert "ok: 1 type checked, 1 breaking change(s) covered by upcasters" in passed.stdout
    assert "recorded clitest.Order v2" in app.run("publish", "--app", "cliapp").stdout
    again = app.run("publish", "--app", "cliapp")
    assert again.returncode == 0
    assert "nothing to record" in again.stdout


def test_check_fails_a_breaking_change_that_kept_its_version(app: App) -> None:
    app.write(V1)
    assert app.run("publish", "--app", "cliapp").returncode == 0
    app.write(V1_FIELD_REMOVED)
    failed = app.run("check", "--app", "cliapp")
    assert failed.returncode == 1
    assert "breaking change at the same version 1" in failed.stderr
    assert "__schema_version__ = 2" in failed.stderr

    app.write(V1_OPTIONAL_FIELD)
    passed = app.run("check", "--app", "cliapp", "--json")
    assert passed.returncode == 0, passed.stderr
    report = json.loads(passed.stdout)
    assert report["ok"] is True
    [entry] = report["types"]
    assert entry["changes"] == [
        {
            "type": "clitest.Order",
            "field": "gift",
            "kind": "added optional field",
            "breaking": False,
            "detail": "boolean",
        }
    ]


# -- in process: the early shop's store, show, list, and bad input ---------------------------


def run(*args: str) -> Result:
    environ: dict[str, str | None] = {"COLUMNS": "200", "EVENTFOLD_URL": None}
    return CliRunner().invoke(cli, list(args), env=environ, catch_exceptions=False)


@pytest.fixture
def old_store(tmp_path: Path) -> str:
    path = tmp_path / "orders-v1.sqlite"
    shutil.copyfile(FIXTURES / "orders-v1.sqlite", path)
    return f"sqlite:///{path}"


def test_todays_shop_passes_the_check_against_the_early_shops_store(old_store: str) -> None:
    assert shop_today.OrderPlaced.__schema_version__ == 3
    result = run("--url", old_store, "schema", "check", "--app", "shop_today")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    out = result.stdout
    assert "customer -> customer_id" in out
    assert "added required field" in out  # currency, covered by the v2 -> v3 upcaster
    assert "added optional field" in out  # OrderShipped.tracking: compatible
    assert "renamed type" in out
    assert "shop.ItemAdded -> shop.LineItemAdded" in out
    assert "(from shop.ItemAdded)" not in out  # the renamed type's fields did not change
    assert "ok: 3 types checked, 2 breaking change(s) covered by upcasters" in out
    report = json.loads(
        run("--url", old_store, "schema", "check", "--app", "shop_today", "--json").stdout
    )
    assert [t["type"] for t in report["types"]] == [
        "shop.LineItemAdded",
        "shop.OrderPlaced",
        "shop.OrderShipped",
    ]
    assert [t["stored_version"] for t in report["types"]] == [1, 2, 1]


def test_show_prints_a_types_versions_and_schemas(old_store: str) -> None:
    result = run("--url", old_store, "schema", "show", "shop.OrderPlaced")
    assert result.exit_code == 0, result.stderr
    assert "v1 (revision 1)" in result.stdout
    assert "v2 (revision 2)" in result.stdout
    assert "shop 2.0.0" in result.stdout
    assert '"total_cents"' in result.stdout
    lines = [
        json.loads(line)
        for line in run(
            "--url", old_store, "schema", "show", "shop.OrderPlaced", "--json"
        ).stdout.splitlines()
    ]
    assert [(r["version"], r["revision"]) for r in lines] == [(1, 1), (2, 2)]
    assert "total" in lines[0]["schema"]["$defs"]["OrderPlaced"]["properties"]


def test_show_of_an_unknown_type_names_the_known_ones(old_store: str) -> None:
    result = run("--url", old_store, "schema", "show", "shop.Nope")
    assert result.exit_code == 2
    assert "no schema is recorded for type 'shop.Nope'" in result.stderr
    assert "shop.OrderPlaced" in result.stderr


def test_list_shows_every_recorded_type(old_store: str) -> None:
    result = run("--url", old_store, "schema", "list")
    assert result.exit_code == 0
    assert [line.split()[:3] for line in result.stdout.splitlines() if "OrderPlaced" in line] == [
        ["shop.OrderPlaced", "v2", "2"]
    ]
    assert "3 types" in result.stdout
    rows = [
        json.loads(line)
        for line in run("--url", old_store, "schema", "list", "--json").stdout.splitlines()
    ]
    assert [(r["type"], r["version"], r["records"]) for r in rows] == [
        ("shop.ItemAdded", 1, 1),
        ("shop.OrderPlaced", 2, 2),
        ("shop.OrderShipped", 1, 1),
    ]


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("no_such_module_here", "no module named 'no_such_module_here'"),
        ("shop_today:OrderPlaced", "is not an eventfold.TypeRegistry"),
        ("json", "no event types of package 'json' are registered"),
    ],
)
def test_a_bad_app_is_a_usage_error(tmp_path: Path, app: str, message: str) -> None:
    result = run("--url", f"sqlite:///{tmp_path}/x.db", "schema", "check", "--app", app)
    assert result.exit_code == 2
    assert message in result.stderr


def test_an_explicit_registry_can_be_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "regapp.py").write_text(
        textwrap.dedent("""
        import eventfold

        registry = eventfold.TypeRegistry()

        class Paid(eventfold.Event):
            __event_type__ = "regapp.Paid"
            amount: int

        registry.register(Paid)
    """)
    )
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/x.db"
    result = run("--url", url, "schema", "publish", "--app", "regapp:registry", "--json")
    assert result.exit_code == 0, result.stderr
    records: list[dict[str, Any]] = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["type"], r["version"]) for r in records] == [("regapp.Paid", 1)]

    async def types() -> list[str]:
        async with eventfold.connect(url) as store:
            return (await eventfold.schema.load(store)).types()

    assert asyncio.run(types()) == ["regapp.Paid"]


@pytest.mark.parametrize("command", ["check", "publish", "show", "list"])
def test_every_schema_command_has_help(command: str) -> None:
    result = run("schema", command, "--help")
    assert result.exit_code == 0
    summary = result.stdout.split("\n\n")[1].strip()
    assert len(summary) > 20, summary


def test_append_of_raw_json_is_checked_against_the_stored_schema(app: App) -> None:
    """A producer without the Python class (the CLI here) is held to the recorded schema."""
    app.write(V1)
    published = app.run("publish", "--app", "cliapp")
    assert published.returncode == 0, published.stderr
    bad = run("--url", app.url, "append", "order-1", "clitest.Order", '{"order_id": 7}')
    assert bad.exit_code == 2
    assert "order_id" in bad.stderr
    assert "note" in bad.stderr  # every violation is listed, the missing field too
    good = run(
        "--url", app.url, "append", "order-1", "clitest.Order", '{"order_id": "7", "note": "x"}'
    )
    assert good.exit_code == 0, good.stderr
    assert "version 1" in good.stdout
