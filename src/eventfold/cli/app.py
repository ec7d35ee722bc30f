"""The ``eventfold`` command group, and the one place errors become exit codes."""

from __future__ import annotations

from typing import Any

import click
from click.core import ParameterSource
from rich.console import Console
from rich.text import Text

from .._version import __version__
from ..errors import ConcurrencyError, EventfoldError, InvalidInput, StoreError
from ..store import DEFAULT_URL
from . import (
    decider_commands,
    privacy,
    projections,
    relay,
    schema,
    serve,
    store_commands,
    transform,
)
from ._usercode import user_traceback
from .store_commands import CliState

__all__ = ["COMMANDS", "EXIT_CODES", "cli", "exit_code_for", "main"]

EXIT_CODES: tuple[tuple[type[EventfoldError], int], ...] = (
    (InvalidInput, 2),
    (ConcurrencyError, 3),
    (StoreError, 4),
)
"""Exit codes by error class, first match wins; any other `EventfoldError` exits 1.

2 matches click's own code for bad usage: both mean "fix the command line".
"""


def exit_code_for(exc: EventfoldError) -> int:
    """The exit code the CLI uses for ``exc``."""
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return 1


class EventfoldGroup(click.Group):
    """A group that lists commands in definition order and maps eventfold errors."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EventfoldError as exc:
            # The only handler: one red line on stderr, never a traceback.
            message = " ".join(str(exc).split()) or type(exc).__name__
            err = Console(stderr=True, soft_wrap=True)
            frames = user_traceback(exc)
            if frames is not None:
                err.print(frames, end="", markup=False, highlight=False)
            err.print(Text(f"error: {message}", style="bold red"))
            ctx.exit(exit_code_for(exc))


@click.group(cls=EventfoldGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar="EVENTFOLD_URL",
    default=DEFAULT_URL,
    show_default=True,
    show_envvar=True,
    metavar="URL",
    help="The store: sqlite:///path.db, postgresql://user@host/db or memory://.",
)
@click.version_option(__version__, "-V", "--version", prog_name="eventfold")
@click.pass_context
def cli(ctx: click.Context, url: str) -> None:
    """Inspect and write an eventfold event store.

    Try `eventfold demo` for a self-contained tour that leaves your store alone.
    """
    from_command_line = ctx.get_parameter_source("url") is ParameterSource.COMMANDLINE
    ctx.obj = CliState(
        url=url,
        url_from_command_line=from_command_line,
        out=Console(highlight=False),
        err=Console(stderr=True, highlight=False, soft_wrap=True),
    )


COMMANDS: tuple[click.Command, ...] = (
    *store_commands.COMMANDS,
    *decider_commands.COMMANDS,
    *schema.COMMANDS,
    *transform.COMMANDS,
    *projections.COMMANDS,
    *relay.COMMANDS,
    *privacy.COMMANDS,
    *serve.COMMANDS,
    store_commands.demo,
)
"""Every command, in the order ``--help`` lists them: the store, the decider, the schemas,
stream transformation, the projections, the relay, privacy, the HTTP API, the tour."""

for _command in COMMANDS:
    cli.add_command(_command)


def main() -> None:
    """Entry point of the ``eventfold`` command."""
    cli(prog_name="eventfold")
