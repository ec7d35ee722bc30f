"""The ``transform`` command: copy streams through a function, then switch readers.

``--fn MODULE:NAME`` names the transform function the way ``--decider`` names a decider:
the module is imported from the working directory or the Python path. Everything else is
`eventfold.transform`; no command catches `EventfoldError` (the group maps it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from rich import box
from rich.table import Table

from ..errors import InvalidInput
from ..store import EventStore
from ..transform import TransformFn, TransformReport, transform
from . import render
from ._imports import find_attribute, import_user_module
from .commands import CliState, run_with_store

__all__ = ["COMMANDS", "load_function", "transform_command"]


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
    fn = load_function(fn_ref)
    target = _target(to, suffix)

    async def work(store: EventStore) -> TransformReport:
        return await transform(
            store,
            source,
            category=category,
            target=target,
            fn=fn,
            dry_run=dry_run,
            progress=state.err.is_terminal,
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


def _table(report: TransformReport) -> Table:
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("source", overflow="fold")
    table.add_column("target", overflow="fold")
    table.add_column("status")
    for name in _COUNTS:
        table.add_column(name, justify="right")
    for s in report.streams:
        table.add_row(s.source, s.target, s.status, *(f"{getattr(s, n):,}" for n in _COUNTS))
    return table


COMMANDS: tuple[click.Command, ...] = (transform_command,)
"""The schema-evolution commands that write, in the order ``--help`` lists them."""
