"""The commands that need the user's decider: ``state`` and ``snapshot``.

``--decider MODULE:NAME`` names a `Decider` (or an `Aggregate` subclass) the way
``uvicorn`` names an app: the module is imported from the working directory or the
Python path. Everything else is the library's `CommandHandler`; no command catches
`EventfoldError` (the group maps it to an exit code in `eventfold.cli.app`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import click
import msgspec
from rich.pretty import Pretty

from ..errors import ConfigurationError, InvalidInput
from ..store import EventStore
from ..write import (
    Aggregate,
    CommandHandler,
    Decider,
    Loaded,
    Snapshot,
    SnapshotStore,
    encode_state,
)
from . import render
from ._imports import find_attribute, import_user_module
from ._usercode import guard_decider
from .store_commands import CliState, run_with_store

__all__ = ["COMMANDS", "AsOfParam", "ReadOnlySnapshots", "load_decider"]

AnyDecider = Decider[Any, Any, Any]


def _deciders_in(module: object) -> list[str]:
    """The names in ``module`` that ``--decider`` would accept, for an error message."""
    return sorted(
        name
        for name, value in vars(module).items()
        if isinstance(value, Decider)
        or (isinstance(value, type) and issubclass(value, Aggregate) and value is not Aggregate)
    )


def load_decider(reference: str) -> AnyDecider:
    """Import ``MODULE:NAME`` and return it as a `Decider`; `InvalidInput` says what is wrong.

    The working directory is importable (as with ``python -m``), so ``bank:account``
    finds ``./bank.py``. An `Aggregate` subclass becomes ``cls.decider()``.
    """
    module_name, _, name = reference.partition(":")
    if not module_name or not name:
        raise InvalidInput(
            f"--decider {reference!r} is not MODULE:NAME; name a module importable from the "
            "working directory and a decider in it, e.g. --decider bank:account"
        )
    module = import_user_module("--decider", reference, module_name)

    def hint() -> str:
        known = _deciders_in(module)
        return f"; its deciders: {', '.join(known)}" if known else "; it defines no decider"

    found = find_attribute("--decider", reference, module, name, hint)
    if isinstance(found, Decider):
        return found
    if isinstance(found, type) and issubclass(found, Aggregate) and found is not Aggregate:
        return found.decider()
    what = (
        f"the class {found.__qualname__}"
        if isinstance(found, type)
        else f"an object of type {type(found).__name__}"
    )
    raise InvalidInput(
        f"--decider {reference!r} is {what}, not an eventfold.Decider or an eventfold.Aggregate "
        "subclass; name the decider your command handler uses"
    )


class AsOfParam(click.ParamType[dt.datetime]):
    """``--as-of``: an ISO-8601 time (naive means UTC) or ``now``."""

    name = "time"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> dt.datetime:
        if isinstance(value, dt.datetime):
            when = value
        elif str(value).strip().lower() == "now":
            return dt.datetime.now(dt.UTC)
        else:
            try:
                when = dt.datetime.fromisoformat(str(value).strip())
            except ValueError:
                self.fail(
                    f"{value!r} is not a time; use ISO-8601 such as 2026-11-26T15:00:00+00:00 "
                    "(no offset means UTC) or 'now'",
                    param,
                    ctx,
                )
        return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


class ReadOnlySnapshots:
    """A snapshot store that reads but never writes.

    A load that finds an unusable snapshot replaces it; ``eventfold state`` is an
    inspection and must not write, least of all with a decider that may not be the one
    the application runs.
    """

    def __init__(self, inner: SnapshotStore) -> None:
        self._inner = inner

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        return None

    async def load_snapshot(
        self,
        stream_id: str,
        state_type: str,
        *,
        max_version: int | None = None,
        max_recorded_us: int | None = None,
    ) -> Snapshot | None:
        return await self._inner.load_snapshot(
            stream_id, state_type, max_version=max_version, max_recorded_us=max_recorded_us
        )


def _raised_in(exc: BaseException, function: Callable[..., object]) -> bool:
    """Whether ``function`` is on ``exc``'s traceback (raised in it or below it)."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is function.__code__:
            return True
        tb = tb.tb_next
    return False


def _snapshot_store(store: EventStore) -> SnapshotStore | None:
    found = getattr(store, "snapshots", None)
    return found if isinstance(found, SnapshotStore) else None


DECIDER_HELP = (
    "The stream's decider, as MODULE:NAME (e.g. bank:account): a Decider or an Aggregate "
    "subclass, imported from the working directory or the Python path."
)


# -- state ---------------------------------------------------------------------------------


@click.command("state")
@click.argument("stream")
@click.option("--decider", "reference", required=True, metavar="MODULE:NAME", help=DECIDER_HELP)
@click.option(
    "--at-version",
    type=click.IntRange(min=0),
    metavar="N",
    help="The state after the event at version N (0: the initial state).",
)
@click.option(
    "--as-of",
    type=AsOfParam(),
    metavar="TIME",
    help="The state from the events recorded at or before TIME: ISO-8601 such as "
    "2026-11-26T15:00:00+00:00 (a time without an offset is taken as UTC), or 'now'.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
@click.pass_obj
def state_command(
    state: CliState,
    stream: str,
    reference: str,
    at_version: int | None,
    as_of: dt.datetime | None,
    as_json: bool,
) -> None:
    """Fold STREAM with a decider and show its state (now, at a version or at a time).

    Uses a snapshot when one fits and never writes to the store.
    """
    if at_version is not None and as_of is not None:
        raise click.UsageError("give --at-version or --as-of, not both")
    decider = guard_decider(load_decider(reference), stream)

    async def work(store: EventStore) -> Loaded[Any]:
        found = _snapshot_store(store)
        snapshots = ReadOnlySnapshots(found) if found is not None else None
        handler = CommandHandler(store, decider, snapshot_store=snapshots)
        return await handler.load_details(stream, at_version=at_version, as_of=as_of)

    loaded = run_with_store(state.url, work, read_only=True)
    value = render.state_builtins(loaded.state)
    if as_json:
        record = {
            "stream_id": stream,
            "version": loaded.version,
            "snapshot_version": loaded.snapshot_version,
            "replayed": loaded.replayed,
            "state": value,
        }
        click.echo(render.to_json(record))
        return
    summary = render.loaded_summary(stream, loaded, as_of)
    state.out.print(summary, markup=False, highlight=False, soft_wrap=True)
    state.out.print(Pretty(value))


# -- snapshot ------------------------------------------------------------------------------


@click.command()
@click.argument("stream")
@click.option("--decider", "reference", required=True, metavar="MODULE:NAME", help=DECIDER_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
@click.pass_obj
def snapshot(state: CliState, stream: str, reference: str, as_json: bool) -> None:
    """Take a snapshot of STREAM's state now, so later loads fold only the events after it.

    An empty stream has nothing to snapshot: that is said, and the exit code is 0.
    """
    decider = guard_decider(load_decider(reference), stream)

    async def work(store: EventStore) -> Snapshot | None:
        handler = CommandHandler(store, decider)
        if handler.snapshot_store is None:
            raise ConfigurationError(
                f"this store ({type(store).__name__}) keeps no snapshots; "
                "use a backend that does (sqlite, postgresql, memory)"
            )
        try:
            return await handler.snapshot(stream)
        except (TypeError, msgspec.EncodeError) as exc:
            if not _raised_in(exc, encode_state):
                raise
            raise InvalidInput(
                f"the state of stream {stream!r} (from --decider {reference}) cannot be "
                f"encoded for a snapshot: {exc}; "
                "make the state a msgspec Struct, a dataclass, or dicts and lists of "
                "JSON values"
            ) from exc

    taken = run_with_store(state.url, work)
    if as_json:
        record: dict[str, Any] = {"stream_id": stream, "taken": taken is not None}
        record.update(
            version=taken.version if taken else 0,
            state_type=taken.state_type if taken else None,
            schema_version=taken.schema_version if taken else None,
            bytes=len(taken.data) if taken else None,
        )
        click.echo(render.to_json(record))
    elif taken is None:
        state.out.print(
            f"nothing to snapshot: stream {stream!r} has no events",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    else:
        state.out.print(
            f"snapshot of {stream} at version {taken.version}: state type {taken.state_type}, "
            f"schema version {taken.schema_version}, {len(taken.data):,} bytes",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


COMMANDS: tuple[click.Command, ...] = (state_command, snapshot)
"""The decider commands, in the order ``--help`` lists them."""
