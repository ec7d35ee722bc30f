"""A bank account as a decider: deposits, withdrawals, an overdraft rule, and the balance
at a past time.

Run it: ``python examples/bank.py [STORE_URL]`` (default: a fresh SQLite file).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import tempfile
import uuid
from collections.abc import Sequence

import msgspec

import eventfold

# -- events (what happened) --------------------------------------------------------------


class AccountOpened(eventfold.Event):
    __event_type__ = "bank.AccountOpened"
    owner: str
    overdraft_limit: int = 0


class Deposited(eventfold.Event):
    __event_type__ = "bank.Deposited"
    amount: int


class Withdrawn(eventfold.Event):
    __event_type__ = "bank.Withdrawn"
    amount: int


# -- commands (what is asked) ------------------------------------------------------------


class OpenAccount(msgspec.Struct, frozen=True):
    owner: str
    overdraft_limit: int = 0


class Deposit(msgspec.Struct, frozen=True):
    amount: int


class Withdraw(msgspec.Struct, frozen=True):
    amount: int


Command = OpenAccount | Deposit | Withdraw


class Account(msgspec.Struct, frozen=True):
    opened: bool = False
    owner: str = ""
    balance: int = 0
    overdraft_limit: int = 0


class BankError(Exception):
    """A command the account's rules refuse."""


# -- the decider -------------------------------------------------------------------------


def evolve(state: Account, event: eventfold.Event) -> Account:
    match event:
        case AccountOpened(owner=owner, overdraft_limit=limit):
            return Account(True, owner, 0, limit)
        case Deposited(amount=amount):
            return msgspec.structs.replace(state, balance=state.balance + amount)
        case Withdrawn(amount=amount):
            return msgspec.structs.replace(state, balance=state.balance - amount)
    return state


def decide(command: Command, state: Account) -> Sequence[eventfold.Event]:
    match command:
        case OpenAccount(owner=owner, overdraft_limit=limit):
            if state.opened:
                raise BankError("the account is already open")
            return [AccountOpened(owner=owner, overdraft_limit=limit)]
        case Deposit(amount=amount) | Withdraw(amount=amount) if amount <= 0:
            raise BankError(f"amounts must be positive, got {amount}")
        case _ if not state.opened:
            raise BankError("open the account first")
        case Deposit(amount=amount):
            return [Deposited(amount=amount)]
        case Withdraw(amount=amount):
            if state.balance - amount < -state.overdraft_limit:
                raise BankError(
                    f"withdrawing {amount} would overdraw the account past its limit of "
                    f"{state.overdraft_limit} (balance {state.balance})"
                )
            return [Withdrawn(amount=amount)]
    raise BankError(f"unknown command {command!r}")


account = eventfold.Decider(initial_state=Account(), evolve=evolve, decide=decide)


async def main(url: str) -> None:
    # A new account each run, so the example runs again against the same store.
    account_id = f"account-{uuid.uuid4().hex[:8]}"
    async with eventfold.connect(url) as store:
        handler = eventfold.CommandHandler(store, account)
        await handler.handle(account_id, OpenAccount(owner="ann", overdraft_limit=50))
        await handler.handle(account_id, Deposit(amount=100))
        await asyncio.sleep(0.01)
        checkpoint = dt.datetime.now(dt.UTC)
        await asyncio.sleep(0.01)
        await handler.handle(account_id, Withdraw(amount=120))
        try:
            await handler.handle(account_id, Withdraw(amount=40))
        except BankError as exc:
            print(f"refused: {exc}")
        now = await handler.load(account_id)
        then = await handler.load(account_id, as_of=checkpoint)
        print(f"{account_id} balance now: {now.balance}")
        print(f"balance at {checkpoint:%H:%M:%S.%f}: {then.balance}")


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else f"sqlite:///{tempfile.mkdtemp()}/bank.db"
    asyncio.run(main(target))
