"""``eventfold relay``: run the application's relays, and their status, parked messages
and replays.

``--app MODULE`` (or ``MODULE:NAME``) names a function of the application that takes the
opened store and returns its `Relay` (or a list of them): ``relays`` by default::

    # app.py
    from eventfold.relay import NatsJetStreamSink, Relay

    def relays(store):
        sink = NatsJetStreamSink(stream="ORDERS", subjects=["orders.>"])
        return Relay(store, sink, destination="orders", categories=["order"])

On PostgreSQL each relay holds the lease ``relay:<destination>`` (an advisory lock), so
a second ``eventfold relay`` process stands by and takes over when the first one dies.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import click
import msgspec
from rich import box
from rich.table import Table

from ..errors import InvalidInput
from ..relay import Relay, RelayStatus, relay_parked, relay_status, replay_parked
from ..store import EventStore
from ._imports import find_attribute, import_user_module
from ._shutdown import GracefulStop
from ._usercode import call_user
from .store_commands import CliState, run_with_store

__all__ = ["COMMANDS", "load_relays"]

APP_HELP = (
    "The application's relays: MODULE:NAME names a function that takes the store and "
    "returns a Relay or a list of them (NAME defaults to 'relays')."
)


def load_relays(reference: str, store: EventStore, only: Sequence[str] = ()) -> list[Relay]:
    """Call the ``MODULE[:NAME]`` function with ``store``; its relays (those named in
    ``only``, if given). `InvalidInput` says what is wrong."""
    module_name, _, name = reference.partition(":")
    if not module_name:
        raise InvalidInput(f"--app {reference!r} names no module; pass --app MODULE[:NAME]")
    module = import_user_module("--app", reference, module_name)
    factory = find_attribute("--app", reference, module, name or "relays")
    if not callable(factory):
        raise InvalidInput(
            f"--app {reference!r} is a {type(factory).__name__}, not a function that takes "
            "the store and returns its relays"
        )
    made = call_user(f"--app {reference}", lambda: "", factory, store)
    relays = list(made) if isinstance(made, list | tuple) else [made]
    if not relays or not all(isinstance(r, Relay) for r in relays):
        raise InvalidInput(
            f"--app {reference!r} returned {made!r}; return a Relay or a list of Relays"
        )
    names = [r.destination for r in relays]
    if len(set(names)) != len(names):
        raise InvalidInput(f"--app {reference!r}: two relays share a destination: {names}")
    for wanted in only:
        if wanted not in names:
            raise InvalidInput(
                f"--app {reference!r} has no relay for destination {wanted!r}; it has: "
                f"{', '.join(sorted(names))}"
            )
    return [r for r in relays if not only or r.destination in only]


def _row(s: RelayStatus) -> dict[str, Any]:
    return {
        "destination": s.destination,
        "position": str(s.events.position),
        "head": str(s.events.head),
        "lag_events": s.events.lag_events,
        "lag_exact": s.events.lag_exact,
        "lag_seconds": round(s.events.lag_seconds, 3),
        "outbox_position": None if s.outbox_position is None else str(s.outbox_position),
        "outbox_lag": s.outbox_lag,
        "parked": s.parked,
        "parked_streams": s.parked_streams,
        "oldest_parked_seconds": None
        if s.oldest_parked_seconds is None
        else round(s.oldest_parked_seconds, 1),
        "last_error": s.last_error,
    }


def _status_table(statuses: Sequence[RelayStatus]) -> Table:
    table = Table(title="relays", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("destination", "position", "lag", "lag s", "outbox lag", "parked", "oldest"):
        table.add_column(column, no_wrap=True)
    for s in statuses:
        oldest = s.oldest_parked_seconds
        table.add_row(
            s.destination,
            str(s.events.position),
            f"{s.events.lag_events:,}" + ("" if s.events.lag_exact else "+"),
            f"{s.events.lag_seconds:.1f}",
            "-" if s.outbox_lag is None else f"{s.outbox_lag:,}",
            f"{s.parked} ({s.parked_streams} streams)" if s.parked else "0",
            "-" if oldest is None else f"{oldest:.0f} s",
        )
    return table


def _options(f: Any) -> Any:
    f = click.option(
        "--destination",
        "only",
        multiple=True,
        metavar="NAME",
        help="Only the relay of this destination (repeat).",
    )(f)
    return click.option("--app", "reference", metavar="MODULE[:NAME]", help=APP_HELP)(f)


def _reference(ctx: click.Context, reference: str | None) -> str:
    reference = reference or (ctx.parent.params.get("reference") if ctx.parent else None)
    if not reference:
        raise InvalidInput("name the application's relays with --app MODULE[:NAME]")
    return reference


@click.group("relay", invoke_without_command=True)
@_options
@click.option(
    "--until-caught-up",
    is_flag=True,
    help="Exit once every relay has delivered everything up to the head (for scripts).",
)
@click.option(
    "--stop-timeout",
    type=click.FloatRange(min=0.1, max=3600),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="How long the relays get to stop on Ctrl-C or SIGTERM.",
)
@click.pass_context
def relay_group(
    ctx: click.Context,
    reference: str | None,
    only: tuple[str, ...],
    until_caught_up: bool,
    stop_timeout: float,
) -> None:
    """Deliver the log (and the outbox) to a message bus until interrupted.

    With a subcommand: a relay's status, parked messages, or a replay of them.
    """
    if ctx.invoked_subcommand is not None:
        return
    state: CliState = ctx.obj
    app = _reference(ctx, reference)
    running: list[Relay] = []
    shutdown = GracefulStop(
        "eventfold relay",
        2 * stop_timeout,
        lambda: ", ".join(f"relay {r.destination} ({r.state})" for r in running),
    )

    async def work(store: EventStore) -> None:
        relays = load_relays(app, store, only)
        shutdown.install()
        for r in relays:
            await r.start()
            running.append(r)
        names = ", ".join(r.destination for r in relays)
        state.err.print(f"relaying {names} (owner {relays[0].owner}); Ctrl-C stops")
        try:
            while not shutdown.requested.is_set():
                if until_caught_up:
                    statuses = [await relay_status(r) for r in relays]
                    if all(
                        s.events.lag_events == 0 and s.events.lag_exact and not s.outbox_lag
                        for s in statuses
                    ):
                        state.out.print(_status_table(statuses))
                        return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await shutdown.requested.wait()
        finally:
            shutdown.begin()
            for r in relays:
                await r.stop()

    try:
        run_with_store(state.url, work)
    finally:
        shutdown.finish()
    if shutdown.signal is not None:
        state.err.print("stopped")


@relay_group.command("status")
@_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per relay.")
@click.pass_context
def status_command(
    ctx: click.Context, reference: str | None, only: tuple[str, ...], as_json: bool
) -> None:
    """Each relay's position, lag behind the log and the outbox, and parked messages."""
    state: CliState = ctx.obj
    app = _reference(ctx, reference)

    async def work(store: EventStore) -> list[RelayStatus]:
        return [await relay_status(r) for r in load_relays(app, store, only)]

    statuses = run_with_store(state.url, work)
    if as_json:
        for s in statuses:
            state.out.print(msgspec.json.encode(_row(s)).decode(), soft_wrap=True)
        return
    state.out.print(_status_table(statuses))
    for s in statuses:
        if s.last_error:
            state.out.print(f"{s.destination}: {s.last_error}", markup=False)


@relay_group.command("parked")
@_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per message.")
@click.pass_context
def parked_command(
    ctx: click.Context, reference: str | None, only: tuple[str, ...], as_json: bool
) -> None:
    """The messages each relay parked (a stream's in order), with why."""
    state: CliState = ctx.obj
    app = _reference(ctx, reference)

    async def work(store: EventStore) -> list[tuple[str, list[Any]]]:
        return [(r.destination, await relay_parked(r)) for r in load_relays(app, store, only)]

    found = run_with_store(state.url, work)
    for destination, parked in found:
        if as_json:
            for p in parked:
                row = msgspec.to_builtins(p)
                row["position"] = str(p.position)
                row["destination"] = destination
                state.out.print(msgspec.json.encode(row).decode(), soft_wrap=True)
            continue
        if not parked:
            state.out.print(f"{destination}: none parked")
            continue
        table = Table(title=f"{destination}: parked messages")
        for column in ("position", "stream", "type", "id", "attempts", "error"):
            table.add_column(column, overflow="fold")
        for p in parked:
            table.add_row(
                str(p.position), p.stream_id, p.type, p.event_id, str(p.attempts), p.error
            )
        state.out.print(table)


@relay_group.command("replay")
@_options
@click.option(
    "--stream",
    "stream_id",
    metavar="STREAM",
    help="Replay only this stream's (or outbox key's) parked messages; default: all.",
)
@click.pass_context
def replay_command(
    ctx: click.Context, reference: str | None, only: tuple[str, ...], stream_id: str | None
) -> None:
    """Send parked messages again, each stream's in order; those acknowledged leave the list."""
    state: CliState = ctx.obj
    app = _reference(ctx, reference)

    async def work(store: EventStore) -> list[tuple[str, Any]]:
        return [
            (r.destination, await replay_parked(r, stream_id=stream_id))
            for r in load_relays(app, store, only)
        ]

    failed = 0
    for destination, result in run_with_store(state.url, work):
        state.out.print(
            f"{destination}: replayed {len(result.replayed)}, still failing {len(result.failed)}"
        )
        for p in result.failed:
            failed += 1
            state.err.print(f"{p.position} ({p.stream_id}, {p.type}): {p.error}", markup=False)
    if failed:
        raise click.exceptions.Exit(1)


COMMANDS: tuple[click.Command, ...] = (relay_group,)
