"""A forget reaches every process at once: `Privacy.follow` tails the audit stream, and
`on_forget` listeners (a `CommandHandler`'s cache among them) drop what they hold.

Two store instances on one SQLite file or one PostgreSQL schema play two processes.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
import pytest

from eventfold import (
    CommandHandler,
    Decider,
    Event,
    EventStore,
    HandlerOptions,
    InvalidInput,
    Personal,
    Position,
    StoreError,
    connect,
)
from eventfold.privacy import Privacy, enable
from eventfold.privacy._keyring import KeyRing
from eventfold.store import SupportsCodec, capability
from eventfold.web import create_app

WAIT = 10.0
"""Seconds a forget elsewhere may take to arrive here (far below the key cache's 3600)."""


class Registered(Event):
    __event_type__ = "privacy_follow_test.Registered"
    customer_id: str
    name: Annotated[str, Personal(subject="customer_id", replacement="<erased>")]


class Noted(Event):
    __event_type__ = "privacy_follow_test.Noted"
    n: int


class Book(msgspec.Struct):
    names: dict[str, str] = {}
    notes: int = 0


Command = Registered | Noted


def evolve(state: Book, event: Event) -> Book:
    if isinstance(event, Registered):
        return Book({**state.names, event.customer_id: event.name}, state.notes)
    if isinstance(event, Noted):
        return Book(state.names, state.notes + event.n)
    return state


def decide(command: Command, state: Book) -> Sequence[Event]:
    return [command]


book: Decider[Command, Book, Event] = Decider(initial_state=Book(), evolve=evolve, decide=decide)

ANN = Registered(customer_id="c-1", name="Ann Smith")
ERASED = Registered(customer_id="c-1", name="<erased>")


@dataclass
class Process:
    store: EventStore
    privacy: Privacy


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_url(request: pytest.FixtureRequest) -> str:
    """One database that two store instances share."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def two(shared_url: str) -> AsyncIterator[tuple[Process, Process]]:
    """Processes A and B on one database, each caching keys for an hour; Ann is
    registered by A and read by B (so B holds her key)."""
    async with connect(shared_url) as a, connect(shared_url) as b:
        pa = enable(a, cache_seconds=3600)
        pb = enable(b, cache_seconds=3600)
        await pa.ready()
        await pb.ready()
        await a.append("customer-1", [ANN], expected_version=0)
        assert await read(b) == [ANN]
        yield Process(a, pa), Process(b, pb)


async def read(store: EventStore, stream: str = "customer-1") -> list[Any]:
    return [e.data async for e in store.read_stream(stream)]


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Return once ``check()`` is true; fail after `WAIT` seconds."""
    deadline = time.monotonic() + WAIT
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {WAIT} s waiting until {what}")
        await asyncio.sleep(0.01)


def ring_of(store: EventStore) -> KeyRing:
    ring = capability(store, SupportsCodec).codec.protector
    assert isinstance(ring, KeyRing)
    return ring


def handler_of(store: EventStore) -> CommandHandler[Command, Book, Event]:
    return CommandHandler(store, book, options=HandlerOptions(cache_size=10))


def our_tasks() -> list[str]:
    return sorted(
        t.get_name()
        for t in asyncio.all_tasks()
        if t.get_name() in {"eventfold:privacy-follow", "eventfold:wakeups"} and not t.done()
    )


# -- across processes -------------------------------------------------------------------------


async def test_a_forget_elsewhere_reaches_a_follower_within_its_poll(
    two: tuple[Process, Process],
) -> None:
    a, b = two
    async with b.privacy.follow(poll_seconds=0.2):
        await a.privacy.forget("c-1")

        async def erased() -> bool:
            return await read(b.store) == [ERASED]

        await eventually(erased, "B reads the replacement values")


async def test_without_following_a_process_opens_with_its_cached_key(
    two: tuple[Process, Process],
) -> None:
    a, b = two
    await a.privacy.forget("c-1")
    assert await read(a.store) == [ERASED]
    assert await read(b.store) == [ANN]  # the window follow() closes


async def test_a_forget_made_right_after_entering_is_not_missed(
    two: tuple[Process, Process],
) -> None:
    a, b = two
    heard: list[str] = []
    b.privacy.on_forget(heard.append)
    async with b.privacy.follow():
        await a.privacy.forget("c-1")

        async def arrived() -> bool:
            return "c-1" in heard

        await eventually(arrived, "B hears of c-1")


async def test_a_handler_elsewhere_drops_the_subjects_cached_states(
    two: tuple[Process, Process],
) -> None:
    a, b = two
    handler = handler_of(b.store)
    cached = await handler.handle("customer-1", Noted(n=1))
    assert cached.state.names == {"c-1": "Ann Smith"}
    heard = asyncio.Event()
    b.privacy.on_forget(lambda subject: heard.set())  # after the handler's own listener
    async with b.privacy.follow():
        await a.privacy.forget("c-1")
        async with asyncio.timeout(WAIT):
            await heard.wait()
        fresh = await handler.handle("customer-1", Noted(n=1))
    assert fresh.state == Book({"c-1": "<erased>"}, 2)


# -- in the forgetting process -----------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[EventStore]:
    url = (
        "memory://"
        if request.param == "memory"
        else request.getfixturevalue(f"{request.param}_url")
    )
    async with connect(url) as s:
        yield s


async def test_a_forget_drops_the_subjects_cached_states_at_once(store: EventStore) -> None:
    privacy = enable(store)
    handler = handler_of(store)
    await handler.handle("customer-1", ANN)
    await handler.handle("notes-1", Noted(n=1))
    heard: list[str] = []
    remove = privacy.on_forget(heard.append)
    await privacy.forget("c-1")
    assert heard == ["c-1"]
    assert set(handler._cache) == {"notes-1"}  # the state without personal values stays
    fresh = await handler.handle("customer-1", Noted(n=1))
    assert fresh.state == Book({"c-1": "<erased>"}, 1)
    remove()
    await privacy.forget("c-2")
    assert heard == ["c-1"]


async def test_a_state_folded_before_a_forget_is_not_cached_after_it(store: EventStore) -> None:
    privacy = enable(store)
    handler = handler_of(store)
    await handler.handle("customer-1", ANN)
    handler.evict("customer-1")
    forgotten = False
    append = store.append

    async def forget_while_appending(*args: Any, **kwargs: Any) -> Any:
        nonlocal forgotten
        if not forgotten and args[0] == "customer-1":
            forgotten = True
            await privacy.forget("c-1")  # the command's state was loaded before this
        return await append(*args, **kwargs)

    store.append = forget_while_appending  # type: ignore[method-assign]
    try:
        racing = await handler.handle("customer-1", Noted(n=1))
    finally:
        del store.append
    assert racing.state.names == {"c-1": "Ann Smith"}
    assert "customer-1" not in handler._cache
    fresh = await handler.handle("customer-1", Noted(n=1))
    assert fresh.state == Book({"c-1": "<erased>"}, 2)


async def test_a_listener_that_raises_is_logged_and_the_others_run(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    privacy = enable(store)
    heard: list[str] = []

    def broken(subject: str) -> None:
        raise RuntimeError("boom")

    privacy.on_forget(broken)
    privacy.on_forget(heard.append)
    with caplog.at_level(logging.ERROR, logger="eventfold.privacy"):
        await privacy.forget("c-1")
    assert heard == ["c-1"]
    assert "a listener of forgotten subjects failed" in caplog.text


async def test_a_collected_handler_leaves_no_listener(store: EventStore) -> None:
    enable(store)
    ring = ring_of(store)
    before = ring.listener_count
    handler = handler_of(store)
    await handler.handle("customer-1", ANN)
    assert ring.listener_count == before + 1
    collected = weakref.ref(handler)
    del handler
    gc.collect()
    assert collected() is None
    assert ring.listener_count == before


async def test_a_handler_without_a_cache_listens_to_nothing(store: EventStore) -> None:
    enable(store)
    ring = ring_of(store)
    before = ring.listener_count
    handler = CommandHandler(store, book)
    await handler.handle("customer-1", ANN)
    assert ring.listener_count == before


# -- the follower's life -------------------------------------------------------------------------


async def test_leaving_stops_the_follower(store: EventStore) -> None:
    privacy = enable(store)
    follower = privacy.follow()
    async with follower:
        assert follower.running
        assert "eventfold:privacy-follow" in our_tasks()
    assert not follower.running
    assert our_tasks() == []


async def test_the_store_closing_ends_the_follower_quietly(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    privacy = enable(store)
    follower = privacy.follow()
    with caplog.at_level(logging.DEBUG, logger="eventfold.privacy"):
        async with follower:
            await store.close()

            async def stopped() -> bool:
                return not follower.running

            await eventually(stopped, "the follower stops")
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert "the store was closed" in caplog.text
    assert our_tasks() == []


async def test_a_read_cut_short_by_the_store_closing_ends_the_follower_quietly(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    privacy = enable(store)
    follower = privacy.follow()
    head = store.head

    async def closing_head() -> Position:
        del store.head
        await store.close()
        raise StoreError("the connection was closed under the read")

    with caplog.at_level(logging.DEBUG, logger="eventfold.privacy"):
        async with follower:
            store.head = closing_head  # type: ignore[method-assign]

            async def stopped() -> bool:
                return not follower.running

            await eventually(stopped, "the follower stops")
    assert store.head == head
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert "the store was closed" in caplog.text


async def test_a_failing_follower_retries_and_misses_nothing(
    store: EventStore, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    privacy = enable(store)
    heard: list[str] = []
    privacy.on_forget(heard.append)
    head = store.head
    failures = 0

    async def failing_head() -> Position:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise StoreError("the database is away")
        return await head()

    async with privacy.follow():
        monkeypatch.setattr(store, "head", failing_head)
        with caplog.at_level(logging.WARNING, logger="eventfold.privacy"):
            await privacy.forget("c-1")

            async def twice() -> bool:
                return heard == ["c-1", "c-1"]  # by the forget, then by the follower

            await eventually(twice, "the follower hears of c-1 too")
    assert failures == 2
    assert "retrying in" in caplog.text


async def test_a_follower_is_entered_once(store: EventStore) -> None:
    privacy = enable(store)
    follower = privacy.follow()
    async with follower:
        with pytest.raises(Exception, match="entered once"):
            await follower.__aenter__()


@pytest.mark.parametrize("bad", [0, -1, True, "1"])
async def test_a_follower_needs_a_poll_interval_above_zero(store: EventStore, bad: Any) -> None:
    with pytest.raises(InvalidInput, match="poll_seconds"):
        enable(store).follow(poll_seconds=bad)


# -- the HTTP API ------------------------------------------------------------------------------


async def test_the_app_follows_while_its_lifespan_runs(shared_url: str) -> None:
    async with connect(shared_url) as a:
        pa = enable(a, cache_seconds=3600)
        await a.append("customer-1", [ANN], expected_version=0)
        b = connect(shared_url)
        pb = enable(b, cache_seconds=3600)
        app = create_app(b, privacy=pb)
        async with app.router.lifespan_context(app):
            assert await read(b) == [ANN]
            await pa.forget("c-1")

            async def erased() -> bool:
                return await read(b) == [ERASED]

            await eventually(erased, "B reads the replacement values")
        assert our_tasks() == []
