"""The commands of the read path: ``projections``, ``run``, ``rebuild``, ``parked``,
``replay-parked``.

``--app MODULE`` (or ``MODULE:NAME``) names the application's projections: every
`Projection` / `DocumentProjection` defined at the top level of the module, or the one
(or the list) that ``NAME`` is. Read models live beside the events in the store given by
``--url`` (`eventfold.projections.read_models_for`); on PostgreSQL, ``run`` takes its
partitions' leases as advisory locks, so several ``eventfold run`` processes on several
machines share the work with one owner per partition.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import click
import msgspec
from rich import box
from rich.console import Group
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from .._position import Position
from ..errors import InvalidInput
from ..projections import (
    BuildProgress,
    DaemonOptions,
    Leases,
    MemoryLeases,
    ProjectionBase,
    ProjectionDaemon,
    ProjectionStatus,
    ProjectionStopped,
    WorkerInfo,
    WorkerState,
    check_projections,
    check_unique_names,
    projection_statuses,
    read_models_for,
    rebuild,
    replay_parked,
)
from ..store import EventStore, backend_of
from ._imports import find_attribute, import_user_module
from ._shutdown import GracefulStop
from .store_commands import CliState, run_with_store

__all__ = ["COMMANDS", "load_projections"]

APP_HELP = (
    "The application's projections: MODULE (every projection defined in it) or "
    "MODULE:NAME (one projection, or a list of them), importable from the working directory."
)


def load_projections(reference: str) -> list[ProjectionBase]:
    """Import ``MODULE[:NAME]`` and return its projections; `InvalidInput` says what is wrong."""
    module_name, _, name = reference.partition(":")
    if not module_name:
        raise InvalidInput(f"--app {reference!r} names no module; pass --app MODULE[:NAME]")
    module = import_user_module("--app", reference, module_name)
    if name:
        found = find_attribute("--app", reference, module, name)
        if isinstance(found, ProjectionBase):
            return [found]
        if isinstance(found, list | tuple) and all(isinstance(p, ProjectionBase) for p in found):
            return list(check_unique_names(found).values())
        raise InvalidInput(
            f"--app {reference!r} is a {type(found).__name__}, not a projection or a list of them"
        )
    projections: list[ProjectionBase] = []
    for value in vars(module).values():
        if isinstance(value, ProjectionBase) and all(value is not p for p in projections):
            projections.append(value)
    if not projections:
        raise InvalidInput(
            f"--app {reference!r}: module {module_name!r} defines no projection at its top "
            "level; define them there, or pass MODULE:NAME"
        )
    return list(check_unique_names(projections).values())


def _pick(projections: list[ProjectionBase], name: str, reference: str) -> ProjectionBase:
    for p in projections:
        if p.name == name:
            return p
    known = ", ".join(sorted(p.name for p in projections))
    raise InvalidInput(f"no projection named {name!r} in --app {reference!r}; it has: {known}")


def _leases_for(store: EventStore) -> Leases:
    backend = backend_of(store)
    if backend is None or backend.leases is None:
        return MemoryLeases()
    return backend.leases(store)


async def _close(leases: Leases) -> None:
    close = getattr(leases, "close", None)
    if close is not None:
        await close()


def _status_row(s: ProjectionStatus) -> dict[str, Any]:
    return {
        "name": s.name,
        "version": s.version,
        "active_version": s.active_version,
        "state": str(s.state),
        "position": str(s.position),
        "head": str(s.head),
        "lag_events": s.lag_events,
        "lag_exact": s.lag_exact,
        "lag_seconds": round(s.lag_seconds, 3),
        "parked": s.parked,
        "last_error": s.last_error,
    }


def _status_table(statuses: Sequence[ProjectionStatus]) -> Group:
    """The statuses as a table, each last error on lines of its own below it: at 80
    columns an error column would squeeze the names and positions readers copy."""
    table = Table(title="projections", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    rows = [
        (
            s.name,
            f"v{s.version}"
            + (
                f" (readers: v{s.active_version})"
                if s.active_version not in (None, s.version)
                else ""
            ),
            str(s.state),
            str(s.position),
            f"{s.lag_events:,}" + ("" if s.lag_exact else "+"),
            f"{s.lag_seconds:.1f}",
            str(s.parked),
        )
        for s in statuses
    ]
    columns = ("name", "version", "state", "position", "lag", "lag s", "parked")
    for i, column in enumerate(columns):
        table.add_column(
            column,
            justify="right" if column.startswith(("lag", "park")) else "left",
            min_width=max([len(column), *(len(row[i]) for row in rows)]),
            no_wrap=True,
        )
    for row in rows:
        table.add_row(*row)
    errors = [Text(f"{s.name} v{s.version}: {s.last_error}") for s in statuses if s.last_error]
    return Group(table, *errors)


@click.command("projections")
@click.option("--app", "reference", required=True, metavar="MODULE[:NAME]", help=APP_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per projection.")
@click.pass_obj
def projections_command(state: CliState, reference: str, as_json: bool) -> None:
    """Each projection's state, position and lag behind the head of the log."""
    projections = load_projections(reference)

    async def work(store: EventStore) -> list[ProjectionStatus]:
        models = read_models_for(store)
        return await projection_statuses(store, models, projections)

    statuses = run_with_store(state.url, work)
    if as_json:
        for s in statuses:
            state.out.print(msgspec.json.encode(_status_row(s)).decode(), soft_wrap=True)
    else:
        state.out.print(_status_table(statuses))


STOP_ADVICE = (
    "fix the handler, then start `eventfold run` again (it resumes from the last checkpoint), "
    "or give the projection the 'park' poison policy to set such events aside "
    "(see `eventfold parked` and `eventfold replay-parked`)"
)


def _stopped(daemon: ProjectionDaemon) -> list[WorkerInfo]:
    return [i for i in daemon.workers() if i.state is WorkerState.FAILED]


def _still_running(daemon: ProjectionDaemon) -> str:
    return ", ".join(
        f"{i.name} v{i.version} p{i.partition} ({i.state})"
        for i in daemon.workers()
        if i.state is not WorkerState.STOPPED
    )


async def _caught_up(
    store: EventStore, daemon: ProjectionDaemon, stopped: Sequence[WorkerInfo]
) -> list[ProjectionStatus] | None:
    """Every projection's status once each is at the head or stopped, else None."""
    halted = {i.name for i in stopped}
    statuses = await projection_statuses(store, daemon.models, list(daemon.projections.values()))
    if all((s.lag_events == 0 and s.lag_exact) or s.name in halted for s in statuses):
        return statuses
    return None


@click.command("run")
@click.option("--app", "reference", required=True, metavar="MODULE[:NAME]", help=APP_HELP)
@click.option(
    "--only", "only", multiple=True, metavar="NAME", help="Run only these projections (repeat)."
)
@click.option(
    "--until-caught-up",
    is_flag=True,
    help="Exit once every projection has reached the head of the log, or has stopped on a "
    "poison event (then with status 1; for scripts).",
)
@click.option(
    "--batch-size", type=click.IntRange(1, 100_000), default=None, help="Events per batch."
)
@click.option(
    "--stop-timeout",
    type=click.FloatRange(min=0.1, max=3600),
    default=DaemonOptions.stop_timeout,
    show_default=True,
    metavar="SECONDS",
    help="How long the workers get to stop on Ctrl-C or SIGTERM; the process exits within "
    "twice this whatever they wait on, and at once on a second signal.",
)
@click.pass_obj
def run_command(
    state: CliState,
    reference: str,
    only: tuple[str, ...],
    until_caught_up: bool,
    batch_size: int | None,
    stop_timeout: float,
) -> None:
    """Run the projection daemon until interrupted (Ctrl-C or SIGTERM).

    Exits with status 1 if a projection stopped on a poison event.
    """
    projections = load_projections(reference)
    if only:
        projections = [_pick(projections, name, reference) for name in only]
    check_projections(projections)
    options = DaemonOptions(
        batch_size=batch_size or DaemonOptions.batch_size, stop_timeout=stop_timeout
    )
    daemons: list[ProjectionDaemon] = []
    shutdown = GracefulStop(
        "eventfold run", 2 * stop_timeout, lambda: "".join(map(_still_running, daemons))
    )

    async def supervise(store: EventStore, daemon: ProjectionDaemon) -> list[WorkerInfo]:
        reported: set[str] = set()
        while True:
            stopped = _stopped(daemon)
            for info in stopped:
                key = f"{info.name}/p{info.partition}"
                if key not in reported:
                    reported.add(key)
                    state.err.print(
                        f"projection {info.name!r} v{info.version} partition {info.partition} "
                        f"stopped on a poison event; {STOP_ADVICE}",
                        markup=False,
                    )
            if until_caught_up:
                statuses = await _caught_up(store, daemon, stopped)
                if statuses is not None:
                    state.out.print(_status_table(statuses))
                    return stopped
            if shutdown.requested.is_set():
                return stopped
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await shutdown.requested.wait()

    async def work(store: EventStore) -> list[WorkerInfo]:
        models = read_models_for(store)
        leases = _leases_for(store)
        shutdown.install()
        try:
            daemon = ProjectionDaemon(store, models, projections, options=options, leases=leases)
            daemons.append(daemon)
            names = ", ".join(p.name for p in projections)
            state.err.print(f"running {names} (owner {daemon.owner}); Ctrl-C stops")
            async with daemon:
                try:
                    return await supervise(store, daemon)
                finally:
                    shutdown.begin()
        finally:
            await _close(leases)

    try:
        stopped = run_with_store(state.url, work)
    finally:
        shutdown.finish()
    if shutdown.signal is not None:
        state.err.print("stopped")
    if stopped:
        first = stopped[0]
        raise ProjectionStopped(
            first.name, first.version, first.error or "a poison event", STOP_ADVICE
        )


@click.command("rebuild")
@click.argument("name")
@click.option("--app", "reference", required=True, metavar="MODULE[:NAME]", help=APP_HELP)
@click.option(
    "--restart", is_flag=True, help="Throw away what an interrupted build of this version wrote."
)
@click.pass_obj
def rebuild_command(state: CliState, name: str, reference: str, restart: bool) -> None:
    """Build NAME's version beside the live one, then swap readers to it."""
    projections = load_projections(reference)
    projection = _pick(projections, name, reference)
    dependencies = [p for p in projections if p.name in projection.depends_on]

    async def work(store: EventStore) -> ProjectionStatus:
        models = read_models_for(store)
        leases = _leases_for(store)
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
        )
        tasks: dict[int, Any] = {}
        try:
            with Progress(*columns, console=state.err, transient=False) as bar:

                def report(p: BuildProgress) -> None:
                    if p.name != projection.name:
                        return
                    if p.partition not in tasks:
                        tasks[p.partition] = bar.add_task(
                            f"{p.name} v{p.version} p{p.partition}", total=p.total, rate=""
                        )
                    bar.update(
                        tasks[p.partition],
                        completed=p.done,
                        total=max(p.total, 1),
                        rate=f"{p.rate:,.0f} ev/s",
                    )

                return await rebuild(
                    store,
                    models,
                    projection,
                    dependencies=dependencies,
                    progress=report,
                    restart=restart,
                    leases=leases,
                )
        finally:
            await _close(leases)

    status = run_with_store(state.url, work)
    state.out.print(
        f"{status.name} v{status.version} is active: {status.position} of {status.head}"
    )


@click.command("parked")
@click.argument("name")
@click.option("--app", "reference", required=True, metavar="MODULE[:NAME]", help=APP_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per parked event.")
@click.pass_obj
def parked_command(state: CliState, name: str, reference: str, as_json: bool) -> None:
    """The events NAME set aside after its handler kept failing on them."""
    projection = _pick(load_projections(reference), name, reference)

    async def work(store: EventStore) -> list[Any]:
        models = read_models_for(store)
        return await models.parked(projection.name, projection.version)

    parked = run_with_store(state.url, work)
    if as_json:
        for p in parked:
            row = msgspec.to_builtins(p)
            row["position"] = str(p.position)
            state.out.print(msgspec.json.encode(row).decode(), soft_wrap=True)
        return
    table = Table(title=f"{projection.name} v{projection.version}: parked events")
    for column in ("position", "stream", "type", "event id", "attempts", "error"):
        table.add_column(column, overflow="fold")
    for p in parked:
        table.add_row(str(p.position), p.stream_id, p.type, p.event_id, str(p.attempts), p.error)
    state.out.print(table if parked else f"{projection.name} v{projection.version}: none parked")


@click.command("replay-parked")
@click.argument("name")
@click.option("--app", "reference", required=True, metavar="MODULE[:NAME]", help=APP_HELP)
@click.option(
    "--position",
    "positions",
    multiple=True,
    metavar="POSITION",
    help="Replay only the event at this position (repeat); default: every parked event.",
)
@click.pass_obj
def replay_parked_command(
    state: CliState, name: str, reference: str, positions: tuple[str, ...]
) -> None:
    """Apply NAME's parked events again; those that succeed leave the list."""
    projection = _pick(load_projections(reference), name, reference)
    wanted = {Position.parse(p) for p in positions} if positions else None

    async def work(store: EventStore) -> Any:
        models = read_models_for(store)
        return await replay_parked(store, models, projection, positions=wanted)

    result = run_with_store(state.url, work)
    state.out.print(f"replayed {len(result.replayed)}, still failing {len(result.failed)}")
    for failed in result.failed:
        state.err.print(f"{failed.position} ({failed.stream_id}, {failed.type}): {failed.error}")
    if result.failed:
        raise click.exceptions.Exit(1)


COMMANDS: tuple[click.Command, ...] = (
    projections_command,
    run_command,
    rebuild_command,
    parked_command,
    replay_parked_command,
)
