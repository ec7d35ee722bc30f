"""The command handler over every backend: pipeline, retries, idempotency, past states."""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import random
import uuid
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import msgspec
import pytest
from bank import AccountOpened, BankError, Deposit, Deposited, OpenAccount, Withdraw, account
from orders import Order, OrderError, order

import eventfold
from eventfold import CommandHandler, HandlerOptions
from eventfold.testing.conformance import settle


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[eventfold.EventStore]:
    async with eventfold.connect(store_url) as store:
        yield store


async def test_handle_appends_decided_events_with_ids_and_metadata(
    store: eventfold.EventStore,
) -> None:
    handler = CommandHandler(store, account)
    opened = await handler.handle("account-1", OpenAccount(owner="ann"))
    assert (opened.version, opened.events) == (1, [AccountOpened(owner="ann")])
    result = await handler.handle(
        "account-1", Deposit(amount=10), correlation_id="checkout-1", metadata={"actor": "ann"}
    )
    assert result.events == [Deposited(amount=10)]
    assert result.version == 2
    assert result.state.balance == 10
    assert result.position is not None
    await settle(store, result.position)  # PostgreSQL: readable once older writes end
    assert result.position == await store.head()
    events = [e async for e in store.read_stream("account-1")]
    assert events[1].metadata["actor"] == "ann"
    assert events[1].correlation_id == "checkout-1"
    assert events[1].causation_id is not None
    assert events[0].correlation_id == events[0].causation_id  # a new conversation


async def test_a_domain_error_appends_nothing_and_is_not_retried(
    store: eventfold.EventStore,
) -> None:
    calls = 0

    def counting(command: Any, state: Any) -> Sequence[eventfold.Event]:
        nonlocal calls
        calls += 1
        return account.decide(command, state)

    decider = eventfold.Decider(
        initial_state=account.initial_state, evolve=account.evolve, decide=counting
    )
    handler = CommandHandler(store, decider)
    with pytest.raises(BankError, match="open the account first"):
        await handler.handle("account-1", Deposit(amount=5))
    assert calls == 1
    assert await store.stream_version("account-1") == 0


async def test_conflicts_are_retried_on_the_newer_state(store: eventfold.EventStore) -> None:
    handler = CommandHandler(store, account, options=HandlerOptions(max_retries=100))
    await handler.handle("account-1", OpenAccount(owner="ann"))
    results = await asyncio.gather(
        *(handler.handle("account-1", Deposit(amount=i)) for i in range(1, 21))
    )
    assert sum(r.retries for r in results) > 0
    final = await handler.load("account-1")
    assert final.balance == sum(range(1, 21))
    assert await store.stream_version("account-1") == 21


async def test_retries_run_out_with_a_clear_error(store: eventfold.EventStore) -> None:
    handler = CommandHandler(store, account, options=HandlerOptions(max_retries=0))
    await handler.handle("account-1", OpenAccount(owner="ann"))
    results = await asyncio.gather(
        *(handler.handle("account-1", Deposit(amount=1)) for _ in range(10)),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures
    assert all(isinstance(f, eventfold.RetriesExhausted) for f in failures)
    assert "max_retries" in str(failures[0])
    balance = (await handler.load("account-1")).balance
    assert balance == len(results) - len(failures)


async def test_a_command_id_is_handled_once(store: eventfold.EventStore) -> None:
    handler = CommandHandler(store, account)
    await handler.handle("account-1", OpenAccount(owner="ann", overdraft_limit=100))
    cid = uuid.uuid4()
    first = await handler.handle("account-1", Withdraw(amount=5), command_id=cid)
    assert not first.duplicate
    again = await handler.handle("account-1", Withdraw(amount=5), command_id=cid)
    assert again.duplicate
    assert (again.events, again.version, again.position) == (
        first.events,
        first.version,
        first.position,
    )
    # A new handler (as after a restart) remembers through the store.
    restarted = CommandHandler(store, account)
    await restarted.handle("account-1", Deposit(amount=1))
    late = await restarted.handle("account-1", Withdraw(amount=5), command_id=cid)
    assert late.duplicate
    assert late.version == first.version
    assert (await restarted.load("account-1")).balance == -4


async def test_racing_handlers_with_one_command_id(store: eventfold.EventStore) -> None:
    await CommandHandler(store, account).handle("account-1", OpenAccount(owner="ann"))
    handlers = [CommandHandler(store, account) for _ in range(6)]
    cid = "payment-77"
    results = await asyncio.gather(
        *(h.handle("account-1", Deposit(amount=25), command_id=cid) for h in handlers)
    )
    assert sum(not r.duplicate for r in results) == 1
    assert {r.version for r in results} == {2}
    assert await store.stream_version("account-1") == 2


async def test_state_at_a_version_and_at_a_time(store: eventfold.EventStore) -> None:
    handler = CommandHandler(store, account)
    await handler.handle("account-1", OpenAccount(owner="ann"))
    await handler.handle("account-1", Deposit(amount=100))
    await asyncio.sleep(0.02)
    between = dt.datetime.now(dt.UTC)
    await asyncio.sleep(0.02)
    await handler.handle("account-1", Deposit(amount=50))
    assert (await handler.load("account-1", at_version=2)).balance == 100
    assert (await handler.load("account-1", at_version=0)) == account.initial_state
    assert (await handler.load("account-1", as_of=between)).balance == 100
    assert (await handler.load("account-1")).balance == 150
    before_all = between - dt.timedelta(days=1)
    assert (await handler.load("account-1", as_of=before_all)) == account.initial_state
    with pytest.raises(eventfold.InvalidInput, match="past its end"):
        await handler.load("account-1", at_version=9)
    with pytest.raises(eventfold.InvalidInput, match="timezone-aware"):
        await handler.load("account-1", as_of=dt.datetime(2026, 1, 1))


async def test_cache_skips_reads_and_recovers_from_conflicts(
    store: eventfold.EventStore,
) -> None:
    reads = 0
    real_read_stream = store.read_stream

    def counting_read_stream(*args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        return real_read_stream(*args, **kwargs)

    cached = CommandHandler(store, account, options=HandlerOptions(cache_size=2))
    cached.store = _Proxy(store, read_stream=counting_read_stream)
    await cached.handle("account-1", OpenAccount(owner="ann"))
    before = reads
    for _ in range(5):
        await cached.handle("account-1", Deposit(amount=1))
    assert reads == before  # hot stream: no re-reads
    await CommandHandler(store, account).handle("account-1", Deposit(amount=100))
    result = await cached.handle("account-1", Deposit(amount=1))
    assert result.retries == 1
    assert result.state.balance == 106
    for i in range(3):  # the cache is bounded: older streams fall out
        await cached.handle(f"account-{i + 2}", OpenAccount(owner="x"))
    assert "account-1" not in cached._cache


class _Proxy:
    def __init__(self, inner: Any, **overrides: Any) -> None:
        self._inner = inner
        self._overrides = overrides

    def __getattr__(self, name: str) -> Any:
        return self._overrides.get(name) or getattr(self._inner, name)


async def test_nondeterministic_evolve_is_caught(store: eventfold.EventStore) -> None:
    rng = random.Random(1)

    def evolve(state: Any, event: Any) -> Any:
        if isinstance(event, Deposited):
            return msgspec.structs.replace(state, balance=state.balance + rng.randint(0, 10**9))
        return account.evolve(state, event)

    sloppy = eventfold.Decider(
        initial_state=account.initial_state, evolve=evolve, decide=account.decide
    )
    await CommandHandler(store, account).handle("account-1", OpenAccount(owner="ann"))
    await CommandHandler(store, account).handle("account-1", Deposit(amount=1))
    checked = CommandHandler(store, sloppy, options=HandlerOptions(check_determinism=True))
    with pytest.raises(eventfold.NondeterministicEvolve, match="version 2") as info:
        await checked.handle("account-1", Deposit(amount=1))
    assert info.value.event_type == "bank.Deposited"
    assert await store.stream_version("account-1") == 2
    await CommandHandler(store, account, options=HandlerOptions(check_determinism=True)).handle(
        "account-1", Deposit(amount=1)
    )


async def test_class_style_aggregates(store: eventfold.EventStore) -> None:
    handler = CommandHandler(store, order)
    await handler.handle("order-1", lambda o: o.place("order-1", "SKU", 2, 500))
    shipped = await handler.handle("order-1", lambda o: o.ship("DHL"))
    assert shipped.state.status == "shipped"
    with pytest.raises(OrderError, match="only a placed order"):
        await handler.handle("order-1", lambda o: o.cancel("late", actor="ann"))
    refunded = await handler.handle("order-1", lambda o: o.refund(300, actor="bob"))
    assert (refunded.state.refunded_cents, refunded.version) == (300, 3)
    loaded = await handler.load("order-1")
    assert isinstance(loaded, Order)
    assert loaded == refunded.state
    assert (await handler.load("order-1", at_version=1)).status == "placed"


# -- several processes ------------------------------------------------------------------


def _command_process(url: str, seed: int, commands: int) -> list[tuple[str, int, str]]:
    """Issue deposits to a few accounts; return the accepted (account, amount, command id)."""
    return asyncio.run(_commands(url, seed, commands))


async def _commands(url: str, seed: int, commands: int) -> list[tuple[str, int, str]]:
    rng = random.Random(seed)
    accepted: list[tuple[str, int, str]] = []
    async with eventfold.connect(url) as store:
        handler = CommandHandler(store, account, options=HandlerOptions(max_retries=50))
        for i in range(commands):
            stream = f"account-{rng.randrange(3)}"
            amount = rng.randint(1, 100)
            cid = f"{seed}-{i}"
            try:
                await handler.handle(stream, Deposit(amount=amount), command_id=cid)
            except eventfold.RetriesExhausted:
                continue
            accepted.append((stream, amount, cid))
            if rng.random() < 0.2:  # a client retry of the same command
                again = await handler.handle(stream, Deposit(amount=amount), command_id=cid)
                assert again.duplicate
    return accepted


async def test_no_lost_update_across_processes(shared_url: str) -> None:
    async with eventfold.connect(shared_url) as store:
        opener = CommandHandler(store, account)
        for i in range(3):
            await opener.handle(f"account-{i}", OpenAccount(owner=f"owner-{i}"))
        loop = asyncio.get_running_loop()
        with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("spawn")) as pool:
            jobs = [
                loop.run_in_executor(pool, _command_process, shared_url, seed, 60)
                for seed in range(3)
            ]
            local = asyncio.create_task(_commands(shared_url, 99, 60))
            accepted = [a for job in [*jobs, local] for a in await job]
        for i in range(3):
            stream = f"account-{i}"
            expected = sum(amount for s, amount, _ in accepted if s == stream)
            assert (await opener.load(stream)).balance == expected
            causes = [e.causation_id async for e in store.read_stream(stream, from_version=2)]
            assert len(causes) == len(set(causes)), "a command id produced events twice"
            assert set(causes) == {cid for s, _, cid in accepted if s == stream}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


async def test_loads_read_as_much_as_they_need_on_every_path(store: eventfold.EventStore) -> None:
    # SQLite and PostgreSQL read a snapshot and the events after it in one trip
    # (`read_for_load`), other stores and other snapshot stores snapshot then stream: the
    # outcome is the same, including for streams longer than one page.
    from eventfold.backends.memory import MemorySnapshotStore
    from eventfold.write import every

    own = CommandHandler(store, account, options=HandlerOptions(snapshots=every(1000)))
    apart = CommandHandler(
        store,
        account,
        options=HandlerOptions(snapshots=every(1000)),
        snapshot_store=MemorySnapshotStore(),
    )
    assert (own._read_for_load is not None) == (store.backend in ("sqlite", "postgresql"))
    assert apart._read_for_load is None
    await own.handle("account-1", OpenAccount(owner="ann"))
    await store.append("account-1", [Deposited(amount=1)] * 2600, expected_version=1)
    for handler in (own, apart):
        loaded = await handler.load_details("account-1")
        assert (loaded.version, loaded.state.balance, loaded.replayed) == (2601, 2600, 2601)
    for step, handler in enumerate((own, apart), 1):
        await handler.snapshot("account-1")
        await handler.handle("account-1", Deposit(amount=5))
        loaded = await handler.load_details("account-1")
        assert (loaded.version, loaded.state.balance) == (2601 + step, 2600 + 5 * step)
        assert (loaded.snapshot_version, loaded.replayed) == (loaded.version - 1, 1)
        middle = await handler.load_details("account-1", at_version=1300)
        assert (middle.version, middle.state.balance, middle.snapshot_version) == (1300, 1299, 0)


async def test_loads_page_through_long_streams(
    store: eventfold.EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loads longer than a backend's first page read the rest in pages, with every bound,
    from a snapshot, and through a replaced stream's alias."""
    from eventfold.backends.postgres import _paging as postgres
    from eventfold.backends.sqlite import _reads as sqlite

    monkeypatch.setattr(sqlite, "_FIRST_PAGE", 7)
    monkeypatch.setattr(sqlite, "PAGE_SIZE", 5)
    monkeypatch.setattr(postgres, "PAGE", 6)
    opened = AccountOpened(owner="ann")
    deposits = [Deposited(amount=k) for k in range(1, 41)]
    await store.append("account-1", [opened, *deposits[:8]], expected_version=eventfold.NO_STREAM)
    handler = CommandHandler(store, account)
    assert (await handler.snapshot("account-1")) is not None  # at version 9
    await store.append("account-1", deposits[8:], expected_version=9)
    loaded = await handler.load_details("account-1")
    assert (loaded.state.balance, loaded.version) == (sum(range(1, 41)), 41)
    assert (loaded.snapshot_version, loaded.replayed) == (9, 32)
    for n in (1, 6, 7, 8, 13, 25, 41):
        assert (await handler.load("account-1", at_version=n)).balance == sum(range(1, n))
    await eventfold.transform(
        store, "account-1", target=lambda sid: sid + "-v2", fn=lambda e: e.data
    )
    loaded = await handler.load_details("account-1")  # the copy, with no snapshot
    assert (loaded.state.balance, loaded.version, loaded.replayed) == (sum(range(1, 41)), 41, 41)
    assert (await handler.load("account-1", at_version=20)).balance == sum(range(1, 20))
