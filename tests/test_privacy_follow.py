"""A forget reaches what a process holds in memory: `on_forget` listeners (a
`CommandHandler`'s cache among them) drop what they hold."""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

import msgspec
import pytest

from eventfold import (
    CommandHandler,
    Decider,
    Event,
    EventStore,
    HandlerOptions,
    Personal,
    connect,
)
from eventfold.privacy import enable
from eventfold.privacy._keyring import KeyRing
from eventfold.store import SupportsCodec, capability


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


def ring_of(store: EventStore) -> KeyRing:
    ring = capability(store, SupportsCodec).codec.protector
    assert isinstance(ring, KeyRing)
    return ring


def handler_of(store: EventStore) -> CommandHandler[Command, Book, Event]:
    return CommandHandler(store, book, options=HandlerOptions(cache_size=10))


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
