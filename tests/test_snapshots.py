"""Snapshots over every backend: the shipped snapshot-store suite, and each strategy."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator

import pytest
from bank import Account, Command, Deposit, OpenAccount, account
from orders import order

import eventfold
from eventfold import CommandHandler, HandlerOptions, Snapshot
from eventfold.testing import SnapshotStoreConformance
from eventfold.write import every, older_than, on_replay, when


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[eventfold.EventStore]:
    async with eventfold.connect(store_url) as store:
        yield store


class TestSnapshotStore(SnapshotStoreConformance):
    """The shipped suite over `store`: each backend in turn."""


def snapshots_of(store: eventfold.EventStore) -> eventfold.SnapshotStore:
    found: eventfold.SnapshotStore = store.snapshots  # type: ignore[attr-defined]
    return found


async def deposits(handler: CommandHandler[Command, Account, eventfold.Event], n: int) -> None:
    await handler.handle("account-1", OpenAccount(owner="ann"))
    for i in range(n):
        await handler.handle("account-1", Deposit(amount=i + 1))


async def latest(store: eventfold.EventStore, state_type: str = "Account") -> Snapshot | None:
    return await snapshots_of(store).load_snapshot("account-1", state_type)


async def test_every_n_events(store: eventfold.EventStore) -> None:
    handler = CommandHandler(store, account, options=HandlerOptions(snapshots=every(5)))
    await deposits(handler, 11)  # versions 1..12
    snap = await latest(store)
    assert snap is not None
    assert snap.version == 10
    assert snap.schema_version == 1
    assert snap.state_type == "Account"
    loaded = await handler.load_details("account-1")
    assert (loaded.snapshot_version, loaded.replayed, loaded.version) == (10, 2, 12)
    assert loaded.state.balance == sum(range(1, 12))
    older = await snapshots_of(store).load_snapshot("account-1", "Account", max_version=9)
    assert older is not None
    assert older.version == 5


async def test_older_than(store: eventfold.EventStore) -> None:
    strategy = older_than(dt.timedelta(hours=1))
    handler = CommandHandler(store, account, options=HandlerOptions(snapshots=strategy))
    await deposits(handler, 3)
    snap = await latest(store)
    assert snap is not None
    assert snap.version == 1  # the first command had no snapshot; the next ones a fresh one
    quick = CommandHandler(
        store, account, options=HandlerOptions(snapshots=older_than(dt.timedelta(microseconds=1)))
    )
    await quick.handle("account-1", Deposit(amount=1))
    snap = await latest(store)
    assert snap is not None
    assert snap.version == 5


async def test_state_triggered(store: eventfold.EventStore) -> None:
    rich = when(lambda state, events: state.balance >= 10)
    handler = CommandHandler(store, account, options=HandlerOptions(snapshots=rich))
    await deposits(handler, 3)  # balances 1, 3, 6
    assert await latest(store) is None
    await handler.handle("account-1", Deposit(amount=5))
    snap = await latest(store)
    assert snap is not None
    assert snap.version == 5


async def test_on_demand_after_a_long_replay(store: eventfold.EventStore) -> None:
    plain = CommandHandler(store, account)
    await deposits(plain, 30)
    assert await latest(store) is None
    lazy = CommandHandler(store, account, options=HandlerOptions(snapshots=on_replay(20)))
    await lazy.handle("account-1", Deposit(amount=1))
    snap = await latest(store)
    assert snap is not None
    assert snap.version == 32
    loaded = await lazy.load_details("account-1")
    assert (loaded.snapshot_version, loaded.replayed) == (32, 0)


async def test_strategies_combine(store: eventfold.EventStore) -> None:
    combined = every(100) | when(lambda state, events: state.balance > 5)
    assert "every(100)" in repr(combined)
    handler = CommandHandler(store, account, options=HandlerOptions(snapshots=combined))
    await deposits(handler, 3)
    snap = await latest(store)
    assert snap is not None
    assert snap.version == 4


async def test_snapshot_of_an_older_schema_version_is_upcast_when_a_chain_exists(
    store_url: str,
) -> None:
    registry = eventfold.TypeRegistry()
    for name in eventfold.default_registry.names():
        cls = eventfold.default_registry.resolve(name)
        assert cls is not None
        registry.register(cls, name)

    @registry.state_upcaster("Account", from_version=1)
    def grant_overdraft(state: dict[str, object]) -> dict[str, object]:
        # Visible in the result: a replay from the events would leave the limit at 0.
        return {**state, "overdraft_limit": 100}

    async with eventfold.connect(store_url, registry=registry) as store:
        old = CommandHandler(store, account, options=HandlerOptions(snapshots=every(3)))
        await deposits(old, 5)  # versions 1..6, snapshot at 6
        v2 = eventfold.Decider(
            initial_state=Account(), evolve=account.evolve, decide=account.decide, state_version=2
        )
        handler = CommandHandler(store, v2)
        loaded = await handler.load_details("account-1")
        assert (loaded.snapshot_version, loaded.replayed) == (6, 0)
        assert (loaded.state.balance, loaded.state.overdraft_limit) == (15, 100)


async def test_failing_snapshot_store_never_fails_the_command(
    store: eventfold.EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        async def save_snapshot(self, snapshot: Snapshot) -> None:
            raise OSError("disk full")

        async def load_snapshot(self, *args: object, **kwargs: object) -> Snapshot | None:
            return None

    handler = CommandHandler(
        store, account, options=HandlerOptions(snapshots=every(1)), snapshot_store=Broken()
    )
    with caplog.at_level(logging.ERROR, logger="eventfold.handler"):
        result = await handler.handle("account-1", OpenAccount(owner="ann"))
    assert result.version == 1
    assert "disk full" in caplog.text


async def test_snapshot_now_and_aggregate_state_round_trip(store: eventfold.EventStore) -> None:
    handler = CommandHandler(store, order)
    await handler.handle("order-1", lambda o: o.place("order-1", "SKU", 3, 100))
    await handler.handle("order-1", lambda o: o.ship("DHL"))
    taken = await handler.snapshot("order-1")
    assert taken is not None
    assert taken.version == 2
    loaded = await handler.load_details("order-1")
    assert (loaded.snapshot_version, loaded.replayed) == (2, 0)
    assert (loaded.state.status, loaded.state.total_cents) == ("shipped", 300)
    assert await handler.snapshot("order-404") is None
