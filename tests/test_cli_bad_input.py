"""Every command, given bad input or user code that raises, says so on one ``error:`` line,
exits non-zero, prints no traceback, and stores nothing.

The cases run against one seeded SQLite store; user modules with bad deciders, transform
functions and projections are written into the working directory, as a user would.
"""

from __future__ import annotations

import asyncio
import re
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import click
import pytest
from click.testing import CliRunner

import eventfold
from eventfold.cli import cli

EVENT_ID = uuid.UUID("6d1c7d2c-61c3-4b7e-9a3e-6c1f1b7e1d11")

USER = """
import eventfold


class Weird:
    pass


def boom(event):
    raise RuntimeError("boom in fn")


def lazy_boom(event):
    yield event
    raise RuntimeError("late boom")


def gives_int(event):
    return 42


not_callable = 3
unencodable = eventfold.Decider(
    initial_state=Weird(), evolve=lambda s, e: Weird(), decide=lambda c, s: []
)
bad_evolve = eventfold.Decider(initial_state={}, evolve=lambda s, e: {}[0], decide=lambda c, s: [])
counter = eventfold.Decider(initial_state=0, evolve=lambda s, e: s + 1, decide=lambda c, s: [])
"""

APP = """
from eventfold.projections import DocumentProjection

docs = DocumentProjection("docs", document=dict)


@docs.on("badin.Noted")
def noted(doc, event):
    return doc
"""

STRICT = """
from eventfold.projections import DocumentProjection

strict = DocumentProjection("strict", document=dict)  # the default poison policy: stop


@strict.on("badin.Noted")
def noted(doc, event):
    raise ValueError("poison")
"""

MODULES = {
    "badin_user": USER,
    "badin_app": APP,
    "badin_strict": STRICT,
    "badin_raises": 'raise RuntimeError("at import")\n',
}


class Case(NamedTuple):
    args: list[str]
    fragment: str
    input: bytes | None = None


def transform(fn: str, fragment: str, *target: str) -> Case:
    """``transform order-1 --fn badin_user:FN``, to order-1.v2 unless ``target`` says."""
    to = target or ("--to", "order-1.v2")
    return Case(["transform", "order-1", "--fn", f"badin_user:{fn}", *to], fragment)


UTF8_BAD = '{"a": "\udcff"}'  # how Python hands over an argument holding the byte 0xff

CASES: dict[str, list[Case]] = {
    "info": [
        Case(["--url", "mongodb://x/db", "info"], "unknown store URL scheme 'mongodb'"),
        Case(["--url", "sqlite:///no/such/dir/x.db", "info"], "no eventfold store at"),
    ],
    "streams": [
        Case(["streams", "--limit", "0"], "0 is not in the range x>=1"),
        Case(["streams", "--limit", "many"], "'many' is not a valid integer"),
    ],
    "read": [
        Case(["read", "order-1", "--limit", "0"], "0 is not in the range x>=1"),
        Case(["read", "order-1", "--from-version", "0"], "0 is not in the range x>=1"),
        Case(["read", ""], "must not be empty"),
        Case(["read", "order-1", "--format", "xml"], "'xml' is not one of"),
        Case(["read"], "Missing argument 'STREAM'"),
    ],
    "tail": [
        Case(["tail", "--after", "12:ab", "--count", "1"], "invalid position '12:ab'"),
        Case(["tail", "--after", "1", "--from-start"], "--after or --from-start, not both"),
        Case(["tail", "--count", "0"], "0 is not in the range x>=1"),
        Case(["tail", "--interval", "0"], "0 is not in the range x>=0.01"),
        Case(["tail", "--after", "9" * 23, "--count", "1"], "at most 9223372036854775807"),
        Case(["tail", "--after", "1:2", "--count", "1"], "'tx:seq' is a PostgreSQL store's"),
    ],
    "append": [
        Case(["append", "u-1", "T", UTF8_BAD], "the JSON argument is not valid UTF-8 (byte 0xff"),
        Case(["append", "u-1", "T", "-"], "is not valid UTF-8", b'{"a": "\xff"}'),
        Case(["append", "u-1", "T", "{sku: 1}"], "the JSON argument is not valid JSON"),
        Case(
            ["append", "u-1", "T", "-"],
            "more than 100 levels deep",
            b'{"a":' * 150 + b"1" + b"}" * 150,
        ),
        Case(
            ["--url", "sqlite:///no/such/dir/x.db", "append", "u-1", "T", "{}"],
            "check that the directory exists",
        ),
        Case(["append", "u-1", "T", "null"], "must be a JSON object, got a JSON null;"),
        Case(["append", "u-1", "T", '"x"'], "must be a JSON object, got a JSON string;"),
        Case(["append", "u-1", "T", "[1]"], "must be a JSON object, got a JSON array;"),
        Case(["append", "u-1", "T", "1.5"], "must be a JSON object, got a JSON number;"),
        Case(["append", "u-1", "T", "true"], "must be a JSON object, got a JSON boolean;"),
        Case(["append", "u-1", "", "{}"], "TYPE is empty; name the event's type"),
        Case(["append", "$schema-T", "T", "{}"], "stream '$schema-T' starts with $"),
        Case(["append", "u-1", "$SchemaRegistered", "{}"], "pass --force-system"),
        Case(["append", "u-1", "T", "{}", "--metadata", "[]"], "--metadata must be a JSON"),
        Case(["append", "u-1", "T", "{}", "--expected-version", "soon"], "'soon' is not an"),
        Case(["append", "u-1", "T", "{}", "--event-id", "nope"], "'nope' is not a valid UUID"),
        Case(["append", "order-1", "T", "{}", "--expected-version", "0"], "expected 0"),
        Case(["append", "a\nb", "T", "{}"], "invalid stream id"),
        Case(
            ["append", "order-1", "T", '{"other": 1}', "--event-id", str(EVENT_ID)],
            "other content",
        ),
    ],
    "state": [
        Case(["state", "order-1", "--decider", "badin_none:d"], "no module named 'badin_none'"),
        Case(["state", "order-1", "--decider", "badin_user.py:bad_evolve"], "drop .py"),
        Case(["state", "order-1", "--decider", "badin_user"], "is not MODULE:NAME"),
        Case(["state", "order-1", "--decider", "badin_user:not_callable"], "not an eventfold"),
        Case(["state", "order-1", "--decider", "badin_user:nosuch"], "no attribute 'nosuch'"),
        Case(
            ["state", "order-1", "--decider", "badin_user:bad_evolve"],
            "the decider's evolve raised KeyError folding stream 'order-1': 0",
        ),
        Case(["state", "order-1", "--decider", "badin_raises:d"], "RuntimeError: at import"),
        Case(
            ["state", "order-1", "--decider", "badin_user:counter", "--at-version", "9"],
            "past its end",
        ),
        Case(
            ["state", "order-1", "--decider", "badin_user:counter", "--as-of", "soon"],
            "'soon' is not a time",
        ),
        Case(["state", "order-1"], "Missing option '--decider'"),
    ],
    "snapshot": [
        Case(
            ["snapshot", "order-1", "--decider", "badin_user:unencodable"],
            "(from --decider badin_user:unencodable) cannot be encoded for a snapshot: Encoding "
            "objects of type Weird is unsupported",
        ),
        Case(
            ["snapshot", "order-1", "--decider", "badin_user:bad_evolve"],
            "the decider's evolve raised KeyError",
        ),
        Case(["snapshot", "order-1", "--decider", "badin_none:d"], "no module named"),
    ],
    "schema check": [
        Case(["schema", "check", "--app", "badin_none"], "no module named 'badin_none'"),
        Case(["schema", "check", "--app", "badin_user:nosuch"], "no attribute 'nosuch'"),
        Case(["schema", "check", "--app", "badin_user:not_callable"], "not an eventfold.Type"),
        Case(["schema", "check", "--app", "badin_user"], "no event types of package"),
    ],
    "schema publish": [
        Case(["schema", "publish", "--app", "badin_raises"], "RuntimeError: at import"),
        Case(["schema", "publish", "--app", "badin_app.py"], "drop .py"),
    ],
    "schema show": [
        Case(["schema", "show", "NoSuch"], "no schema is recorded for type 'NoSuch'"),
    ],
    "schema list": [
        Case(["--url", "mongodb://x/db", "schema", "list"], "unknown store URL scheme"),
    ],
    "transform": [
        transform(
            "boom",
            "the transform function badin_user:boom raised RuntimeError at order-1@1: boom in fn",
        ),
        transform("lazy_boom", "raised RuntimeError at order-1@1: late boom"),
        transform("gives_int", "the transform function returned int for order-1@1"),
        transform(
            "boom",
            "--to 'order-1' is the source stream; a transformation writes a new stream",
            "--to",
            "order-1",
        ),
        transform("boom", "--suffix is empty", "--suffix", ""),
        Case(["transform", "order-1", "--fn", "badin_user.py:boom", "--to", "x"], "drop .py"),
        Case(["transform", "order-1", "--fn", "badin_user:not_callable", "--to", "x"], "not a"),
        Case(["transform", "order-9", "--fn", "badin_user:boom", "--to", "x"], "has no events"),
        Case(["transform", "--fn", "badin_user:boom", "--to", "x"], "SOURCE stream or"),
    ],
    "projections": [
        Case(["projections", "--app", "badin_none"], "no module named 'badin_none'"),
        Case(["projections", "--app", "badin_user"], "defines no projection"),
        Case(["projections", "--app", "badin_app:nosuch"], "no attribute 'nosuch'"),
    ],
    "run": [
        Case(["run", "--app", "badin_app", "--only", "nosuch"], "no projection named 'nosuch'"),
        Case(["run", "--app", "badin_app", "--batch-size", "0"], "0 is not in the range"),
        Case(["run", "--app", "badin_raises"], "RuntimeError: at import"),
        Case(["run", "--app", "badin_strict", "--until-caught-up"], "ValueError: poison; "),
    ],
    "rebuild": [
        Case(["rebuild", "nosuch", "--app", "badin_app"], "no projection named 'nosuch'"),
        Case(["rebuild", "docs", "--app", "badin_app.py"], "drop .py"),
    ],
    "parked": [
        Case(["parked", "nosuch", "--app", "badin_app"], "no projection named 'nosuch'"),
    ],
    "replay-parked": [
        Case(["replay-parked", "docs", "--app", "badin_app", "--position", "12:ab"], "invalid"),
        Case(["replay-parked", "nosuch", "--app", "badin_app"], "no projection named"),
        Case(
            ["replay-parked", "docs", "--app", "badin_app", "--position", "99"],
            "has no parked event at position 99",
        ),
    ],
    "relay status": [
        Case(["relay", "status", "--app", "badin_app"], "no attribute 'relays'"),
        Case(["relay", "status", "--app", "badin_app:docs"], "not a function that takes"),
    ],
    "relay parked": [
        Case(["relay", "parked"], "--app MODULE[:NAME]"),
    ],
    "relay replay": [
        Case(["relay", "replay", "--app", "badin_none"], "no module named 'badin_none'"),
    ],
    "privacy forget": [
        Case(["privacy", "forget", ""], "subject must be a non-empty str"),
        Case(["privacy", "forget", "x" * 300], "over the limit of 256"),
    ],
    "privacy status": [
        Case(["privacy", "status", " a"], "has leading or trailing spaces"),
    ],
    "serve": [
        Case(["serve", "--app", "badin_none"], "no module named 'badin_none'"),
        Case(["serve", "--tokens", "no-such-file"], "cannot read the tokens file 'no-such-file'"),
        Case(["serve", "--port", "70000"], "70000 is not in the range 0<=x<=65535"),
    ],
    "token": [
        Case(["token", "root"], "'root' is not one of 'read', 'write', 'admin'"),
    ],
    "demo": [
        Case(["demo", "--tasks", "0"], "0 is not in the range 1<=x<=256"),
        Case(["demo", "--orders", "0"], "0 is not in the range 1<=x<=100000"),
        Case(["demo", "--url", "mongodb://x/db"], "unknown store URL scheme"),
    ],
}


def leaf_commands(group: click.Group, prefix: str = "") -> list[str]:
    """Every command's full name, a group's subcommands included (``schema check``)."""
    ctx = click.Context(group)
    names: list[str] = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        full = f"{prefix}{name}"
        if isinstance(command, click.Group):
            names += leaf_commands(command, f"{full} ")
        else:
            names.append(full)
    return names


def test_every_command_has_bad_input_cases() -> None:
    assert sorted(CASES) == sorted(leaf_commands(cli))
    assert all(CASES.values())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory with the user modules and a store holding order-1 (one event)."""
    path = tmp_path_factory.mktemp("bad_input")
    for name, source in MODULES.items():
        (path / f"{name}.py").write_text(textwrap.dedent(source))

    async def seed() -> None:
        async with eventfold.connect(f"sqlite:///{path}/s.db") as store:
            event = eventfold.NewEvent({"n": 1}, type="badin.Noted", event_id=EVENT_ID)
            await store.append("order-1", [event], expected_version=eventfold.NO_STREAM)

    asyncio.run(seed())
    yield path
    for name in MODULES:
        sys.modules.pop(name, None)


def head(url: str) -> eventfold.StoreStats:
    async def stats() -> eventfold.StoreStats:
        async with eventfold.connect(url) as store:
            return await store.stats()

    return asyncio.run(stats())


ERROR_LINE = re.compile(r"^(error|Error): ", re.MULTILINE)


@pytest.mark.parametrize(
    ("command", "case"),
    [(command, case) for command, cases in CASES.items() for case in cases],
    ids=lambda value: value if isinstance(value, str) else " ".join(value.args)[:60],
)
def test_bad_input_gets_an_error_line(
    command: str, case: Case, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the CLI adds the working directory
    url = f"sqlite:///{workdir}/s.db"
    before = head(url)
    env: dict[str, str | None] = {
        "COLUMNS": "80",
        "EVENTFOLD_URL": url,
        "EVENTFOLD_DEBUG": None,
    }
    result = CliRunner().invoke(cli, case.args, input=case.input, env=env)
    # An exception escaping click (a traceback in a terminal) is result.exception.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    errors = ERROR_LINE.findall(result.stderr)
    assert len(errors) == 1, result.stderr
    assert case.fragment in " ".join(result.stderr.split()), result.stderr
    assert head(url) == before
