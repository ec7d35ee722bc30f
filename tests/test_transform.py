"""Stream transformation over every backend: the shipped suite, snapshots, renamed types,
resumption after a crash, and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from bank import Deposit, Deposited, OpenAccount, account
from click.testing import CliRunner, Result

import eventfold
from eventfold import (
    CommandHandler,
    Event,
    HandlerOptions,
    NewEvent,
    RecordedEvent,
    StreamReplaced,
    TypeRegistry,
)
from eventfold.cli import cli
from eventfold.cli.progress import TransformBar
from eventfold.projections import Subscription
from eventfold.schema import TransformProgress
from eventfold.store import SupportsTransform, capability
from eventfold.testing import TransformConformance
from eventfold.testing.conformance import settle
from eventfold.testing.transform import keep, read, suffix
from eventfold.write import every


class Line(Event):
    __event_type__ = "xf.Line"
    sku: str
    n: int


class Note(Event):
    __event_type__ = "xf.Note"
    text: str


class Placed(Event):
    __event_type__ = "xf.Placed"
    total: int


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[eventfold.EventStore]:
    async with eventfold.connect(store_url) as store:
        yield store


class TestTransform(TransformConformance):
    """The shipped suite over `store`: each backend in turn."""


def events_of(n: int) -> list[Line]:
    return [Line(sku=f"s{i}", n=i) for i in range(1, n + 1)]


# -- snapshots of the old stream ----------------------------------------------------------


async def test_the_handler_never_uses_the_old_streams_snapshots(
    store: eventfold.EventStore,
) -> None:
    handler = CommandHandler(store, account, options=HandlerOptions(snapshots=every(1)))
    await handler.handle("account-1", OpenAccount(owner="ann"))
    await handler.handle("account-1", Deposit(amount=10))
    await handler.handle("account-1", Deposit(amount=20))
    assert (await handler.load_details("account-1")).snapshot_version == 3

    def tenfold_first_deposit(event: RecordedEvent) -> Any:
        if event.version == 2:
            return Deposited(amount=100)
        return [event]

    await eventfold.transform(
        store, "account-1", target=lambda s: "account-1.v2", fn=tenfold_first_deposit
    )
    # The event at version 3 kept its id, so only the stream tells the old snapshot apart.
    old = [e async for e in store.read_stream("account-1", follow_alias=False)]
    new = await read(store, "account-1.v2")
    assert old[2].event_id == new[2].event_id

    fresh = CommandHandler(store, account)
    loaded = await fresh.load_details("account-1")
    assert (loaded.state.balance, loaded.version) == (120, 3)
    assert (await fresh.load_details("account-1.v2")).state.balance == 120
    with pytest.raises(StreamReplaced, match=r"account-1\.v2"):
        await fresh.handle("account-1", Deposit(amount=1))
    # The load snapshotted the new stream, under the new stream's id.
    again = await handler.load_details("account-1")
    assert again.state.balance == 120
    result = await handler.handle("account-1.v2", Deposit(amount=1))
    assert (result.version, result.state.balance) == (4, 121)
    assert (await handler.load_details("account-1")).state.balance == 121


# -- renamed types in read_all filters -------------------------------------------------------


async def test_a_types_filter_finds_events_stored_under_an_old_name(store_url: str) -> None:
    registry = TypeRegistry()
    registry.register(Placed)
    registry.rename("xf.OldPlaced", to="xf.Placed")
    async with eventfold.connect(store_url, registry=registry) as store:
        old = NewEvent({"total": 1}, type="xf.OldPlaced", schema_version=1)
        await store.append("order-1", [old, Placed(total=2)], expected_version=eventfold.NO_STREAM)
        note = await store.append(
            "order-2", [Note(text="other")], expected_version=eventfold.NO_STREAM
        )
        await settle(store, note.position)
        for types in (["xf.Placed"], [Placed]):
            found = [e async for e in store.read_all(types=types)]
            assert [(e.type, e.data) for e in found] == [
                ("xf.Placed", Placed(total=1)),
                ("xf.Placed", Placed(total=2)),
            ]
        assert found[0].stored_type == "xf.OldPlaced"
        filtered = [e async for e in store.read_all(types=["xf.Placed"], categories=["order"])]
        assert len(filtered) == 2
        subscription = Subscription(store, types=["xf.Placed"], follow=False)
        batches = [batch async for batch in subscription]
        assert [e.data.total for batch in batches for e in batch.events] == [1, 2]


# -- a crash half-way ------------------------------------------------------------------------

JOB = """
import asyncio, os, signal, sys

import eventfold


class Line(eventfold.Event):
    __event_type__ = "xf.Line"
    sku: str
    n: int


calls = 0
kill_after = int(os.environ.get("XF_KILL_AFTER", "0"))


def reshape(event):
    global calls
    calls += 1
    if kill_after and calls > kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
    line = event.data
    if line.n % 5 == 0:
        return None
    if line.n % 3 == 0:
        return [Line(sku=line.sku + "-a", n=line.n), Line(sku=line.sku + "-b", n=line.n)]
    if line.n % 2 == 0:
        return Line(sku=line.sku.upper(), n=line.n)
    return [event]


async def main(url, category):
    async with eventfold.connect(url) as store:
        report = await eventfold.transform(
            store,
            category=category,
            target=lambda s: s.replace(category, category + "v2", 1),
            fn=reshape,
            batch_size=4,
        )
        print(report.total("written"))


asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def durable_url(request: pytest.FixtureRequest) -> str:
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


def run_job(script: Path, url: str, category: str, kill_after: int = 0) -> int:
    env = {**os.environ, "XF_KILL_AFTER": str(kill_after)}
    done = subprocess.run(
        [sys.executable, str(script), url, category], env=env, capture_output=True, timeout=120
    )
    if done.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(done.stderr.decode())
    return done.returncode


STREAMS = 4
EVENTS = 15


@pytest.mark.slow
async def test_a_killed_transformation_resumes_to_the_same_result(
    durable_url: str, tmp_path: Path
) -> None:
    script = tmp_path / "xf_job.py"
    script.write_text(textwrap.dedent(JOB))
    # Two categories with the very same events (ids, times, metadata): one is transformed
    # with a kill half-way and a rerun, the other in one go.
    async with eventfold.connect(durable_url) as store:
        for i in range(1, STREAMS + 1):
            batch = [
                NewEvent(e, event_id=uuid.uuid5(uuid.NAMESPACE_OID, f"{i}/{e.n}"),
                         metadata={"seed": i})
                for e in events_of(EVENTS)
            ]  # fmt: skip
            times = [1_700_000_000_000_000 + 1000 * i + n for n in range(EVENTS)]
            for category in ("killed", "whole"):
                await capability(store, SupportsTransform).append_copies(
                    f"{category}-{i}", batch, expected_version=0, recorded_us=times
                )

    assert run_job(script, durable_url, "killed", kill_after=2 * EVENTS + 7) == -signal.SIGKILL
    async with eventfold.connect(durable_url) as store:
        infos = [await store.stream_info(f"killed-{i}") for i in range(1, STREAMS + 1)]
        assert [info.replaced_by is not None for info in infos] == [True, True, False, False]
        assert await store.stream_version("killedv2-3") > 0, "the kill left a partial copy"

    assert run_job(script, durable_url, "killed") == 0
    assert run_job(script, durable_url, "whole") == 0

    async with eventfold.connect(durable_url) as store:
        for i in range(1, STREAMS + 1):
            killed = await read(store, f"killedv2-{i}")
            whole = await read(store, f"wholev2-{i}")
            assert len(killed) == 16  # 4 kept, 4 rewritten, 4 split in two, 3 dropped
            assert [_comparable(e) for e in killed] == [_comparable(e) for e in whole]
            assert (await store.stream_info(f"killed-{i}")).replaced_by == f"killedv2-{i}"
            originals = await read(store, f"killed-{i}", follow=False)
            assert [e.data for e in originals] == events_of(EVENTS)


def _comparable(e: RecordedEvent) -> tuple[Any, ...]:
    return (e.event_id, e.version, e.type, e.data, e.metadata, e.recorded_us)


# -- the command line ------------------------------------------------------------------------

FNS = """
import eventfold


def upper(event):
    return eventfold.NewEvent({"sku": event.data.sku.upper(), "n": event.data.n}, type="xf.Line")


def lookup(sku):
    raise ValueError(f"no sku {sku!r}")


def fails(event):
    return lookup(event.data.sku)


not_a_function = 3
"""


@pytest.fixture
def fn_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"xf_fns_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(FNS))
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)


def cli_run(*args: str) -> Result:
    env: dict[str, str | None] = {"COLUMNS": "200", "EVENTFOLD_URL": None}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def seed(url: str, streams: Sequence[str]) -> None:
    async def go() -> None:
        async with eventfold.connect(url) as store:
            for stream in streams:
                await store.append(stream, events_of(3), expected_version=eventfold.NO_STREAM)

    asyncio.run(go())


def test_cli_transforms_one_stream(fn_module: str) -> None:
    url = "sqlite:///x.db"
    seed(url, ["order-1"])
    dry = cli_run("--url", url, "transform", "order-1", "--fn", f"{fn_module}:upper",
                  "--to", "order-1-new", "--dry-run")  # fmt: skip
    assert dry.exit_code == 0, dry.output
    assert "dry run: nothing written" in dry.stdout
    done = cli_run("--url", url, "transform", "order-1", "--fn", f"{fn_module}:upper",
                   "--to", "order-1-new", "--json")  # fmt: skip
    assert done.exit_code == 0, done.output
    record = json.loads(done.stdout)
    assert record["streams"] == [
        {"source": "order-1", "target": "order-1-new", "status": "switched", "events": 3,
         "copied": 0, "rewritten": 3, "split": 0, "dropped": 0, "written": 3, "resumed": 0}
    ]  # fmt: skip
    read = cli_run("--url", url, "read", "order-1", "--format", "jsonl")
    assert [json.loads(line)["stream_id"] for line in read.stdout.splitlines()] == [
        "order-1-new"
    ] * 3
    late = cli_run("--url", url, "append", "order-1", "xf.Line", '{"sku": "x", "n": 1}')
    assert late.exit_code == 3
    assert "replaced by 'order-1-new'" in late.stderr


def test_cli_transforms_a_category(fn_module: str) -> None:
    url = "sqlite:///x.db"
    seed(url, ["order-1", "order-2"])
    done = cli_run("--url", url, "transform", "--category", "order", "--fn",
                   f"{fn_module}:upper", "--suffix", ".v2")  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "2 streams: copied 6 events into 6" in done.stdout
    assert "order-2.v2" in done.stdout


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["order-1", "--to", "x", "--suffix", "y"], 2, "--to or --suffix"),
        (["--category", "order", "--to", "x"], 2, "use --suffix with --category"),
        (["--suffix", ".v2"], 2, "SOURCE stream or --category"),
        (["order-1", "--to", "x", "--fn", "nomodule_xyz:f"], 2, "no module named"),
        (["order-1", "--to", "x", "--fn", "{mod}:missing"], 2, "has no attribute 'missing'"),
        (["order-1", "--to", "x", "--fn", "{mod}:not_a_function"], 2, "not a function"),
        (["order-9", "--to", "x", "--fn", "{mod}:upper"], 2, "has no events"),
    ],
)
def test_cli_errors(fn_module: str, args: list[str], code: int, fragment: str) -> None:
    url = "sqlite:///x.db"
    seed(url, ["order-1"])
    args = [a.replace("{mod}", fn_module) for a in args]
    if "--fn" not in args:
        args += ["--fn", f"{fn_module}:upper"]
    result = cli_run("--url", url, "transform", *args)
    assert result.exit_code == code, result.output
    assert fragment in result.output


def test_cli_table_reads_at_80_columns(fn_module: str) -> None:
    url = "sqlite:///x.db"
    seed(url, ["order-1", "order-2"])
    env: dict[str, str | None] = {"COLUMNS": "80", "EVENTFOLD_URL": None}
    args = ["--url", url, "transform", "--category", "order", "--fn", f"{fn_module}:upper"]
    done = CliRunner().invoke(cli, [*args, "--suffix", ".v2"], env=env)
    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    rows = [line.split() for line in lines if line.strip().startswith("order-")]
    assert rows == [
        ["order-1", "order-1.v2", "switched", "3", "3", "3", "rewritten"],
        ["order-2", "order-2.v2", "switched", "3", "3", "3", "rewritten"],
    ]


def test_cli_names_a_failing_function_and_shows_its_frames_on_request(
    fn_module: str, tmp_path: Path
) -> None:
    url = "sqlite:///x.db"
    seed(url, ["order-1"])
    args = ["--url", url, "transform", "order-1", "--fn", f"{fn_module}:fails", "--to", "o-2"]
    plain = cli_run(*args)
    assert plain.exit_code == 1
    assert plain.stderr.strip() == (
        f"error: the transform function {fn_module}:fails raised ValueError at order-1@1: "
        "no sku 's1'; fix it and run the command again (set EVENTFOLD_DEBUG=1 to see its "
        "traceback)"
    )
    env: dict[str, str | None] = {"COLUMNS": "200", "EVENTFOLD_DEBUG": "1"}
    debug = CliRunner().invoke(cli, args, env=env)
    assert debug.exit_code == 1
    frames, error = debug.stderr.strip().rsplit("\n", 1)
    assert frames.startswith("Traceback (user code, most recent call last):")
    assert f'File "{tmp_path / fn_module}.py"' in frames
    assert "lookup(event.data.sku)" in frames
    assert str(Path(eventfold.__file__).parent) not in frames  # the user's frames only
    assert frames.endswith("ValueError: no sku 's1'")
    assert error.startswith("error: the transform function")
    assert "EVENTFOLD_DEBUG" not in error
    assert (asyncio.run(stream_info(url, "order-1"))).replaced_by is None


async def stream_info(url: str, stream_id: str) -> eventfold.StreamInfo:
    async with eventfold.connect(url) as store:
        return await store.stream_info(stream_id)


async def test_progress_is_reported_to_the_callback(
    store: eventfold.EventStore, capsys: pytest.CaptureFixture[str]
) -> None:
    await store.append("order-1", events_of(3), expected_version=eventfold.NO_STREAM)
    await store.append("order-2", events_of(2), expected_version=eventfold.NO_STREAM)
    reports: list[TransformProgress] = []
    await eventfold.transform(
        store, category="order", target=suffix, fn=keep, progress=reports.append
    )
    assert reports[0] == TransformProgress(streams=2, events=5, streams_done=0, events_done=0)
    assert reports[-1] == TransformProgress(streams=2, events=5, streams_done=2, events_done=5)
    done = [(r.streams_done, r.events_done) for r in reports]
    assert done == sorted(done)
    assert capsys.readouterr() == ("", "")


async def test_progress_must_be_a_callable(store: eventfold.EventStore) -> None:
    await store.append("order-1", events_of(1), expected_version=eventfold.NO_STREAM)
    with pytest.raises(eventfold.InvalidInput, match="progress must be a callable"):
        await eventfold.transform(store, "order-1", target=suffix, fn=keep, progress=True)  # type: ignore[arg-type]
    assert (await store.stream_info("order-1")).replaced_by is None


async def test_the_cli_bar_goes_to_stderr(
    store: eventfold.EventStore, capsys: pytest.CaptureFixture[str]
) -> None:
    await store.append("order-1", events_of(3), expected_version=eventfold.NO_STREAM)
    with TransformBar() as bar:
        await eventfold.transform(store, "order-1", target=suffix, fn=keep, progress=bar)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "streams" in captured.err
    assert "3/3" in captured.err
    assert "events/s" in captured.err
