"""``eventfold serve``: the HTTP API with uvicorn; ``eventfold token``: a new bearer token."""

from __future__ import annotations

from typing import Any

import click

from .. import privacy as _privacy
from ..errors import ConfigurationError
from ..store import connect
from .projections import APP_HELP, load_projections
from .render import to_json
from .store_commands import CliState

__all__ = ["COMMANDS"]

_ROLES = click.Choice(["read", "write", "admin"], case_sensitive=False)


def _web() -> Any:
    try:
        import uvicorn  # noqa: F401

        from .. import web
    except ImportError as exc:
        raise ConfigurationError(
            f"eventfold serve needs the web extra ({exc.name} is missing); install it with "
            'pip install "eventfold[web]"'
        ) from None
    return web


@click.command("serve")
@click.option("--app", "reference", metavar="MODULE[:NAME]", help=APP_HELP)
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="The port."
)
@click.option(
    "--tokens",
    "tokens_file",
    metavar="FILE",
    envvar="EVENTFOLD_TOKENS_FILE",
    show_envvar=True,
    help="Accepted tokens, one `ROLE sha256:HEX` line each (see `eventfold token`); "
    "without it the API is read-only.",
)
@click.option("--read-token", is_flag=True, help="Make reads need a token too.")
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    help="Allow browsers on this origin to call the API (repeat); default: none.",
)
@click.option(
    "--access-log",
    is_flag=True,
    help="Log a line per request (uvicorn's access log); off by default, as it costs "
    "time on every request.",
)
@click.option(
    "--privacy",
    is_flag=True,
    help="Turn crypto-shredding on (eventfold[privacy]): personal fields read as their "
    "values and admins can forget a subject (POST /privacy/forget). Without it they read "
    "as their replacement values.",
)
@click.pass_obj
def serve_command(
    state: CliState,
    reference: str | None,
    host: str,
    port: int,
    tokens_file: str | None,
    read_token: bool,
    cors_origins: tuple[str, ...],
    access_log: bool,
    privacy: bool,
) -> None:
    """Serve the store over HTTP (the API of docs/http-api.md) with uvicorn.

    Reads are open and writes and admin actions need a token with a role; --app names
    the projections whose status, parked events and rebuilds it serves.
    """
    web = _web()
    import uvicorn

    projections = load_projections(reference) if reference else []
    tokens = web.Tokens.from_file(tokens_file) if tokens_file else web.Tokens()
    store = connect(state.url)
    app = web.create_app(
        store,
        projections=projections,
        tokens=tokens,
        read_token=read_token,
        cors_origins=cors_origins,
        privacy=_privacy.enable(store) if privacy else None,
    )
    mode = f"{len(tokens)} token(s)" if len(tokens) else "read-only: no tokens"
    state.err.print(
        f"serving {len(projections)} projection(s), {mode}; OpenAPI at "
        f"http://{host}:{port}/openapi.json",
        markup=False,
        highlight=False,
    )
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=access_log, workers=1)


@click.command("token")
@click.argument("role", type=_ROLES)
@click.option("--json", "as_json", is_flag=True, help="Print token, role and hash as JSON.")
@click.pass_obj
def token_command(state: CliState, role: str, as_json: bool) -> None:
    """Make a bearer token with ROLE (read, write or admin) for `eventfold serve`.

    The token is printed once; the server keeps only the hash line, for its --tokens file.
    """
    web = _web()
    token = web.new_token()
    line = f"{role.lower()} {web.hash_token(token)}"
    if as_json:
        click.echo(to_json({"token": token, "role": role.lower(), "line": line}))
        return
    click.echo(token)
    state.err.print(f"add this line to the --tokens file: {line}", markup=False, highlight=False)


COMMANDS: tuple[click.Command, ...] = (serve_command, token_command)
