"""The CLI's commands: each parses its options, calls the library, and renders the result.

No command catches `EventfoldError`: the group maps every one of them to an exit code in
one place (`eventfold.cli.app`).
"""

from __future__ import annotations

import asyncio
import codecs
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
import msgspec
from rich.console import Console

from .. import schema
from .._events import NewEvent, RecordedEvent
from .._nesting import MAX_NESTING_DEPTH
from .._position import START, ExpectedVersion, Position, StreamState
from .._undecodable import keep_undecodable
from ..errors import InvalidInput
from ..store import AppendResult, EventStore, StoreStats, StreamInfo, connect
from . import render

__all__ = ["COMMANDS", "CliState", "demo", "run_with_store"]

T = TypeVar("T")


@dataclass(frozen=True)
class CliState:
    """What the group hands every command: the store URL and where to print."""

    url: str
    url_from_command_line: bool
    """Whether ``--url`` was given on the command line (not taken from the environment)."""
    out: Console
    err: Console


def run_with_store(
    url: str, work: Callable[[EventStore], Awaitable[T]], *, read_only: bool = False
) -> T:
    """Open the store at ``url``, run ``work`` on it, close the store, return the result.

    ``read_only``: for the inspection commands, which must never create, migrate or write
    a store (and can read a read-only file).
    """

    async def go() -> T:
        async with connect(url, read_only=read_only) as store:
            return await work(store)

    return asyncio.run(go())


_JSON_NAMES = {
    type(None): "null", bool: "boolean", int: "number", float: "number", str: "string",
    list: "array",
}  # fmt: skip


def parse_json_object(text: str, name: str) -> dict[str, Any]:
    """Parse a command-line JSON argument that must be an object; ``-`` reads stdin.

    The bytes must be UTF-8 (as JSON requires); a leading byte-order mark is skipped.
    """
    # Bytes, not text: the terminal's encoding does not decide what a payload means, and
    # an argument's undecodable bytes come back from their surrogate escapes unchanged.
    raw = sys.stdin.buffer.read() if text == "-" else os.fsencode(text)
    raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{name} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "JSON must be UTF-8: convert it first, e.g. with iconv -t UTF-8"
        ) from None
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidInput(
            f'{name} is not valid JSON ({exc}); pass an object such as \'{{"sku": "A-1"}}\''
        ) from None
    except RecursionError:
        raise InvalidInput(
            f"{name} nests objects and arrays too deeply to read; stored events may nest at "
            f"most {MAX_NESTING_DEPTH} levels"
        ) from None
    if not isinstance(value, dict):
        raise InvalidInput(
            f"{name} must be a JSON object, got a JSON {_JSON_NAMES.get(type(value), 'value')}; "
            'pass an object such as \'{"sku": "A-1"}\''
        )
    return value


def warn_undecodable(state: CliState, event: RecordedEvent) -> None:
    """Say on stderr why an event is shown as stored JSON, if it is."""
    note = render.undecodable_note(event)
    if note is not None:
        state.err.print(f"warning: {note}", markup=False, highlight=False)


class ExpectedVersionParam(click.ParamType[ExpectedVersion]):
    """``--expected-version``: an int >= 0 or any, no_stream, stream_exists."""

    name = "expected version"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> ExpectedVersion:
        if isinstance(value, (int, StreamState)):
            return value
        text = str(value).strip().lower().replace("-", "_")
        for state in StreamState:
            if text == state.value:
                return state
        if text.isdigit():
            return int(text)
        self.fail(
            f"{value!r} is not an expected version; use the version you read (an int >= 0, "
            "0 meaning no events yet), any, no_stream or stream_exists",
            param,
            ctx,
        )


FORMAT = click.Choice(["table", "jsonl"])


# -- info ----------------------------------------------------------------------------------


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.pass_obj
def info(state: CliState, as_json: bool) -> None:
    """Show the store's backend, head position, and how many streams and events it holds."""

    async def work(store: EventStore) -> StoreStats:
        return await store.stats()

    stats = run_with_store(state.url, work, read_only=True)
    if as_json:
        click.echo(render.to_json(render.stats_record(stats, state.url)))
    else:
        state.out.print(render.stats_table(stats, state.url, title="eventfold store"))


# -- streams -------------------------------------------------------------------------------


@click.command()
@click.option("--category", help="Only streams of this category (the id's part before '-').")
@click.option("--after", metavar="ID", help="Start after this stream id (ids are sorted).")
@click.option("--limit", type=click.IntRange(min=1), help="List at most N streams.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@click.pass_obj
def streams(
    state: CliState, category: str | None, after: str | None, limit: int | None, as_json: bool
) -> None:
    """List stream ids with their versions, sorted by id."""

    async def work(store: EventStore) -> list[StreamInfo]:
        # One extra row tells whether there is a next page, without a count query.
        wanted = None if limit is None else limit + 1
        return [i async for i in store.streams(after=after, category=category, limit=wanted)]

    found = run_with_store(state.url, work, read_only=True)
    more = limit is not None and len(found) > limit
    found = found[:limit] if limit is not None else found
    if as_json:
        click.echo(
            render.to_json([{"stream_id": i.stream_id, "version": i.version} for i in found])
        )
        return
    state.out.print(render.streams_table(found))
    state.out.print(f"{len(found):,} stream{'s' if len(found) != 1 else ''}", highlight=False)
    if more:
        state.out.print(
            f"more: eventfold streams --after {found[-1].stream_id!r}",
            markup=False,
            highlight=False,
        )


# -- read ----------------------------------------------------------------------------------


@click.command()
@click.argument("stream")
@click.option(
    "--from-version",
    type=click.IntRange(min=1),
    metavar="N",
    help="Start at this version (inclusive); default: the first, or the newest --backwards.",
)
@click.option("--backwards", is_flag=True, help="Read from the newest event towards the oldest.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Read at most N events.")
@click.option(
    "--format",
    "fmt",
    type=FORMAT,
    default="table",
    show_default=True,
    help="A table for people, or JSON lines with every envelope field for tools.",
)
@click.pass_obj
def read(
    state: CliState,
    stream: str,
    from_version: int | None,
    backwards: bool,
    limit: int | None,
    fmt: str,
) -> None:
    """Show the events of STREAM in order (or backwards)."""
    events: list[RecordedEvent] = []

    async def work(store: EventStore) -> int:
        # An event that no longer decodes is shown as stored, so it can be repaired.
        with keep_undecodable():
            async for e in store.read_stream(
                stream, from_version=from_version, backwards=backwards, limit=limit
            ):
                warn_undecodable(state, e)
                if fmt == "jsonl":
                    click.echo(render.event_json(e))
                else:
                    events.append(e)
        # Only to say honestly why nothing was shown: no events, or none from there.
        return 0 if events or fmt == "jsonl" else await store.stream_version(stream)

    version = run_with_store(state.url, work, read_only=True)
    if fmt == "jsonl":
        return
    if not events:
        why = (
            f"has no events from version {from_version} (its newest is version {version})"
            if version
            else "has no events"
        )
        state.out.print(f"stream {stream!r} {why}", markup=False, highlight=False)
        return
    state.out.print(render.events_table(events, title=f"stream {stream}"))


# -- tail ----------------------------------------------------------------------------------


@click.command()
@click.option(
    "--after",
    metavar="POSITION",
    help="Start after this global position; default: the current head (only new events).",
)
@click.option("--from-start", is_flag=True, help="Start at the beginning of the log.")
@click.option("--type", "types", multiple=True, metavar="T", help="Only events of type T (repeat).")
@click.option(
    "--category", "categories", multiple=True, metavar="C", help="Only streams of category C."
)
@click.option(
    "--format",
    "fmt",
    type=FORMAT,
    default="table",
    show_default=True,
    help="One aligned line per event, or JSON lines with every envelope field.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.01),
    default=0.2,
    show_default=True,
    metavar="SECONDS",
    help="How often to poll for new events.",
)
@click.option(
    "--count", type=click.IntRange(min=1), metavar="N", help="Stop after N events; default: never."
)
@click.pass_obj
def tail(
    state: CliState,
    after: str | None,
    from_start: bool,
    types: tuple[str, ...],
    categories: tuple[str, ...],
    fmt: str,
    interval: float,
    count: int | None,
) -> None:
    """Follow the global log: print events as they are appended, until Ctrl-C."""
    if after is not None and from_start:
        raise click.UsageError("give --after or --from-start, not both")
    start = Position.parse(after) if after is not None else (START if from_start else None)
    show = render.event_json if fmt == "jsonl" else render.event_line

    async def work(store: EventStore) -> None:
        last = start if start is not None else await store.head()
        if start is not None:
            # The store checks a position's form when a read starts: refuse a position of
            # another store's form before announcing anything.
            async for _ in store.read_all(after=start, limit=1):
                break
        state.err.print(f"following the log after position {last} (Ctrl-C to stop)", style="dim")
        seen = 0
        while True:
            # Taken before the read: every event up to it is readable now, so the read below
            # returns all of them that match, and the checkpoint can move past the rest.
            # Without this a filter that matches nothing would rescan a growing tail.
            head = await store.head()
            with keep_undecodable():
                async for e in store.read_all(
                    after=last,
                    types=list(types) or None,
                    categories=list(categories) or None,
                    limit=None if count is None else count - seen,
                ):
                    warn_undecodable(state, e)
                    click.echo(show(e))
                    last = e.position
                    seen += 1
            if count is not None and seen >= count:
                return
            last = max(last, head)
            await asyncio.sleep(interval)

    try:
        run_with_store(state.url, work, read_only=True)
    except KeyboardInterrupt:
        # Ctrl-C is how a tail ends: asyncio.run has already cancelled the read and
        # closed the store.
        state.err.print("stopped", style="dim")


# -- append --------------------------------------------------------------------------------


@click.command()
@click.argument("stream")
@click.argument("type")
@click.argument("json_data", metavar="JSON")
@click.option(
    "--expected-version",
    type=ExpectedVersionParam(),
    default="any",
    show_default=True,
    metavar="N|any|no_stream|stream_exists",
    help="Fail unless the stream is at this version (the version you read; 0: no events).",
)
@click.option(
    "--event-id",
    type=click.UUID,
    metavar="UUID",
    help="The event's id; appending the same id again is a no-op that returns the same result.",
)
@click.option("--metadata", metavar="JSON", help="A JSON object stored as the event's metadata.")
@click.option(
    "--force-system",
    is_flag=True,
    help="Allow a $ stream or type: those are eventfold's own (e.g. the schema registry).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.pass_obj
def append(
    state: CliState,
    stream: str,
    type: str,
    json_data: str,
    expected_version: ExpectedVersion,
    event_id: uuid.UUID | None,
    metadata: str | None,
    force_system: bool,
    as_json: bool,
) -> None:
    """Append one event of TYPE with JSON data (an object; '-' reads stdin) to STREAM."""
    if not type.strip():
        raise InvalidInput("TYPE is empty; name the event's type, e.g. OrderPlaced")
    if not force_system:
        _refuse_system_names(stream, type)
    data = parse_json_object(json_data, "the JSON argument")
    meta = parse_json_object(metadata, "--metadata") if metadata is not None else None
    event = NewEvent(data, type=type, event_id=event_id, metadata=meta)

    async def work(store: EventStore) -> AppendResult:
        # Raw JSON of a type with no Python class here is checked against the store's
        # schema registry, the reject-on-write barrier for producers that are not Python.
        await schema.load(store)
        return await store.append(stream, [event], expected_version=expected_version)

    result = run_with_store(state.url, work)
    if as_json:
        record = {
            "stream_id": stream,
            "version": result.version,
            "position": str(result.position),
            "retry": result.retry,
        }
        click.echo(render.to_json(record))
    elif result.retry:
        state.out.print(
            f"already stored: event {event_id} is in {stream} (version {result.version}, "
            f"position {result.position}); nothing was appended",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    else:
        state.out.print(
            f"appended to {stream}: version {result.version}, position {result.position}",
            markup=False,
            highlight=False,
        )


def _refuse_system_names(stream: str, type: str) -> None:
    """`InvalidInput` for a ``$`` stream or type: eventfold writes those itself, after
    checks (a schema registration is checked for compatibility) an append would skip."""
    for what, name in (("stream", stream), ("type", type)):
        if name.startswith("$"):
            raise InvalidInput(
                f"{what} {name!r} starts with $, which marks eventfold's own streams and "
                "types (such as the schema registry's); eventfold writes them itself, e.g. "
                "with `eventfold schema publish`; pass --force-system to append anyway"
            )


# -- demo ----------------------------------------------------------------------------------


@click.command()
@click.option(
    "--url",
    "demo_url",
    metavar="URL",
    help="The store to run in; default: a fresh SQLite file in a new temporary directory "
    "(the group's --url counts only when given on the command line, never EVENTFOLD_URL).",
)
@click.option(
    "--tasks",
    type=click.IntRange(min=1, max=256),
    default=16,
    show_default=True,
    help="Concurrent asyncio tasks writing orders.",
)
@click.option(
    "--orders",
    type=click.IntRange(min=1, max=100_000),
    default=50,
    show_default=True,
    help="Orders to place, pay and ship.",
)
@click.pass_obj
def demo(state: CliState, demo_url: str | None, tasks: int, orders: int) -> None:
    """Run a short tour: concurrent writers, a conflict, an idempotent retry, the store."""
    # Imported here so the demo's event types are registered only when the demo runs.
    from .demo import DemoCheckFailed, run_demo

    url = demo_url or (state.url if state.url_from_command_line else None)
    try:
        asyncio.run(run_demo(state.out, url=url, tasks=tasks, orders=orders))
    except DemoCheckFailed as exc:
        raise click.ClickException(f"the demo caught the store misbehaving: {exc}") from exc


COMMANDS: tuple[click.Command, ...] = (info, streams, read, tail, append)
"""The commands over the store itself, in the order ``--help`` lists them.

`eventfold.cli.app` puts the decider commands (`eventfold.cli.decider_commands`) after them and
``demo`` last.
"""
