"""How the CLI shows events, streams and stats: rich tables for people, JSON for tools.

Tables never depend on colour (only bold headers), so they read the same in a plain
terminal, a pipe or a log file. JSON output is one object per line, encoded with msgspec.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from rich import box
from rich.table import Table
from rich.text import Text

from .._events import RecordedEvent
from .._undecodable import UndecodedPayload
from ..store import StoreStats, StreamInfo
from ..store.connect import redact_url
from ..write import Aggregate, Loaded

__all__ = [
    "counts_table",
    "event_json",
    "event_line",
    "event_record",
    "events_table",
    "format_time",
    "loaded_summary",
    "printable",
    "redact_url",
    "state_builtins",
    "stats_record",
    "stats_table",
    "streams_table",
    "summarize",
    "to_json",
    "undecodable_note",
]

_encoder = msgspec.json.Encoder()


def to_json(value: Any) -> str:
    """Compact JSON for ``value`` (dicts, lists, Event structs, positions as strings)."""
    return _encoder.encode(value).decode()


def printable(text: str) -> str:
    """``text`` safe to print: control and other invisible characters as escapes.

    A stored type, stream id or payload is anyone's input; printed raw, an escape code
    would drive the terminal and a newline would split a row.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def summarize(data: Any, width: int = 60) -> str:
    """The event's data as compact JSON, cut to ``width`` characters with an ellipsis.

    Data that does not decode is shown as stored, marked, so an operator sees what to
    repair.
    """
    text = f"undecodable: {data.text}" if isinstance(data, UndecodedPayload) else to_json(data)
    return _cut(text, width)


def _cut(text: str, width: int) -> str:
    text = printable(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def format_time(when: _dt.datetime) -> str:
    """A UTC timestamp to the millisecond, short enough for a table column."""
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}"


def event_record(event: RecordedEvent) -> dict[str, Any]:
    """Every envelope field of ``event`` as JSON-ready values.

    Data that does not decode is ``null``, with the stored JSON as text in ``raw_data``
    and the reason in ``undecodable``: each line stays valid JSON whatever was stored.
    """
    data = event.data
    if isinstance(data, UndecodedPayload):
        return {
            **event_record(msgspec.structs.replace(event, data=None)),
            "raw_data": data.text,
            "undecodable": str(data.error),
        }
    return {
        "event_id": str(event.event_id),
        "stream_id": event.stream_id,
        "version": event.version,
        "position": str(event.position),
        "type": event.type,
        "schema_version": event.schema_version,
        "data": event.data,
        "metadata": event.metadata,
        "recorded_at": event.recorded_at.isoformat(),
    }


def event_json(event: RecordedEvent) -> str:
    """One JSON line holding every envelope field of ``event``."""
    return to_json(event_record(event))


def undecodable_note(event: RecordedEvent) -> str | None:
    """Why ``event``'s data is shown as stored, or None when it decoded."""
    data = event.data
    return str(data.error) if isinstance(data, UndecodedPayload) else None


def event_line(event: RecordedEvent) -> str:
    """One plain-text line for a followed log: position, stream@version, type, time, data."""
    where = f"{printable(event.stream_id)}@{event.version}"
    return (
        f"{event.position!s:>8}  {where:<24}  {_cut(event.type, 40):<20}  "
        f"{format_time(event.recorded_at)}  {summarize(event.data, 80)}"
    )


def events_table(
    events: Iterable[RecordedEvent],
    *,
    title: str | None = None,
    show_stream: bool = False,
    show_time: bool = True,
) -> Table:
    """A table of events: version, position, type, recorded_at and a data summary."""
    events = list(events)
    longest = max((len(printable(e.type)) for e in events), default=4)
    heading = Text(printable(title)) if title is not None else None
    table = Table(title=heading, box=box.SIMPLE_HEAD, title_justify="left")
    if show_stream:
        table.add_column("stream", no_wrap=True, overflow="ellipsis", max_width=40)
    table.add_column("version", justify="right", no_wrap=True)
    table.add_column("position", justify="right", no_wrap=True)
    # Like the data, a long type is cut (never wrapped) rather than pushing the other
    # columns off a narrow terminal: rich narrows wrappable columns first.
    table.add_column("type", overflow="ellipsis", min_width=min(16, longest), max_width=40)
    if show_time:
        table.add_column("recorded_at (UTC)", no_wrap=True)
    # The summary is the only column rich may narrow on a small terminal (it narrows
    # wrappable columns first); compact JSON has no spaces, so it is cut, not wrapped.
    table.add_column("data", overflow="ellipsis", min_width=12)
    for e in events:
        # Text, not str: rich would read brackets in a stored name as markup.
        cells: list[str | Text] = [Text(printable(e.stream_id))] if show_stream else []
        cells += [str(e.version), str(e.position)]
        cells.append(Text(printable(e.type), no_wrap=True, overflow="ellipsis"))
        if show_time:
            cells.append(format_time(e.recorded_at))
        table.add_row(*cells, Text(summarize(e.data), no_wrap=True, overflow="ellipsis"))
    return table


def streams_table(streams: Iterable[StreamInfo], *, title: str | None = None) -> Table:
    """A table of stream ids with their versions."""
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("stream", overflow="fold")
    table.add_column("version", justify="right")
    for info in streams:
        table.add_row(Text(printable(info.stream_id)), str(info.version))
    return table


def stats_record(stats: StoreStats, url: str | None = None) -> dict[str, Any]:
    """What ``info --json`` prints: the store's URL (password hidden) and its stats."""
    record: dict[str, Any] = {"url": redact_url(url)} if url is not None else {}
    record.update(
        backend=stats.backend, head=str(stats.head), streams=stats.streams, events=stats.events
    )
    if stats.epoch is not None:
        record["epoch"] = stats.epoch
    return record


def stats_table(stats: StoreStats, url: str | None = None, *, title: str | None = None) -> Table:
    """A two-column table of the store's stats."""
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in stats_record(stats, url).items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    return table


def counts_table(counts: Mapping[str, int], *, title: str | None = None) -> Table:
    """A table of names with counts, largest first."""
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", min_width=40)
    table.add_column("type", overflow="fold")
    table.add_column("events", justify="right")
    for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(name, f"{n:,}")
    return table


def state_builtins(state: Any) -> Any:
    """A folded state as JSON-ready values: a struct's or dataclass's fields, an
    aggregate's instance attributes; anything msgspec cannot encode becomes its repr."""
    if isinstance(state, Aggregate):
        state = {k: v for k, v in vars(state).items() if k != "_eventfold_pending"}
    return msgspec.to_builtins(state, enc_hook=repr)


def loaded_summary(stream_id: str, loaded: Loaded[Any], as_of: _dt.datetime | None = None) -> str:
    """One line on where a loaded state came from: version, snapshot, events folded."""
    when = f" as of {as_of.isoformat()}" if as_of is not None else ""
    if loaded.version == 0:
        return f"{stream_id} at version 0{when}: no events, the decider's initial state"
    folded = f"{loaded.replayed:,} event{'s' if loaded.replayed != 1 else ''}"
    if loaded.snapshot_version:
        taken = (
            f", taken {format_time(loaded.snapshot_taken)} UTC"
            if loaded.snapshot_taken is not None
            else ""
        )
        how = f"the snapshot at version {loaded.snapshot_version}{taken}, then {folded} folded"
    else:
        how = f"{folded} folded, no snapshot"
    return f"{stream_id} at version {loaded.version}{when} ({how})"
