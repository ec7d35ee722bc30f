"""Given/when/then helpers, over a decider alone and over the full handler."""

from __future__ import annotations

import pytest
from bank import (  # examples/ is on sys.path (conftest.py)
    Account,
    AccountOpened,
    BankError,
    Deposit,
    Deposited,
    OpenAccount,
    Withdraw,
    Withdrawn,
    account,
)

from eventfold.testing import handler_spec, spec


def test_then() -> None:
    spec(account).given([AccountOpened(owner="ann"), Deposited(amount=10)]).when(
        Withdraw(amount=4)
    ).then([Withdrawn(amount=4)])


def test_then_raises_and_then_state() -> None:
    given = spec(account).given([AccountOpened(owner="ann", overdraft_limit=5)])
    err = given.when(Withdraw(amount=6)).then_raises(BankError, match="overdraw")
    assert "limit of 5" in str(err)
    given.when(Deposit(amount=3)).then_state(Account(True, "ann", 3, 5))


def test_a_wrong_expectation_fails() -> None:
    with pytest.raises(AssertionError, match="decided"):
        spec(account).given([AccountOpened(owner="ann")]).when(Deposit(amount=1)).then([])
    with pytest.raises(AssertionError, match="nothing was"):
        spec(account).given([AccountOpened(owner="ann")]).when(Deposit(amount=1)).then_raises(
            BankError
        )


async def test_handler_spec() -> None:
    result = (
        await handler_spec(account)
        .given([AccountOpened(owner="ann")])
        .when(Deposit(amount=7))
        .then([Deposited(amount=7)])
    )
    assert result.state.balance == 7
    await (
        handler_spec(account)
        .given([])
        .when(Deposit(amount=7))
        .then_raises(BankError, match="open the account first")
    )
    with pytest.raises(AssertionError):
        await handler_spec(account).given([]).when(OpenAccount(owner="x")).then([])
