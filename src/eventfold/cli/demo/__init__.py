"""``eventfold demo``: a short, self-contained tour of the store on a small order domain,
then of the command handler on a bank account, and a hybrid write (a table row, events and
a message in one unit of work) relayed to NATS JetStream.

The tour is a sequence of small async steps (`STEPS`) over one `Demo` context, so later
features add a step rather than grow one function. Each step checks what it shows: if the
store ever misbehaves (two winners of a race, a duplicated retry) the demo fails with
`DemoCheckFailed` instead of printing a pleasant story.

The sample domains are `orders` (the store's steps) and `bank` (the command handler's);
the steps and how they run are in `tour`.
"""

from __future__ import annotations

from .bank import Account, Deposit, Deposited, account, decide_account, evolve_account
from .checks import DemoCheckFailed
from .orders import Order, OrderCancelled, OrderPaid, OrderPlaced, OrderShipped, evolve
from .tour import STEPS, Demo, default_demo_url, run_demo

__all__ = [
    "STEPS",
    "Account",
    "Demo",
    "DemoCheckFailed",
    "Deposit",
    "Deposited",
    "Order",
    "OrderCancelled",
    "OrderPaid",
    "OrderPlaced",
    "OrderShipped",
    "account",
    "decide_account",
    "default_demo_url",
    "evolve",
    "evolve_account",
    "run_demo",
]
