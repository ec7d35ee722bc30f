"""Snapshots of states folded from personal fields: sealed for their data subjects, so
forgetting one of them makes the snapshot unusable and the next load folds from the
events (which read replacement values) and replaces it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Annotated

import msgspec
import pytest

from eventfold import (
    CommandHandler,
    Decider,
    Event,
    EventStore,
    HandlerOptions,
    Personal,
    Snapshot,
    SnapshotStore,
    TypeRegistry,
    connect,
    default_registry,
)
from eventfold._personal import SubjectScan
from eventfold.privacy import enable
from eventfold.store import SupportsCodec, SupportsSnapshots, SupportsSubjectKeys, capability
from eventfold.write import encode_state, every
from eventfold.write._sealed import MARKER

PRIVACY_BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class Registered(Event):
    __event_type__ = "privacy_snapshot_test.Registered"
    customer_id: str
    name: Annotated[str, Personal(subject="customer_id", replacement="<erased>")]
    email: Annotated[str, Personal(subject="customer_id")]


class Referred(Event):
    """Two data subjects in one event."""

    __event_type__ = "privacy_snapshot_test.Referred"
    referrer_id: str
    referrer_name: Annotated[str, Personal(subject="referrer_id")]
    friend_id: int
    friend_email: Annotated[str, Personal(subject="friend_id", replacement="?")]


class Noted(Event):
    __event_type__ = "privacy_snapshot_test.Noted"
    n: int


class Book(msgspec.Struct):
    names: dict[str, str] = {}
    emails: dict[str, str] = {}
    notes: int = 0


Command = Registered | Referred | Noted


def evolve(state: Book, event: Event) -> Book:
    names, emails = dict(state.names), dict(state.emails)
    if isinstance(event, Registered):
        names[event.customer_id] = event.name
        emails[event.customer_id] = event.email
    elif isinstance(event, Referred):
        names[event.referrer_id] = event.referrer_name
        emails[str(event.friend_id)] = event.friend_email
    elif isinstance(event, Noted):
        return msgspec.structs.replace(state, notes=state.notes + event.n)
    return Book(names, emails, state.notes)


def decide(command: Command, state: Book) -> Sequence[Event]:
    return [command]  # each command is the event it asks for


book: Decider[Command, Book, Event] = Decider(initial_state=Book(), evolve=evolve, decide=decide)

ANN = Registered(customer_id="c-1", name="Ann Smith", email="ann@example.com")
REFERRAL = Referred(
    referrer_id="c-1", referrer_name="Ann Smith", friend_id=7, friend_email="dan@example.com"
)


@pytest.fixture(params=PRIVACY_BACKENDS)
def privacy_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def store(privacy_url: str) -> AsyncIterator[EventStore]:
    async with connect(privacy_url) as s:
        yield s


def handler_of(store: EventStore, cache_size: int = 0) -> CommandHandler[Command, Book, Event]:
    options = HandlerOptions(snapshots=every(1), cache_size=cache_size)
    return CommandHandler(store, book, options=options)


def snapshots_of(store: EventStore) -> SnapshotStore:
    return capability(store, SupportsSnapshots).snapshots


async def raw_snapshot(store: EventStore, stream: str = "book-1") -> Snapshot:
    found = await snapshots_of(store).load_snapshot(stream, "Book")
    assert found is not None
    return found


async def from_scratch(store: EventStore, stream: str = "book-1") -> Book:
    return book.fold([e.data async for e in store.read_stream(stream)])


async def forget_elsewhere(store: EventStore, subject: str) -> None:
    """Delete ``subject``'s keys as a process this one does not follow would: this one's
    handlers do not hear of it (keys are not cached: enable with ``cache_seconds=0``)."""
    await asyncio.to_thread(capability(store, SupportsSubjectKeys).subject_keys.forget, subject)


def header_of(data: bytes) -> list[list[str]]:
    at = len(MARKER) + 4
    size = int.from_bytes(data[len(MARKER) : at], "big")
    named: list[list[str]] = msgspec.json.decode(data[at : at + size])
    return named


async def test_a_snapshot_of_personal_state_holds_no_personal_value(store: EventStore) -> None:
    enable(store)
    await handler_of(store).handle("book-1", ANN)
    await handler_of(store).handle("book-1", Noted(n=1))
    snap = await raw_snapshot(store)
    assert snap.version == 2
    assert snap.data.startswith(MARKER)
    assert b"Ann" not in snap.data
    assert b"ann@" not in snap.data
    assert [s for s, _ in header_of(snap.data)] == ["c-1"]
    loaded = await handler_of(store).load_details("book-1")
    assert (loaded.snapshot_version, loaded.replayed) == (2, 0)
    assert loaded.state == Book({"c-1": "Ann Smith"}, {"c-1": "ann@example.com"}, 1)
    assert loaded.subjects == {"c-1"}


async def test_after_a_forget_the_snapshot_is_ignored_and_replaced(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    privacy = enable(store)
    handler = handler_of(store)
    await handler.handle("book-1", ANN)
    await handler.handle("book-1", Noted(n=2))
    await privacy.forget("c-1")
    with caplog.at_level(logging.INFO, logger="eventfold.handler"):
        loaded = await handler_of(store).load_details("book-1")
    assert "was forgotten" in caplog.text
    assert (loaded.snapshot_version, loaded.replayed) == (0, 2)
    erased = Book({"c-1": "<erased>"}, {"c-1": ""}, 2)
    assert loaded.state == erased == await from_scratch(store)
    # Replaced: in plain now, as nothing in it is anyone's any more.
    snap = await raw_snapshot(store)
    assert snap.data == encode_state(erased)
    again = await handler_of(store).load_details("book-1")
    assert (again.snapshot_version, again.replayed, again.state) == (2, 0, erased)


async def test_forgetting_one_of_two_subjects_refolds_and_seals_for_the_other(
    store: EventStore,
) -> None:
    privacy = enable(store)
    await handler_of(store).handle("book-1", REFERRAL)
    assert [s for s, _ in header_of((await raw_snapshot(store)).data)] == ["7", "c-1"]
    await privacy.forget("7")
    loaded = await handler_of(store).load_details("book-1")
    assert loaded.snapshot_version == 0
    assert loaded.state == Book({"c-1": "Ann Smith"}, {"7": "?"}) == await from_scratch(store)
    snap = await raw_snapshot(store)
    assert [s for s, _ in header_of(snap.data)] == ["c-1"]
    assert b"Ann" not in snap.data
    again = await handler_of(store).load_details("book-1")
    assert (again.snapshot_version, again.state) == (1, loaded.state)


async def test_a_state_with_no_personal_events_is_stored_as_before(store: EventStore) -> None:
    enable(store)
    handler = handler_of(store)
    await handler.handle("book-1", Noted(n=1))
    await handler.handle("book-1", Noted(n=2))
    snap = await raw_snapshot(store)
    assert snap.data == encode_state(Book(notes=3)) == b'{"names":{},"emails":{},"notes":3}'
    assert (await handler_of(store).load_details("book-1")).subjects == frozenset()


async def test_the_subjects_of_a_sealed_snapshot_carry_over_to_the_next(
    store: EventStore,
) -> None:
    enable(store)
    await handler_of(store).handle("book-1", ANN)
    # A fresh handler starts from the sealed snapshot; the events after it are plain.
    await handler_of(store).handle("book-1", Noted(n=1))
    snap = await raw_snapshot(store)
    assert snap.version == 2
    assert [s for s, _ in header_of(snap.data)] == ["c-1"]
    assert b"Ann" not in snap.data


@pytest.mark.parametrize("at", ["header", "ciphertext", "stream"])
async def test_a_tampered_sealed_snapshot_is_refolded_and_replaced(
    store: EventStore, caplog: pytest.LogCaptureFixture, at: str
) -> None:
    enable(store)
    await handler_of(store).handle("book-1", ANN)
    snap = await raw_snapshot(store)
    data = bytearray(snap.data)
    if at == "header":
        data[len(MARKER) + 7] ^= 1  # the subject's name: c-1 -> b-1
    elif at == "ciphertext":
        data[-1] ^= 1
    forged = msgspec.structs.replace(snap, data=bytes(data))
    if at == "stream":
        # The sealed state of another stream, put in place of this one's.
        await handler_of(store).handle("book-2", ANN)
        other = await raw_snapshot(store, "book-2")
        forged = msgspec.structs.replace(snap, data=other.data)
    await snapshots_of(store).save_snapshot(forged)
    with caplog.at_level(logging.WARNING, logger="eventfold.handler"):
        loaded = await handler_of(store).load_details("book-1")
    assert "cannot be opened" in caplog.text
    assert loaded.snapshot_version == 0
    assert loaded.state == Book({"c-1": "Ann Smith"}, {"c-1": "ann@example.com"})
    replaced = await raw_snapshot(store)
    assert replaced.data != forged.data
    assert (await handler_of(store).load_details("book-1")).snapshot_version == 1


async def test_without_a_protector_a_sealed_snapshot_is_unusable_and_not_replaced_plain(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    enable(store)
    await handler_of(store).handle("book-1", ANN)
    sealed = await raw_snapshot(store)
    codec = capability(store, SupportsCodec).codec
    protector, codec.protector = codec.protector, None
    with caplog.at_level(logging.DEBUG, logger="eventfold.handler"):
        loaded = await handler_of(store).load_details("book-1")
        # A command here folds the replacements too: its state is not snapshotted.
        await handler_of(store).handle("book-1", Noted(n=1))
    assert "no protector is attached" in caplog.text
    assert "not snapshotting" in caplog.text
    assert loaded.snapshot_version == 0
    assert loaded.state == Book({"c-1": "<erased>"}, {"c-1": ""})
    assert loaded.replaced
    assert await raw_snapshot(store) == sealed
    codec.protector = protector
    back = await handler_of(store).load_details("book-1")
    assert (back.snapshot_version, back.replayed) == (1, 1)
    assert back.state == Book({"c-1": "Ann Smith"}, {"c-1": "ann@example.com"}, 1)


def test_a_scan_notes_subjects_and_fields_that_read_as_replacements() -> None:
    scan = SubjectScan()
    scan.payloads([Noted(n=1), ANN])
    assert (scan.subjects, scan.replaced) == (frozenset({"c-1"}), False)
    # A row of a load: (version, payload, recorded time); an int subject reads as text.
    # The friend's fields read as replacements: nothing of theirs to seal for.
    erased_friend = Referred(referrer_id="c-2", referrer_name="Bo", friend_id=7, friend_email="?")
    scan.rows([(2, erased_friend, 0)])
    assert (scan.subjects, scan.replaced) == (frozenset({"c-1", "c-2"}), True)
    scan = SubjectScan()
    scan.payloads([{"customer_id": "c-1"}, "text", None])
    assert (scan.subjects, scan.replaced) == (frozenset(), False)


async def test_a_cached_state_of_a_forgotten_subject_is_never_snapshotted(
    store: EventStore,
) -> None:
    privacy = enable(store, cache_seconds=0)
    handler = handler_of(store, cache_size=10)
    await handler.handle("book-1", ANN)
    await forget_elsewhere(store, "c-1")
    # The state cached before the forget still holds Ann's values: not stored, and
    # dropped from the cache as its snapshot is refused.
    cached = await handler.handle("book-1", Noted(n=1))
    assert cached.state.names == {"c-1": "Ann Smith"}
    assert await privacy.is_forgotten("c-1")  # sealing made no key for them
    snap = await raw_snapshot(store)
    assert snap.version == 1
    assert b"Ann" not in snap.data
    fresh = await handler.handle("book-1", Noted(n=1))
    assert fresh.state == Book({"c-1": "<erased>"}, {"c-1": ""}, 2)
    assert (await raw_snapshot(store)).data == encode_state(fresh.state)


async def test_evict_drops_a_cached_state(store: EventStore) -> None:
    enable(store, cache_seconds=0)
    handler = CommandHandler(store, book, options=HandlerOptions(cache_size=10))
    await handler.handle("book-1", ANN)
    await forget_elsewhere(store, "c-1")
    cached = await handler.handle("book-1", Noted(n=1))
    assert cached.state.names == {"c-1": "Ann Smith"}  # not heard of here
    handler.evict("book-1")
    handler.evict("book-9")  # not cached: nothing to do
    fresh = await handler.handle("book-1", Noted(n=1))
    assert fresh.state == Book({"c-1": "<erased>"}, {"c-1": ""}, 2)


async def test_a_sealed_snapshot_of_an_older_state_version_is_opened_then_upcast(
    privacy_url: str,
) -> None:
    registry = TypeRegistry()
    for name in default_registry.names():
        cls = default_registry.resolve(name)
        assert cls is not None
        registry.register(cls, name)

    @registry.state_upcaster("Book", from_version=1)
    def mark(state: dict[str, object]) -> dict[str, object]:
        # Visible in the result: a fold from the events would leave notes at 0.
        return {**state, "notes": 100}

    async with connect(privacy_url, registry=registry) as store:
        enable(store)
        await handler_of(store).handle("book-1", ANN)
        assert (await raw_snapshot(store)).data.startswith(MARKER)
        v2 = Decider(initial_state=Book(), evolve=evolve, decide=decide, state_version=2)
        loaded = await CommandHandler(store, v2).load_details("book-1")
        assert (loaded.snapshot_version, loaded.replayed) == (1, 0)
        assert loaded.state == Book({"c-1": "Ann Smith"}, {"c-1": "ann@example.com"}, 100)
        assert loaded.subjects == {"c-1"}
