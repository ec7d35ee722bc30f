"""``eventfold schema``: check, record and show the event types' schemas.

::

    eventfold schema check --app shop       # CI: exit 1 when the code cannot read the store
    eventfold schema publish --app shop     # record the app's schemas (idempotent)
    eventfold schema show shop.OrderPlaced  # a type's versions and their schemas
    eventfold schema list                   # every type in the store's registry
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
from rich import box
from rich.table import Table
from rich.text import Text

from .. import schema
from .._events import Event, TypeRegistry, default_registry
from ..errors import InvalidInput
from ..store import EventStore, connect
from . import render
from ._imports import find_attribute, import_user_module
from .store_commands import CliState

__all__ = ["import_app", "schema_group"]

T = TypeVar("T")

APP_HELP = (
    "The application: a module importable from the working directory that imports every "
    "event type and registers the upcasters. Its event types are those of its top-level "
    "package in eventfold's default registry; MODULE:NAME names a TypeRegistry instead."
)


def import_app(reference: str) -> tuple[TypeRegistry, list[type[Event]]]:
    """Import ``MODULE`` or ``MODULE:REGISTRY``; return the registry and the app's types."""
    module_name, _, attr = reference.partition(":")
    if not module_name:
        raise InvalidInput(f"--app {reference!r} names no module; pass --app MODULE")
    module = import_user_module("--app", reference, module_name)
    if attr:

        def hint() -> str:
            known = sorted(k for k, v in vars(module).items() if isinstance(v, TypeRegistry))
            return f"; its TypeRegistry objects: {', '.join(known)}" if known else ""

        found = find_attribute("--app", reference, module, attr, hint)
        if not isinstance(found, TypeRegistry):
            raise InvalidInput(
                f"--app {reference!r}: {module_name}.{attr} is not an eventfold.TypeRegistry"
            )
        return found, schema.app_types(found, None)
    types = schema.app_types(default_registry, module_name)
    if not types:
        raise InvalidInput(
            f"--app {reference!r}: no event types of package {module_name.partition('.')[0]!r} "
            "are registered; import them in that module"
        )
    return default_registry, types


def _run(url: str, registry: TypeRegistry, work: Callable[[EventStore], Awaitable[T]]) -> T:
    async def go() -> T:
        async with connect(url, registry=registry) as store:
            return await work(store)

    return asyncio.run(go())


class _InOrder(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group("schema", cls=_InOrder)
def schema_group() -> None:
    """Check, record and show the event types' schemas (the store's schema registry).

    The registry is kept in the store, one system stream per type ($schema-TYPE).
    """


# -- check ---------------------------------------------------------------------------------


def _changes_table(report: schema.CompatReport) -> Table:
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", show_edge=False)
    for column in ("type", "versions", "field", "change", "", "detail"):
        table.add_column(column, overflow="fold")
    for entry in report.types:
        stored = "-" if entry.stored_version is None else f"v{entry.stored_version}"
        code = "-" if entry.code_version is None else f"v{entry.code_version}"
        versions = f"{stored} -> {code}"
        if not entry.changes:
            table.add_row(entry.type, versions, "", "unchanged", "ok", "")
        for change in entry.changes:
            verdict = Text("BREAKING", style="bold") if change.breaking else Text("compatible")
            table.add_row(entry.type, versions, change.field, change.kind, verdict, change.detail)
    return table


@schema_group.command("check")
@click.option("--app", "app", required=True, metavar="MODULE[:REGISTRY]", help=APP_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.pass_obj
def check_command(state: CliState, app: str, as_json: bool) -> None:
    """Compare the app's event types with the store's registry; fail if it cannot read them.

    Lists each change as compatible (an added optional field) or breaking (a removed,
    renamed or retyped field, a newly required one). Exits 1 when a stored version has no
    chain of upcasters to the code's version, a breaking change kept its version, or the
    store holds a newer version than the code: run it in CI before deploying.
    """
    registry, types = import_app(app)

    async def work(store: EventStore) -> schema.CompatReport:
        return schema.check(types, await schema.load(store, install=False), registry)

    report = _run(state.url, registry, work)
    if as_json:
        record = {
            "ok": report.ok,
            "types": report.types,
            "problems": report.problems,
        }
        click.echo(render.to_json(record))
    else:
        state.out.print(_changes_table(report))
        for problem in report.problems:
            state.out.print(f"problem: {problem}", markup=False, highlight=False)
    if not report.ok:
        raise schema.IncompatibleSchema(report.problems)
    if not as_json:
        breaking = sum(c.breaking for c in report.changes)
        state.out.print(
            f"ok: {len(report.types)} type{'s' if len(report.types) != 1 else ''} checked"
            + (f", {breaking} breaking change(s) covered by upcasters" if breaking else ""),
            markup=False,
            highlight=False,
        )


# -- publish -------------------------------------------------------------------------------


@schema_group.command("publish")
@click.option("--app", "app", required=True, metavar="MODULE[:REGISTRY]", help=APP_HELP)
@click.option(
    "--force", is_flag=True, help="Record the schemas even when `schema check` would fail."
)
@click.option("--json", "as_json", is_flag=True, help="Print the records made as JSON lines.")
@click.pass_obj
def publish_command(state: CliState, app: str, force: bool, as_json: bool) -> None:
    """Record the app's event type schemas in the store's registry (idempotent).

    Appends one $SchemaRegistered event per type whose schema is new; a schema already
    recorded appends nothing. Refuses (exit 1) when `eventfold schema check` would fail.
    """
    registry, types = import_app(app)

    async def work(store: EventStore) -> list[schema.SchemaRecord]:
        return await schema.publish(store, types, registry=registry, force=force)

    records = _run(state.url, registry, work)
    if as_json:
        for record in records:
            click.echo(render.to_json(record))
        return
    for record in records:
        state.out.print(
            f"recorded {record.type} v{record.version} ({record.fingerprint[:12]})",
            markup=False,
            highlight=False,
        )
    if not records:
        state.out.print(
            f"nothing to record: the registry has all {len(types)} schemas",
            markup=False,
            highlight=False,
        )


# -- show ----------------------------------------------------------------------------------


@schema_group.command("show")
@click.argument("type_name", metavar="TYPE")
@click.option("--json", "as_json", is_flag=True, help="Print each record as a JSON line.")
@click.pass_obj
def show_command(state: CliState, type_name: str, as_json: bool) -> None:
    """Show TYPE's recorded schema versions, oldest first, with each version's schema."""

    async def work(store: EventStore) -> tuple[list[schema.SchemaRecord], list[str]]:
        found = await schema.history(store, type_name)
        known = [] if found else (await schema.load(store, install=False)).types()
        return found, known

    records, known = _run(state.url, default_registry, work)
    if not records:
        hint = f"; recorded types: {', '.join(known)}" if known else "; the registry is empty"
        raise InvalidInput(f"no schema is recorded for type {type_name!r}{hint}")
    if as_json:
        for record in records:
            click.echo(render.to_json(record))
        return
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", show_edge=False)
    for column in ("version", "revision", "recorded", "producer", "fingerprint"):
        table.add_column(column)
    for record in records:
        table.add_row(
            f"v{record.version}",
            str(record.revision),
            render.format_time(record.recorded_at),
            record.producer_version or "-",
            record.fingerprint[:12],
        )
    state.out.print(Text(type_name, style="bold"))
    state.out.print(table)
    newest: dict[int, schema.SchemaRecord] = {r.version: r for r in records}
    for version, record in sorted(newest.items()):
        state.out.print(Text(f"v{version} (revision {record.revision})", style="bold"))
        state.out.print_json(render.to_json(record.schema))


# -- list ----------------------------------------------------------------------------------


@schema_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per type.")
@click.pass_obj
def list_command(state: CliState, as_json: bool) -> None:
    """List the types in the store's schema registry with their newest version."""

    async def work(store: EventStore) -> schema.StoredSchemas:
        return await schema.load(store, install=False)

    stored = _run(state.url, default_registry, work)
    rows = []
    for name in stored.types():
        latest = stored.latest(name)
        assert latest is not None
        rows.append((name, latest, len(stored.history(name))))
    if as_json:
        for name, latest, count in rows:
            record = {
                "type": name,
                "version": latest.version,
                "records": count,
                "recorded_at": latest.recorded_at,
            }
            click.echo(render.to_json(record))
        return
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", show_edge=False)
    for column in ("type", "version", "records", "last recorded"):
        table.add_column(column)
    for name, latest, count in rows:
        when = render.format_time(latest.recorded_at)
        table.add_row(name, f"v{latest.version}", str(count), when)
    state.out.print(table)
    state.out.print(f"{len(rows)} type{'s' if len(rows) != 1 else ''}", highlight=False)


COMMANDS: tuple[click.Command, ...] = (schema_group,)
"""The schema commands (one group), in the order ``--help`` lists them."""
