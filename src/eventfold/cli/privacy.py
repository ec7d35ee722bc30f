"""``eventfold privacy``: forget a data subject (crypto-shredding), and ask whether one is.

Forgetting deletes every key of the subject, so all their personal fields read as their
replacement values from then on, and records a `SubjectForgotten` event (no personal
data) in ``eventfold_privacy-audit``. The keys are in the store's database, so this works
on any store the application sealed events in; it needs ``eventfold[privacy]`` and the
same ``EVENTFOLD_MASTER_KEY`` as the application, if it uses one.
"""

from __future__ import annotations

import click

from .. import privacy as _privacy
from ..store import EventStore
from . import render
from .store_commands import CliState, run_with_store

__all__ = ["COMMANDS"]


@click.group("privacy")
def privacy_group() -> None:
    """Crypto-shredding: forget data subjects (see docs/privacy.md)."""


@privacy_group.command()
@click.argument("subject")
@click.option("--reason", default="", help="Why (recorded in the audit event).")
@click.option("--actor", help="Who asked (recorded in the audit event).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
def forget(state: CliState, subject: str, reason: str, actor: str | None, as_json: bool) -> None:
    """Forget SUBJECT: delete their keys, so their personal fields read as erased for good."""

    async def work(store: EventStore) -> _privacy.ForgetResult:
        return await _privacy.enable(store).forget(subject, reason=reason, actor=actor)

    result = run_with_store(state.url, work)
    record = {
        "subject": result.subject,
        "keys_deleted": result.keys_deleted,
        "audit_position": str(result.audit.position),
    }
    if as_json:
        click.echo(render.to_json(record))
        return
    state.out.print(
        f"forgot {result.subject!r}: {result.keys_deleted} key(s) deleted; recorded at "
        f"{result.audit.position} in {_privacy.AUDIT_STREAM}",
        markup=False,
        highlight=False,
    )


@privacy_group.command()
@click.argument("subject")
@click.pass_obj
def status(state: CliState, subject: str) -> None:
    """Say whether SUBJECT's sealed fields can be opened (exit 0) or not (exit 1: the
    subject was forgotten, or nothing of theirs was ever sealed)."""

    async def work(store: EventStore) -> bool:
        return await _privacy.enable(store).is_forgotten(subject)

    forgotten = run_with_store(state.url, work)
    state.out.print(
        f"{subject!r} has no keys: nothing sealed for them can be opened "
        "(forgotten, or never sealed)"
        if forgotten
        else f"{subject!r} has keys: their sealed fields can be opened",
        markup=False,
        highlight=False,
    )
    if forgotten:
        click.get_current_context().exit(1)


COMMANDS: tuple[click.Command, ...] = (privacy_group,)
