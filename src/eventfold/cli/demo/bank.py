"""The demo's bank account, for the command handler's steps."""

from __future__ import annotations

from dataclasses import dataclass

from ..._events import Event
from ...write import Decider
from .checks import check

__all__ = ["Account", "Deposit", "Deposited", "account", "decide_account", "evolve_account"]


class Deposited(Event):
    """Money was paid into an account."""

    __event_type__ = "demo.Deposited"
    amount: int


@dataclass(frozen=True)
class Deposit:
    """Command: pay ``amount`` (cents) into the account."""

    amount: int


@dataclass(frozen=True)
class Account:
    """An account's state, folded from its events."""

    balance: int = 0
    deposits: int = 0


def evolve_account(state: Account, event: object) -> Account:
    """The account after ``event``."""
    if isinstance(event, Deposited):
        return Account(state.balance + event.amount, state.deposits + 1)
    return state


def decide_account(command: Deposit, state: Account) -> list[Event]:
    """The events a deposit produces (positive amounts only)."""
    check(command.amount > 0, f"cannot deposit {command.amount}")
    return [Deposited(amount=command.amount)]


account: Decider[Deposit, Account, Event] = Decider(
    initial_state=Account(), evolve=evolve_account, decide=decide_account
)
"""The account as a decider: ``eventfold state ... --decider eventfold.cli.demo:account``."""
