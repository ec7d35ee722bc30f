"""The ``eventfold`` command line, driven through click's runner against SQLite files."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import eventfold
from eventfold.cli import cli
from eventfold.cli.app import exit_code_for


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/x.db"


def run(*args: str, input: str | None = None, env: dict[str, str | None] | None = None) -> Result:
    """Invoke the CLI; a wide terminal so tables do not cut what the tests look for."""
    environ: dict[str, str | None] = {"COLUMNS": "200", "EVENTFOLD_URL": None, **(env or {})}
    return CliRunner().invoke(cli, list(args), input=input, env=environ, catch_exceptions=False)


def ok(*args: str, input: str | None = None) -> Result:
    result = run(*args, input=input)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def append(url: str, stream: str, type: str, data: dict[str, Any], *extra: str) -> Result:
    return ok("--url", url, "append", stream, type, json.dumps(data), *extra)


def jsonl(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def assert_one_line_error(result: Result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


def store_events(url: str) -> list[eventfold.RecordedEvent]:
    async def read() -> list[eventfold.RecordedEvent]:
        async with eventfold.connect(url) as store:
            return [e async for e in store.read_all()]

    return asyncio.run(read())


# -- help and version ----------------------------------------------------------------------

COMMANDS = [
    "info",
    "streams",
    "read",
    "tail",
    "append",
    "state",
    "snapshot",
    "schema",
    "transform",
    "projections",
    "run",
    "rebuild",
    "parked",
    "replay-parked",
    "relay",
    "privacy",
    "serve",
    "token",
    "demo",
]


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_every_command_has_help(command: list[str]) -> None:
    result = ok(*command, "--help")
    assert result.stdout.startswith("Usage: ")
    summary = result.stdout.split("\n\n")[1].strip()
    assert len(summary) > 20, summary


def test_group_lists_every_command_with_a_summary() -> None:
    listing = ok("--help").stdout.split("Commands:", 1)[1].splitlines()
    named = {line.split()[0]: line for line in listing if line.strip()}
    assert list(named) == COMMANDS
    assert all(len(line.split()) > 2 for line in named.values())


def test_version() -> None:
    assert ok("--version").stdout.strip() == f"eventfold, version {eventfold.__version__}"


# -- append and read -----------------------------------------------------------------------


def test_append_then_read_shows_the_event(url: str) -> None:
    first = append(url, "order-1", "OrderPlaced", {"sku": "A-1", "quantity": 2})
    assert first.stdout.strip() == "appended to order-1: version 1, position 1"
    second = append(url, "order-1", "OrderPaid", {"amount_cents": 1250}, "--expected-version", "1")
    assert "version 2, position 2" in second.stdout

    table = ok("--url", url, "read", "order-1").stdout
    rows = [line.split() for line in table.splitlines() if "Order" in line and "stream" not in line]
    assert [r[:3] for r in rows] == [["1", "1", "OrderPlaced"], ["2", "2", "OrderPaid"]]
    assert '{"sku":"A-1","quantity":2}' in table
    assert '{"amount_cents":1250}' in table


def test_read_jsonl_has_every_envelope_field(url: str) -> None:
    event_id = uuid.uuid4()
    before = dt.datetime.now(dt.UTC)
    append(
        url, "order-7", "OrderPlaced", {"sku": "B", "n": [1, 2]},
        "--event-id", str(event_id), "--metadata", '{"actor": "ann"}',
    )  # fmt: skip
    append(url, "order-7", "OrderShipped", {"carrier": "DHL"})
    first, second = jsonl(ok("--url", url, "read", "order-7", "--format", "jsonl"))
    assert set(first) == {
        "event_id", "stream_id", "version", "position", "type", "schema_version", "data",
        "metadata", "recorded_at",
    }  # fmt: skip
    assert first["event_id"] == str(event_id)
    assert first["stream_id"] == "order-7"
    assert (first["version"], second["version"]) == (1, 2)
    assert (first["position"], second["position"]) == ("1", "2")
    assert eventfold.Position.parse(second["position"]) == eventfold.Position(0, 2)
    assert first["type"] == "OrderPlaced"
    assert first["schema_version"] == 1
    assert first["data"] == {"sku": "B", "n": [1, 2]}
    assert first["metadata"] == {"actor": "ann"}
    assert second["metadata"] == {}
    recorded = dt.datetime.fromisoformat(first["recorded_at"])
    assert recorded.tzinfo is not None
    assert before - dt.timedelta(seconds=5) <= recorded <= dt.datetime.now(dt.UTC)
    uuid.UUID(second["event_id"])


def test_read_backwards_from_a_version_with_a_limit(url: str) -> None:
    for n in range(1, 6):
        append(url, "counter-1", "Ticked", {"n": n})
    out = ok(
        "--url", url, "read", "counter-1", "--backwards", "--from-version", "4", "--limit", "2",
        "--format", "jsonl",
    )  # fmt: skip
    assert [e["data"]["n"] for e in jsonl(out)] == [4, 3]
    forwards = ok("--url", url, "read", "counter-1", "--from-version", "4", "--format", "jsonl")
    assert [e["version"] for e in jsonl(forwards)] == [4, 5]


def test_read_of_an_empty_stream_says_so(url: str) -> None:
    assert store_events(url) == []  # an empty store: inspection never creates one
    assert "stream 'nothing-here' has no events" in ok("--url", url, "read", "nothing-here").stdout
    assert ok("--url", url, "read", "nothing-here", "--format", "jsonl").stdout == ""


def test_append_reads_json_from_stdin(url: str) -> None:
    ok("--url", url, "append", "note-1", "Noted", "-", input='{"text": "from stdin"}')
    (event,) = store_events(url)
    assert event.data == {"text": "from stdin"}


def test_append_json_output(url: str) -> None:
    out = ok("--url", url, "append", "a-1", "T", "{}", "--json").stdout
    assert json.loads(out) == {"stream_id": "a-1", "version": 1, "position": "1", "retry": False}


def test_append_expected_version_forms(url: str) -> None:
    append(url, "s-1", "T", {}, "--expected-version", "no_stream")
    append(url, "s-1", "T", {}, "--expected-version", "stream_exists")
    append(url, "s-1", "T", {}, "--expected-version", "2")
    append(url, "s-1", "T", {}, "--expected-version", "any")
    result = run("--url", url, "append", "s-2", "T", "{}", "--expected-version", "stream_exists")
    assert_one_line_error(result, 3, "'s-2'", "expected STREAM_EXISTS")
    bad = run("--url", url, "append", "s-1", "T", "{}", "--expected-version", "soon")
    assert bad.exit_code == 2
    assert "'soon' is not an expected version" in bad.stderr


def test_same_event_id_twice_is_one_event_and_says_so(url: str) -> None:
    event_id = str(uuid.uuid4())
    first = append(url, "pay-1", "Paid", {"cents": 5}, "--event-id", event_id)
    assert first.stdout.strip() == "appended to pay-1: version 1, position 1"
    again = append(url, "pay-1", "Paid", {"cents": 5}, "--event-id", event_id)
    assert again.stdout.strip() == (
        f"already stored: event {event_id} is in pay-1 (version 1, position 1); "
        "nothing was appended"
    )
    as_json = append(url, "pay-1", "Paid", {"cents": 5}, "--event-id", event_id, "--json")
    assert json.loads(as_json.stdout) == {
        "stream_id": "pay-1", "version": 1, "position": "1", "retry": True,
    }  # fmt: skip
    assert len(store_events(url)) == 1


# -- errors --------------------------------------------------------------------------------


def test_bad_json_exits_2_naming_the_argument(url: str) -> None:
    result = run("--url", url, "append", "order-1", "OrderPlaced", "{sku: 1}")
    assert_one_line_error(result, 2, "the JSON argument is not valid JSON")
    result = run("--url", url, "append", "order-1", "OrderPlaced", "[1, 2]")
    assert_one_line_error(result, 2, "the JSON argument must be a JSON object, got a JSON array")
    result = run("--url", url, "append", "order-1", "T", "{}", "--metadata", "nope")
    assert_one_line_error(result, 2, "--metadata is not valid JSON")
    assert store_events(url) == []


def test_wrong_expected_version_exits_3(url: str) -> None:
    append(url, "order-1", "OrderPlaced", {"sku": "A"})
    result = run("--url", url, "append", "order-1", "OrderPaid", "{}", "--expected-version", "0")
    assert_one_line_error(
        result, 3, "stream 'order-1' is at version 1, expected 0", "reload the stream"
    )
    assert len(store_events(url)) == 1


def test_invalid_stream_id_exits_2(url: str) -> None:
    result = run("--url", url, "append", "", "T", "{}")
    assert_one_line_error(result, 2, "invalid stream id", "must not be empty")


def test_unknown_url_scheme_exits_4() -> None:
    result = run("--url", "mongodb://localhost/db", "info")
    assert_one_line_error(result, 4, "unknown store URL scheme 'mongodb'", "sqlite:///")


def test_malformed_position_exits_2(url: str) -> None:
    result = run("--url", url, "tail", "--after", "12:ab", "--count", "1")
    assert_one_line_error(result, 2, "invalid position '12:ab'")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (eventfold.InvalidStreamId("", "empty"), 2),
        (eventfold.EventTooLarge("s", 0, 10, 5), 2),
        (eventfold.WrongExpectedVersion("s", 1, 2), 3),
        (eventfold.DuplicateEventId("s", uuid.uuid4()), 3),
        (eventfold.StoreUnavailable("postgresql", "db", 5432, "refused"), 4),
        (eventfold.ConfigurationError("bad"), 4),
        (eventfold.SchemaTooNew(9, 1), 4),
        (eventfold.DecodeError("T", 1, "bad"), 1),
        (eventfold.EventTypeError("clash"), 1),
    ],
)
def test_exit_codes(error: eventfold.EventfoldError, code: int) -> None:
    assert exit_code_for(error) == code


# -- info and streams ----------------------------------------------------------------------


def test_info_counts(url: str) -> None:
    for stream in ("order-1", "order-1", "order-2", "user-1"):
        append(url, stream, "Something", {})
    data = json.loads(ok("--url", url, "info", "--json").stdout)
    assert data == {"url": url, "backend": "sqlite", "head": "4", "streams": 3, "events": 4}
    table = ok("--url", url, "info").stdout
    values = dict(line.split(None, 1) for line in table.splitlines() if line.strip()[:1].isalpha())
    assert values["backend"].strip() == "sqlite"
    assert values["head"].strip() == "4"
    assert values["streams"].strip() == "3"
    assert values["events"].strip() == "4"


def test_info_on_an_empty_store(url: str) -> None:
    assert store_events(url) == []
    data = json.loads(ok("--url", url, "info", "--json").stdout)
    assert (data["head"], data["streams"], data["events"]) == ("0", 0, 0)


def test_info_hides_a_password() -> None:
    from eventfold.cli.render import redact_url

    assert redact_url("postgresql://ann:s3cret@db:5432/x") == "postgresql://ann:***@db:5432/x"


def test_streams_listing(url: str) -> None:
    for stream, n in (("order-1", 2), ("order-2", 1), ("user-9", 3), ("order-3", 1)):
        for _ in range(n):
            append(url, stream, "T", {})
    listed = json.loads(ok("--url", url, "streams", "--json").stdout)
    assert listed == [
        {"stream_id": "order-1", "version": 2},
        {"stream_id": "order-2", "version": 1},
        {"stream_id": "order-3", "version": 1},
        {"stream_id": "user-9", "version": 3},
    ]
    orders = json.loads(ok("--url", url, "streams", "--category", "order", "--json").stdout)
    assert [s["stream_id"] for s in orders] == ["order-1", "order-2", "order-3"]
    page = json.loads(
        ok("--url", url, "streams", "--after", "order-1", "--limit", "2", "--json").stdout
    )
    assert [s["stream_id"] for s in page] == ["order-2", "order-3"]

    table = ok("--url", url, "streams", "--limit", "2").stdout
    rows = [line.split() for line in table.splitlines() if line.strip().startswith("order-")]
    assert rows == [["order-1", "2"], ["order-2", "1"]]
    assert "2 streams" in table
    assert "more: eventfold streams --after 'order-2'" in table
    assert "more:" not in ok("--url", url, "streams").stdout


# -- tail ----------------------------------------------------------------------------------


def test_tail_from_start_with_count_prints_the_events(url: str) -> None:
    append(url, "order-1", "OrderPlaced", {"sku": "A"})
    append(url, "user-1", "UserJoined", {"name": "ann"})
    append(url, "order-1", "OrderPaid", {"cents": 3})
    out = ok("--url", url, "tail", "--from-start", "--count", "3").stdout
    lines = out.splitlines()
    assert len(lines) == 3
    assert lines[0].split()[:3] == ["1", "order-1@1", "OrderPlaced"]
    assert lines[1].split()[:3] == ["2", "user-1@1", "UserJoined"]
    assert lines[2].split()[:3] == ["3", "order-1@2", "OrderPaid"]
    assert '{"name":"ann"}' in lines[1]

    events = jsonl(ok("--url", url, "tail", "--from-start", "--count", "2", "--format", "jsonl"))
    assert [(e["position"], e["type"]) for e in events] == [
        ("1", "OrderPlaced"),
        ("2", "UserJoined"),
    ]


def test_tail_filters_by_type_and_category(url: str) -> None:
    append(url, "order-1", "OrderPlaced", {})
    append(url, "user-1", "UserJoined", {})
    append(url, "order-2", "OrderPlaced", {})
    append(url, "order-1", "OrderPaid", {})
    by_type = ok(
        "--url", url, "tail", "--from-start", "--count", "2", "--type", "OrderPlaced",
        "--format", "jsonl",
    )  # fmt: skip
    assert [e["stream_id"] for e in jsonl(by_type)] == ["order-1", "order-2"]
    by_category = ok(
        "--url", url, "tail", "--from-start", "--count", "1", "--category", "user",
        "--format", "jsonl",
    )  # fmt: skip
    assert [e["type"] for e in jsonl(by_category)] == ["UserJoined"]


def test_tail_after_a_position(url: str) -> None:
    for n in range(4):
        append(url, f"s-{n}", "T", {"n": n})
    out = ok("--url", url, "tail", "--after", "2", "--count", "2", "--format", "jsonl")
    assert [e["position"] for e in jsonl(out)] == ["3", "4"]


def test_tail_rejects_after_with_from_start(url: str) -> None:
    result = run("--url", url, "tail", "--after", "1", "--from-start")
    assert result.exit_code == 2
    assert "--after or --from-start, not both" in result.stderr


def append_later(url: str, events: list[tuple[str, str]], delay: float) -> threading.Thread:
    """Append ``(stream, type)`` events from another thread (its own store) after ``delay``."""

    async def write() -> None:
        async with eventfold.connect(url) as store:
            for stream, type in events:
                await store.append(
                    stream, [eventfold.NewEvent({}, type=type)], expected_version=eventfold.ANY
                )

    def main() -> None:
        time.sleep(delay)
        asyncio.run(write())

    thread = threading.Thread(target=main)
    thread.start()
    return thread


@pytest.mark.timeout(30)
def test_tail_follows_new_events_only(url: str) -> None:
    append(url, "old-1", "Old", {})
    writer = append_later(url, [("new-1", "New"), ("new-2", "New")], delay=0.5)
    out = ok("--url", url, "tail", "--count", "2", "--interval", "0.05", "--format", "jsonl")
    writer.join()
    assert [(e["stream_id"], e["position"]) for e in jsonl(out)] == [("new-1", "2"), ("new-2", "3")]


@pytest.mark.timeout(30)
def test_tail_filter_skips_a_long_run_of_other_events(url: str) -> None:
    assert store_events(url) == []
    writer = append_later(url, [*[("noise-1", "Noise")] * 20, ("wanted-1", "Wanted")], delay=0.3)
    out = ok(
        "--url", url, "tail", "--count", "1", "--type", "Wanted", "--interval", "0.02",
        "--format", "jsonl",
    )  # fmt: skip
    writer.join()
    assert [e["position"] for e in jsonl(out)] == ["21"]


@pytest.mark.timeout(30)
def test_tail_stops_cleanly_on_ctrl_c(url: str) -> None:
    append(url, "a-1", "T", {})

    def interrupt() -> None:
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=interrupt)
    thread.start()
    result = run("--url", url, "tail", "--from-start", "--interval", "0.05")
    thread.join()
    assert result.exit_code == 0, result.output
    assert result.stdout.split()[:3] == ["1", "a-1@1", "T"]
    assert "stopped" in result.stderr
    assert "Traceback" not in result.output


# -- the URL -------------------------------------------------------------------------------


def test_url_from_the_environment(url: str) -> None:
    result = run("append", "env-1", "T", "{}", env={"EVENTFOLD_URL": url})
    assert result.exit_code == 0, result.stderr
    assert [e.stream_id for e in store_events(url)] == ["env-1"]


def test_default_url_is_eventfold_db_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run("append", "d-1", "T", "{}").exit_code == 0
    assert (tmp_path / "eventfold.db").exists()
    info = json.loads(run("info", "--json").stdout)
    assert (info["url"], info["events"]) == ("sqlite:///eventfold.db", 1)


# -- what bad or odd input gets --------------------------------------------------------------


@pytest.mark.parametrize("how", ["argument", "stdin"])
def test_append_skips_a_utf8_byte_order_mark(url: str, how: str) -> None:
    if how == "stdin":
        result = CliRunner().invoke(
            cli, ["--url", url, "append", "bom-1", "T", "-"], input=b'\xef\xbb\xbf{"a": 1}'
        )
    else:
        result = run("--url", url, "append", "bom-1", "T", '\ufeff{"a": 1}')
    assert result.exit_code == 0, result.output
    assert [e.data for e in store_events(url)] == [{"a": 1}]


def test_system_names_are_refused_unless_forced(url: str) -> None:
    refused = run("--url", url, "append", "$schema-T", "$SchemaRegistered", "{}")
    assert_one_line_error(refused, 2, "stream '$schema-T' starts with $", "--force-system")
    assert store_events(url) == []
    forced = append(url, "$schema-T", "$Custom", {}, "--force-system")
    assert "appended to $schema-T: version 1" in forced.stdout


def test_read_says_why_it_shows_nothing(url: str) -> None:
    append(url, "s-1", "T", {})
    past = ok("--url", url, "read", "s-1", "--from-version", "5").stdout
    assert past.strip() == "stream 's-1' has no events from version 5 (its newest is version 1)"
    assert ok("--url", url, "read", "none-1").stdout.strip() == "stream 'none-1' has no events"


def test_read_and_tail_show_stored_text_literally(url: str) -> None:
    # Brackets are rich markup and U+0085, U+2028 break lines in some terminals.
    append(url, "s[red]-1", "[bold]T[/bold]", {"text": "a\u0085b\u2028c\u009b31m"})
    table = ok("--url", url, "read", "s[red]-1").stdout
    assert "stream s[red]-1" in table
    assert "[bold]T[/bold]" in table
    assert '{"text":"a\\x85b\\u2028c\\x9b31m"}' in table
    line = ok("--url", url, "tail", "--from-start", "--count", "1").stdout
    assert "s[red]-1@1" in line
    assert '{"text":"a\\x85b\\u2028c\\x9b31m"}' in line
    assert not any(c in table + line for c in "\u0085\u2028\u009b")


def recorded(type: str, stream_id: str = "s-1") -> eventfold.RecordedEvent:
    return eventfold.RecordedEvent(
        stream_id, 1, type, 1, {"n": 1}, uuid.uuid4().bytes, 0, 7, b"{}", 1_700_000_000_000_000
    )


@pytest.mark.parametrize("type", ["\x1b[31mRED\x1b[0m", "a\nb", "tab\there", "\x00nul"])
def test_control_characters_in_names_are_escaped_for_display(type: str) -> None:
    """Events stored before names were checked (or by another producer) print safely."""
    from rich.console import Console

    from eventfold.cli import render

    out = io.StringIO()
    console = Console(file=out, width=120, highlight=False)
    console.print(render.events_table([recorded(type, "s-\x1b-1")], title="stream s-\x1b-1"))
    line = render.event_line(recorded(type))
    escaped = type.encode("unicode_escape").decode()
    assert escaped in out.getvalue()
    assert escaped in line
    assert "\x1b" not in out.getvalue() + line
    assert "\n" not in line
    rows = [r for r in out.getvalue().splitlines() if r.strip().startswith("1")]
    assert len(rows) == 1, out.getvalue()


def test_a_long_type_is_cut_and_the_other_columns_stay() -> None:
    from rich.console import Console

    from eventfold.cli import render

    out = io.StringIO()
    Console(file=out, width=80).print(render.events_table([recorded("T" * 300)]))
    (row,) = [r for r in out.getvalue().splitlines() if "TTT" in r]
    assert row.split()[:2] == ["1", "7"]
    assert "…" in row
    assert '{"n":1}' in row
    assert len(row) <= 80
