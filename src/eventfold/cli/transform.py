"""The ``transform`` command: copy streams through a function, then switch readers.

``--fn MODULE:NAME`` names the transform function the way ``--decider`` names a decider:
the module is imported from the working directory or the Python path. Everything else is
`eventfold.transform`; no command catches `EventfoldError` (the group maps it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import Any

import click
from rich import box
from rich.table import Table
from rich.text import Text

from .._events import RecordedEvent
from ..errors import InvalidInput
from ..schema import TransformFn, TransformReport, transform
from ..store import EventStore
from . import render
from ._imports import find_attribute, import_user_module
from ._usercode import call_user
from .progress import TransformBar
from .store_commands import CliState, run_with_store

__all__ = ["COMMANDS", "guard_function", "load_function", "transform_command"]


def load_function(reference: str) -> TransformFn:
    """Import ``MODULE:NAME`` and return it if it is callable; `InvalidInput` otherwise."""
    module_name, _, name = reference.partition(":")
    if not module_name or not name:
        raise InvalidInput(
            f"--fn {reference!r} is not MODULE:NAME; name a module importable from the "
            "working directory and a function in it, e.g. --fn migrations:split_items"
        )
    module = import_user_module("--fn", reference, module_name)
    found: Any = find_attribute("--fn", reference, module, name)
    if not callable(found):
        raise InvalidInput(
            f"--fn {reference!r} is an object of type {type(found).__name__}, not a function "
            "taking a RecordedEvent"
        )
    fn: TransformFn = found
    return fn


def guard_function(reference: str, fn: TransformFn) -> TransformFn:
    """``fn`` with what it raises (also while its result is iterated) named by the event."""

    def run(event: RecordedEvent) -> Any:
        result = fn(event)
        # A generator raises only when iterated: iterate it here, under the guard.
        return list(result) if isinstance(result, Iterator) else result

    def guarded(event: RecordedEvent) -> Any:
        def where() -> str:
            return f" at {event.stream_id}@{event.version}"

        return call_user(f"the transform function {reference}", where, run, event)

    return guarded


def _target(to: str | None, suffix: str | None) -> Callable[[str], str]:
    if to is not None:
        return lambda _source: to
    assert suffix is not None
    return lambda source: source + suffix


@click.command("transform")
@click.argument("source", required=False)
@click.option("--category", metavar="C", help="Transform every stream of this category instead.")
@click.option(
    "--fn", "fn_ref", required=True, metavar="MODULE:NAME", help="The transform function."
)
@click.option("--to", metavar="ID", help="The new stream's id (one SOURCE only).")
@click.option(
    "--suffix",
    metavar="TEXT",
    help="Name each new stream after its source plus TEXT (e.g. --suffix .v2).",
)
@click.option("--dry-run", is_flag=True, help="Report what would change; write nothing.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Events per append to a new stream.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.pass_obj
def transform_command(
    state: CliState,
    source: str | None,
    category: str | None,
    fn_ref: str,
    to: str | None,
    suffix: str | None,
    dry_run: bool,
    batch_size: int,
    as_json: bool,
) -> None:
    """Copy a stream (or a category) into new streams through a function, then switch.

    Event ids, recorded times and order are kept; the originals stay untouched. Once a
    stream is copied, reads of it follow an alias to the new stream and appends to it
    fail. Rerun after a crash or a conflict: it resumes where it stopped.
    """
    if (source is None) == (category is None):
        raise click.UsageError("give a SOURCE stream or --category, not both or neither")
    if (to is None) == (suffix is None):
        raise click.UsageError("give --to or --suffix, not both or neither")
    if to is not None and category is not None:
        raise click.UsageError("--to names one stream: use --suffix with --category")
    if to is not None and to == source:
        raise click.UsageError(
            f"--to {to!r} is the source stream; a transformation writes a new stream, "
            f"e.g. --to {source}.v2"
        )
    if suffix == "":
        raise click.UsageError("--suffix is empty; give the text to add, e.g. --suffix .v2")
    fn = guard_function(fn_ref, load_function(fn_ref))
    target = _target(to, suffix)

    async def work(store: EventStore) -> TransformReport:
        with TransformBar() if state.err.is_terminal else nullcontext() as bar:
            return await transform(
                store,
                source,
                category=category,
                target=target,
                fn=fn,
                dry_run=dry_run,
                progress=bar,
                batch_size=batch_size,
            )

    report = run_with_store(state.url, work)
    if as_json:
        click.echo(render.to_json(_record(report)))
        return
    state.out.print(_table(report))
    verb = "would copy" if dry_run else "copied"
    state.out.print(
        f"{len(report.streams):,} stream{'s' if len(report.streams) != 1 else ''}: {verb} "
        f"{report.total('events'):,} events into {report.total('written'):,}"
        + (" (dry run: nothing written)" if dry_run else ""),
        highlight=False,
        markup=False,
    )


_COUNTS = ("events", "copied", "rewritten", "split", "dropped", "written", "resumed")


def _record(report: TransformReport) -> dict[str, Any]:
    return {
        "dry_run": report.dry_run,
        "streams": [
            {
                "source": s.source,
                "target": s.target,
                "status": s.status,
                **{name: getattr(s, name) for name in _COUNTS},
            }
            for s in report.streams
        ],
        "totals": {name: report.total(name) for name in _COUNTS},
    }


_DETAILS = ("copied", "rewritten", "split", "dropped", "resumed")


def _table(report: TransformReport) -> Table:
    # Ten columns do not fit 80: the counts that say how the events changed share one
    # column, and those that are zero are left out of it.
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("source", overflow="fold", ratio=2)
    table.add_column("target", overflow="fold", ratio=2)
    table.add_column("status", overflow="fold", ratio=1, min_width=8)
    table.add_column("events", justify="right", no_wrap=True)
    table.add_column("written", justify="right", no_wrap=True)
    table.add_column("how", overflow="fold", ratio=2, min_width=10)
    for s in report.streams:
        how = ", ".join(f"{getattr(s, n):,} {n}" for n in _DETAILS if getattr(s, n)) or "-"
        table.add_row(
            Text(s.source), Text(s.target), s.status, f"{s.events:,}", f"{s.written:,}", how
        )
    return table


COMMANDS: tuple[click.Command, ...] = (transform_command,)
"""The schema-evolution commands that write, in the order ``--help`` lists them."""
