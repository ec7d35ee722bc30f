"""Crypto-shredding: personal fields sealed per data subject, erased by forgetting keys."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

import msgspec
import pytest

import eventfold
from eventfold import (
    NO_STREAM,
    ConfigurationError,
    Event,
    EventStore,
    InvalidEvent,
    NewEvent,
    Personal,
    RecordedEvent,
    UndecodableEvent,
    connect,
)
from eventfold.privacy import AUDIT_STREAM, SubjectForgotten, enable, erased_fields
from eventfold.projections import (
    DocumentProjection,
    DocumentView,
    Subscription,
    attach_inline,
    read_models_for,
)
from eventfold.relay import InProcessSink, Relay, RelayOptions
from eventfold.store import (
    HookOrder,
    HookTransaction,
    SubjectKeys,
    SupportsCodec,
    SupportsSubjectKeys,
    SupportsTransactionHooks,
    TransactionParticipant,
    capability,
)
from eventfold.store.kit import Codec, Row
from eventfold.testing import settle

PRIVACY_BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class CustomerRegistered(Event):
    __event_type__ = "privacy_test.CustomerRegistered"
    customer_id: str
    name: Annotated[str, Personal(subject="customer_id", replacement="<erased>")]
    email: Annotated[str, Personal(subject="customer_id")]
    age: Annotated[int | None, Personal(subject="customer_id")] = None
    plan: str = "basic"


class Referred(Event):
    """Two data subjects in one event."""

    __event_type__ = "privacy_test.Referred"
    referrer_id: str
    referrer_name: Annotated[str, Personal(subject="referrer_id")]
    friend_id: int
    friend_email: Annotated[str, Personal(subject="friend_id", replacement="?")]


class Plain(Event):
    __event_type__ = "privacy_test.Plain"
    n: int


ANN = CustomerRegistered(customer_id="c-1", name="Ann Smith", email="ann@example.com", age=41)
BOB = CustomerRegistered(customer_id="c-2", name="Bob Jones", email="bob@example.com")
CAROL = CustomerRegistered(customer_id="c-3", name="Carol Diaz", email="carol@example.com")


class Names(msgspec.Struct):
    name: str = ""
    email: str = ""


@pytest.fixture(params=PRIVACY_BACKENDS)
def privacy_url(request: pytest.FixtureRequest) -> str:
    """A fresh store of each backend that keeps subject keys."""
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def store(privacy_url: str) -> AsyncIterator[EventStore]:
    async with connect(privacy_url) as s:
        yield s


def codec_of(store: EventStore) -> Codec:
    return capability(store, SupportsCodec).codec


async def read(store: EventStore, stream: str) -> list[Any]:
    return [e.data async for e in store.read_stream(stream)]


# -- sealing and opening --------------------------------------------------------------------


async def test_round_trip_reads_the_plain_values_and_stores_none(store: EventStore) -> None:
    enable(store)
    result = await store.append("customer-1", [ANN], expected_version=NO_STREAM)
    assert await read(store, "customer-1") == [ANN]
    await settle(store, result.position)
    [logged] = [e async for e in store.read_all() if e.stream_id == "customer-1"]
    assert logged.data == ANN
    entries = logged.metadata["$personal"]
    assert [e["f"] for e in entries] == [["name", "email", "age"]]
    assert "@" not in logged.raw_metadata.decode()  # the email; never in base64
    # What is stored: replacement values in the data, only ciphertext in the metadata.
    codec_of(store).protector = None
    [stored] = await read(store, "customer-1")
    assert stored == CustomerRegistered(
        customer_id="c-1", name="<erased>", email="", age=None, plan="basic"
    )


async def test_forget_makes_every_read_path_give_the_replacements(store: EventStore) -> None:
    privacy = enable(store)
    bob = CustomerRegistered(customer_id="c-2", name="Bob", email="bob@example.com")
    await store.append("customer-1", [ANN], expected_version=NO_STREAM)
    await store.append("customer-2", [bob], expected_version=NO_STREAM)
    result = await privacy.forget("c-1", reason="erasure request 42", actor="ann")
    assert result.keys_deleted == 1
    await settle(store, result.audit.position)
    erased = CustomerRegistered(customer_id="c-1", name="<erased>", email="", age=None)
    assert await read(store, "customer-1") == [erased]
    assert await read(store, "customer-2") == [bob]  # another subject is untouched
    logged = {e.stream_id: e.data async for e in store.read_all()}
    assert logged["customer-1"] == erased
    assert logged["customer-2"] == bob
    sub = Subscription(store, types=[CustomerRegistered.__event_type__], poll_interval=0.01)
    async for batch in sub:
        if batch.events:
            assert [e.data for e in batch.events] == [erased, bob]
            break
    # Deterministic: a second read gives the same values.
    assert await read(store, "customer-1") == [erased]
    assert await privacy.is_forgotten("c-1")
    assert not await privacy.is_forgotten("c-2")


async def test_folds_see_the_replacements_after_forget(store: EventStore) -> None:
    privacy = enable(store)

    def evolve(state: tuple[str, ...], event: Event) -> tuple[str, ...]:
        assert isinstance(event, CustomerRegistered)
        return (*state, event.name)

    def decide(command: Any, state: tuple[str, ...]) -> list[Event]:
        return []

    decider: eventfold.Decider[Any, tuple[str, ...], Event] = eventfold.Decider(
        initial_state=(), evolve=evolve, decide=decide
    )
    again = CustomerRegistered(customer_id="c-1", name="Ann Jones", email="a@j")
    await store.append("customer-1", [ANN, again], expected_version=NO_STREAM)
    loaded = await eventfold.CommandHandler(store, decider).load("customer-1")
    assert loaded == ("Ann Smith", "Ann Jones")
    await privacy.forget("c-1")
    # A fresh handler: a handler's own cache holds states folded before the forget.
    assert await eventfold.CommandHandler(store, decider).load("customer-1") == (
        "<erased>",
        "<erased>",
    )


async def test_several_subjects_per_event_forget_one_keep_the_other(store: EventStore) -> None:
    privacy = enable(store)
    event = Referred(referrer_id="c-1", referrer_name="Ann", friend_id=7, friend_email="f@x")
    await store.append("referral-1", [event], expected_version=NO_STREAM)
    [recorded] = [e async for e in store.read_stream("referral-1")]
    assert len(recorded.metadata["$personal"]) == 2
    assert erased_fields(store, recorded) == ()
    await privacy.forget("7")  # the subject id is str() of the subject field
    assert await read(store, "referral-1") == [
        Referred(referrer_id="c-1", referrer_name="Ann", friend_id=7, friend_email="?")
    ]
    [recorded] = [e async for e in store.read_stream("referral-1")]
    assert erased_fields(store, recorded) == ("friend_email",)


async def test_mapping_payloads_of_a_personal_class_are_sealed_too(store: EventStore) -> None:
    enable(store)
    payload = {"customer_id": "c-3", "name": "Cy", "email": "cy@example.org"}
    await store.append(
        "customer-3",
        [NewEvent(payload, type=CustomerRegistered.__event_type__, metadata={"source": "web"})],
        expected_version=NO_STREAM,
    )
    [recorded] = [e async for e in store.read_stream("customer-3")]
    assert recorded.data == CustomerRegistered(customer_id="c-3", name="Cy", email="cy@example.org")
    assert recorded.metadata["source"] == "web"
    assert "@" not in recorded.raw_metadata.decode()  # never in base64


async def test_append_without_enable_is_refused_and_stores_nothing(store: EventStore) -> None:
    with pytest.raises(ConfigurationError, match=r"call eventfold.privacy.enable\(store\) first"):
        await store.append("customer-1", [Plain(n=1), ANN], expected_version=NO_STREAM)
    with pytest.raises(ConfigurationError, match="has personal fields"):
        await store.append(
            "customer-1",
            [NewEvent(msgspec.to_builtins(ANN), type=CustomerRegistered.__event_type__)],
            expected_version=NO_STREAM,
        )
    assert await read(store, "customer-1") == []
    assert await store.head() == eventfold.START


async def test_a_none_subject_is_refused(store: EventStore) -> None:
    class Optional(Event):
        __event_type__ = "privacy_test.Optional"
        who: str | None
        name: Annotated[str, Personal(subject="who")]

    enable(store)
    with pytest.raises(InvalidEvent, match=r"Optional.who is the data subject of name"):
        await store.append("x-1", [Optional(who=None, name="n")], expected_version=NO_STREAM)
    assert await read(store, "x-1") == []


# -- erasure's audit trail ------------------------------------------------------------------


async def test_the_audit_event_holds_no_personal_values(store: EventStore) -> None:
    privacy = enable(store)
    await store.append("customer-1", [ANN], expected_version=NO_STREAM)
    first = await privacy.forget("c-1", reason="erasure request 42", actor="ann")
    again = await privacy.forget("c-1")
    assert (first.keys_deleted, again.keys_deleted) == (1, 0)
    audit = [e async for e in store.read_stream(AUDIT_STREAM)]
    assert [e.data for e in audit] == [
        SubjectForgotten(subject="c-1", keys_deleted=1, reason="erasure request 42", actor="ann"),
        SubjectForgotten(subject="c-1", keys_deleted=0),
    ]
    for event in audit:
        text = msgspec.json.encode(event.data).decode() + event.raw_metadata.decode()
        assert "Ann Smith" not in text
        assert "ann@example.com" not in text
    with pytest.raises(eventfold.InvalidInput, match="subject must be a non-empty str"):
        await privacy.forget("")


# -- keys -----------------------------------------------------------------------------------


async def test_keys_wrapped_with_a_master_key_need_that_key(store: EventStore) -> None:
    master = os.urandom(32)
    enable(store, master_key=master)
    await store.append("customer-1", [ANN], expected_version=NO_STREAM)
    enable(store, master_key=os.urandom(32))
    with pytest.raises(ConfigurationError, match="the master key does not open subject key"):
        await read(store, "customer-1")
    enable(store)
    with pytest.raises(ConfigurationError, match="wrapped with a master key"):
        await read(store, "customer-1")
    enable(store, master_key=master)
    assert await read(store, "customer-1") == [ANN]


async def test_the_master_key_comes_from_the_environment(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    master = os.urandom(32)
    monkeypatch.setenv("EVENTFOLD_MASTER_KEY", base64.b64encode(master).decode())
    enable(store)
    await store.append("customer-1", [ANN], expected_version=NO_STREAM)
    monkeypatch.delenv("EVENTFOLD_MASTER_KEY")
    enable(store, master_key=master)
    assert await read(store, "customer-1") == [ANN]
    monkeypatch.setenv("EVENTFOLD_MASTER_KEY", "not base64!")
    with pytest.raises(ConfigurationError, match="is not base64"):
        enable(store)
    with pytest.raises(ConfigurationError, match="must be 32 bytes"):
        enable(store, master_key=b"short")


def test_a_store_without_subject_keys_cannot_enable() -> None:
    class Bare:
        codec = Codec()

    with pytest.raises(eventfold.UnsupportedCapability, match="per-subject keys"):
        enable(Bare())  # type: ignore[arg-type]


# -- markers --------------------------------------------------------------------------------


def bad_class(**fields: Any) -> type[Event]:
    namespace: dict[str, Any] = {"__annotations__": fields, "__event_type__": "privacy_test.Bad"}
    cls = type("Bad", (Event,), namespace)
    eventfold.default_registry._by_name.pop("privacy_test.Bad", None)
    return cls


class Address(msgspec.Struct):
    street: Annotated[str, Personal(subject="x")]


@pytest.mark.parametrize(
    ("fields", "values", "error"),
    [
        ({"name": Annotated[str, Personal(subject="nobody")]}, {"name": "n"}, "names no field"),
        (
            {"a": Annotated[str, Personal(subject="b")], "b": Annotated[str, Personal("a")]},
            {"a": "1", "b": "2"},
            "is itself personal",
        ),
        (
            {"tags": list[Annotated[str, Personal(subject="tags")]]},
            {"tags": []},
            "inside its type",
        ),
        ({"x": str, "home": Address}, {"x": "1", "home": {"street": "s"}}, "inside its type"),
        (
            {"id": str, "when": Annotated[bytes, Personal(subject="id")]},
            {"id": "1", "when": ""},
            "no default replacement",
        ),
        (
            {"id": str, "n": Annotated[int, Personal(subject="id", replacement="x")]},
            {"id": "1", "n": 1},
            "not a valid",
        ),
    ],
)
async def test_bad_markers_are_named_when_the_class_is_first_encoded(
    fields: dict[str, Any], values: dict[str, Any], error: str
) -> None:
    cls = bad_class(**fields)
    codec = Codec(eventfold.TypeRegistry())
    with pytest.raises(InvalidEvent, match=rf"Bad\.\w+.*{error}"):
        codec.encode("bad-1", [msgspec.convert(values, cls)])


def test_personal_needs_a_subject_name() -> None:
    with pytest.raises(InvalidEvent, match="name of the field"):
        Personal(subject="")


# -- the codec: tampering, swapping, upcasting, loads ---------------------------------------


@pytest.fixture
async def sealing() -> AsyncIterator[tuple[EventStore, Codec]]:
    """A memory store with privacy enabled, and its codec."""
    async with connect("memory://") as s:
        enable(s)
        yield s, codec_of(s)


def rows_of(codec: Codec, stream_id: str, events: list[Any]) -> list[Row]:
    return [
        (e.event_id, stream_id, i + 1, e.type, e.schema_version, e.data, e.metadata, 0, 0, i + 1)
        for i, e in enumerate(codec.encode(stream_id, events))
    ]


def with_meta(row: Row, meta: bytes) -> Row:
    return (*row[:6], meta, *row[7:])


async def test_a_tampered_ciphertext_reads_as_undecodable(
    sealing: tuple[EventStore, Codec],
) -> None:
    _, codec = sealing
    [row] = rows_of(codec, "customer-1", [ANN])
    meta = msgspec.json.decode(row[6])
    text = meta["$personal"][0]["c"]
    meta["$personal"][0]["c"] = text[:-2] + ("AA" if text[-2:] != "AA" else "BB")
    with pytest.raises(UndecodableEvent, match="personal fields cannot be opened"):
        codec.decode_rows([with_meta(row, msgspec.json.encode(meta))])
    meta["$personal"][0]["f"] = ["name"]
    with pytest.raises(UndecodableEvent, match="cannot be opened"):
        codec.decode_rows([with_meta(row, msgspec.json.encode(meta))])
    with eventfold.keep_undecodable():
        [event] = codec.decode_rows([with_meta(row, msgspec.json.encode(meta))])
    assert isinstance(event.data, eventfold.UndecodedPayload)


async def test_ciphertexts_swapped_between_events_fail_authentication(
    sealing: tuple[EventStore, Codec],
) -> None:
    _, codec = sealing
    bob = CustomerRegistered(customer_id="c-1", name="Bob", email="b@x")
    first, second = rows_of(codec, "customer-1", [ANN, bob])
    assert [e.data for e in codec.decode_rows([first, second])] == [ANN, bob]
    with pytest.raises(UndecodableEvent, match="does not authenticate"):
        codec.decode_rows([with_meta(first, second[6])])


async def test_load_rows_open_sealed_events(sealing: tuple[EventStore, Codec]) -> None:
    _, codec = sealing
    [row, plain] = rows_of(codec, "customer-1", [ANN, Plain(n=1)])
    # (version, type, schema_version, data, recorded_us, ..., event id + metadata if sealed)
    loaded = [(r[2], r[3], r[4], r[5], 0, r[0] + r[6] if r is row else None) for r in (row, plain)]
    assert [p for _, p, _ in codec.decode_loaded("customer-1", loaded)] == [ANN, Plain(n=1)]


async def test_sql_loads_open_sealed_events(sql_url: str) -> None:
    """The SQL backends' one-trip loads carry what opening a sealed row needs (with the
    keys of another store lent to the SQL store's codec: the load does not care whose)."""

    def evolve(state: tuple[str, ...], event: Event) -> tuple[str, ...]:
        return (*state, event.name) if isinstance(event, CustomerRegistered) else state

    decider: eventfold.Decider[Any, tuple[str, ...], Event] = eventfold.Decider(
        initial_state=(), evolve=evolve, decide=lambda command, state: []
    )
    async with connect("memory://") as keeper, connect(sql_url) as store:
        privacy = enable(keeper)
        codec_of(store).protector = codec_of(keeper).protector
        bob = CustomerRegistered(customer_id="c-2", name="Bob", email="b@x")
        await store.append("customer-1", [ANN, Plain(n=1), bob], expected_version=NO_STREAM)
        handler = eventfold.CommandHandler(store, decider)
        assert await handler.load("customer-1") == ("Ann Smith", "Bob")
        await privacy.forget("c-1")
        handler = eventfold.CommandHandler(store, decider)
        assert await handler.load("customer-1") == ("<erased>", "Bob")
        assert await handler.load("customer-1", at_version=1) == ("<erased>",)


def profile_class(version: int) -> type[Event]:
    """The class ``privacy_test.Profile`` as of ``version`` (one place, so both coexist)."""
    if version == 1:

        class Profile(Event):
            __event_type__ = "privacy_test.Profile"
            user: str
            fullname: Annotated[str, Personal(subject="user", replacement="-")]

    else:

        class Profile(Event):  # type: ignore[no-redef]
            __event_type__ = "privacy_test.Profile"
            __schema_version__ = 2
            user: str
            first: Annotated[str, Personal(subject="user")]
            last: Annotated[str, Personal(subject="user")]

    return Profile


async def test_old_sealed_events_are_opened_then_upcast(
    sealing: tuple[EventStore, Codec],
) -> None:
    store, old_codec = sealing
    v1, v2 = profile_class(1), profile_class(2)
    old_codec.registry = eventfold.TypeRegistry()
    old_codec.registry.register(v1)
    rows = rows_of(old_codec, "profile-1", [v1(user="u-1", fullname="Ann Smith")])
    registry = eventfold.TypeRegistry()
    registry.register(v2)

    @registry.upcaster("privacy_test.Profile", from_version=1)
    def split(data: dict[str, Any]) -> dict[str, Any]:
        first, _, last = data["fullname"].partition(" ")
        return {"user": data["user"], "first": first, "last": last}

    codec = Codec(registry)
    codec.protector = old_codec.protector
    old = NewEvent({"user": "u-2", "fullname": "Bo"}, type=v2.__event_type__, schema_version=1)
    with pytest.raises(InvalidEvent, match="only its current schema version"):
        codec.encode("profile-2", [old])
    [event] = codec.decode_rows(rows)
    assert event.data == v2(user="u-1", first="Ann", last="Smith")
    assert event.stored_schema_version == 1
    await enable(store).forget("u-1")
    old_codec.protector = codec.protector = codec_of(store).protector
    [event] = codec.decode_rows(rows)
    assert event.data == v2(user="u-1", first="-", last="")


# -- what leaves the store ------------------------------------------------------------------


async def test_the_relay_publishes_the_sealed_form(store: EventStore) -> None:
    enable(store)
    await store.append("customer-1", [ANN], expected_version=NO_STREAM)
    result = await store.append("plain-1", [Plain(n=1)], expected_version=NO_STREAM)
    await settle(store, result.position)
    sink = InProcessSink()
    fast = RelayOptions(checkpoint_interval=0.01, poll_interval=0.02, retry_delay=0.01)
    async with Relay(store, sink, destination="crm", options=fast) as relay:
        await relay.wait_for(result.position)
    by_key = sink.by_key()
    [message] = by_key["customer-1"]
    assert b"Ann" not in message.payload
    assert b"ann@example" not in message.payload
    assert msgspec.json.decode(message.payload) == {
        "customer_id": "c-1",
        "name": "<erased>",
        "email": "",
        "age": None,
        "plan": "basic",
    }
    assert msgspec.json.decode(by_key["plain-1"][0].payload) == {"n": 1}


async def test_transformed_copies_still_open_and_forget_reaches_them(store: EventStore) -> None:
    privacy = enable(store)
    await store.append("customer-1", [ANN, Plain(n=1)], expected_version=NO_STREAM)
    await eventfold.transform(store, "customer-1", target=lambda s: f"{s}_v2", fn=lambda e: e)
    assert await read(store, "customer-1_v2") == [ANN, Plain(n=1)]
    await privacy.forget("c-1")
    [copied, _] = await read(store, "customer-1_v2")
    assert (copied.name, copied.email) == ("<erased>", "")
    # A copy made after the forget keeps the dead entry instead of a new key.
    await eventfold.transform(store, "customer-1_v2", target=lambda s: f"{s}b", fn=lambda e: e)
    [again, _] = await read(store, "customer-1_v2b")
    assert again.name == "<erased>"
    assert await privacy.is_forgotten("c-1")


async def test_a_second_store_sees_a_forget_after_its_cache_window(sql_url: str) -> None:
    async with connect(sql_url) as first, connect(sql_url) as second, connect(sql_url) as third:
        privacy = enable(first)
        enable(second, cache_seconds=0)
        enable(third)  # the default window: 60 s
        await first.append("customer-1", [ANN], expected_version=NO_STREAM)
        assert await read(second, "customer-1") == [ANN]
        assert await read(third, "customer-1") == [ANN]
        await privacy.forget("c-1")
        [seen] = await read(second, "customer-1")
        assert (seen.name, seen.email) == ("<erased>", "")
        # Within its window, a store that cached the key still opens (as documented).
        assert await read(third, "customer-1") == [ANN]


def keys_of(store: EventStore) -> SubjectKeys:
    return capability(store, SupportsSubjectKeys).subject_keys


async def test_a_first_sealed_event_in_a_unit_of_work_needs_no_prepare(
    privacy_url: str,
) -> None:
    async with connect(privacy_url) as store:
        privacy = enable(store)
        await privacy.ready()
        async with store.unit_of_work() as uow:  # type: ignore[attr-defined]
            await uow.append("customer-1", [ANN], expected_version=NO_STREAM)
            await uow.append("customer-2", [BOB], expected_version=NO_STREAM)
        assert await read(store, "customer-1") == [ANN]
        assert await read(store, "customer-2") == [BOB]
        assert keys_of(store).current("c-1") is not None
        assert not await privacy.is_forgotten("c-2")
        # prepare is harmless (and still checks its subjects).
        await privacy.prepare("c-3")
        with pytest.raises(eventfold.InvalidInput, match="subject must be a non-empty str"):
            await privacy.prepare("c-4", "")
        async with store.unit_of_work() as uow:  # type: ignore[attr-defined]
            await uow.append("customer-3", [CAROL], expected_version=NO_STREAM)
        assert await read(store, "customer-3") == [CAROL]


class Refuse(TransactionParticipant):
    """Fails the appends to streams it is told to refuse, after the keys are written."""

    name = "test.refuse"
    order = HookOrder.UNIT_OF_WORK

    def __init__(self) -> None:
        self.streams: set[str] = set()

    async def apply(self, tx: HookTransaction, events: Sequence[RecordedEvent]) -> None:
        if any(e.stream_id in self.streams for e in events):
            raise eventfold.InvalidInput("refused by the test participant")


async def test_a_failed_append_leaves_no_key_and_the_next_one_stores_it(sqlite_url: str) -> None:
    async with connect(sqlite_url) as store, connect(sqlite_url) as other:
        privacy = enable(store)
        await privacy.ready()
        enable(other)
        refuse = Refuse()
        await capability(store, SupportsTransactionHooks).transaction_hooks.add(refuse)
        keys = keys_of(store)
        with pytest.raises(eventfold.WrongExpectedVersion):
            await store.append("customer-1", [ANN], expected_version=3)
        assert keys.current("c-1") is None
        # A participant after the key's write fails the append: the key goes with it.
        refuse.streams.add("customer-1")
        for _ in range(2):
            with pytest.raises(eventfold.InvalidInput, match="refused by the test"):
                await store.append("customer-1", [ANN], expected_version=NO_STREAM)
            assert keys.current("c-1") is None
        assert await store.stream_version("customer-1") == 0
        # An append of another subject in the same group commit (written again without
        # the failed one) commits its key.
        refused, bob = await asyncio.gather(
            store.append("customer-1", [ANN], expected_version=NO_STREAM),
            store.append("customer-2", [BOB], expected_version=NO_STREAM),
            return_exceptions=True,
        )
        assert isinstance(refused, eventfold.InvalidInput)
        assert not isinstance(bob, BaseException)
        assert keys.current("c-2") is not None
        refuse.streams.clear()
        await store.append("customer-1", [ANN], expected_version=NO_STREAM)
        found = keys.current("c-1")
        assert found is not None
        # The key committed with the event: another store object opens it.
        assert await read(other, "customer-1") == [ANN]
        assert await read(other, "customer-2") == [BOB]
        # Later appends of the subject use the same key, and write nothing more.
        await store.append("customer-1", [ANN], expected_version=1)
        assert keys.current("c-1") == found
        assert await read(other, "customer-1") == [ANN, ANN]


async def test_a_unit_of_work_that_rolls_back_leaves_no_key(sqlite_url: str) -> None:
    async with connect(sqlite_url) as store:
        privacy = enable(store)
        await privacy.ready()

        async def abandoned() -> None:
            async with store.unit_of_work() as uow:  # type: ignore[attr-defined]
                await uow.append("customer-1", [ANN], expected_version=NO_STREAM)
                raise RuntimeError("changed my mind")

        with pytest.raises(RuntimeError, match="changed my mind"):
            await abandoned()
        assert await privacy.is_forgotten("c-1")
        assert await store.stream_version("customer-1") == 0
        async with store.unit_of_work() as uow:  # type: ignore[attr-defined]
            await uow.append("customer-1", [ANN], expected_version=NO_STREAM)
        assert not await privacy.is_forgotten("c-1")
    async with connect(sqlite_url) as again:
        enable(again)
        assert await read(again, "customer-1") == [ANN]


async def test_a_forgotten_key_never_comes_back_from_a_later_append(sql_url: str) -> None:
    async with connect(sql_url) as store, connect(sql_url) as other:
        await enable(store).ready()
        elsewhere = enable(other)
        await store.append("customer-1", [ANN], expected_version=NO_STREAM)
        # Forgotten by another store object, within this one's cache window: its next
        # append of the subject must not write the key it made again.
        await elsewhere.forget("c-1")
        await store.append("customer-1", [ANN], expected_version=1)
        assert keys_of(store).current("c-1") is None
        [first, second] = await read(other, "customer-1")
        assert (first.name, second.name) == ("<erased>", "<erased>")


async def test_an_inline_projection_reads_personal_fields_in_the_transaction(
    sql_url: str,
) -> None:
    async with connect(sql_url) as store:
        privacy = enable(store)
        await privacy.ready()
        proj = DocumentProjection("customer_names", document=Names)

        @proj.on(CustomerRegistered)
        def registered(doc: Names, event: eventfold.RecordedEvent) -> Names:
            return Names(event.data.name, event.data.email)

        await attach_inline(store, [proj])
        view = DocumentView(read_models_for(store), proj)
        await store.append("customer-1", [ANN], expected_version=NO_STREAM)
        assert await view.get("customer-1") == Names("Ann Smith", "ann@example.com")
        async with store.unit_of_work() as uow:  # type: ignore[attr-defined]
            await uow.append("customer-2", [BOB], expected_version=NO_STREAM)
        assert await view.get("customer-2") == Names("Bob Jones", "bob@example.com")
        assert keys_of(store).current("c-2") is not None


async def test_with_no_cache_window_pending_keys_are_looked_up_again(sql_url: str) -> None:
    async with connect(sql_url) as store:
        privacy = enable(store, cache_seconds=0)
        await privacy.ready()
        refuse = Refuse()
        refuse.streams.add("customer-1")
        await capability(store, SupportsTransactionHooks).transaction_hooks.add(refuse)
        with pytest.raises(eventfold.InvalidInput, match="refused by the test"):
            await store.append("customer-1", [ANN], expected_version=NO_STREAM)
        refuse.streams.clear()
        # The key written by the failed append is not stored: a new one is made.
        await store.append("customer-1", [ANN], expected_version=NO_STREAM)
        first = keys_of(store).current("c-1")
        assert first is not None
        # Seen stored now: the next append uses it and makes no other.
        await store.append("customer-1", [ANN], expected_version=1)
        assert keys_of(store).current("c-1") == first
        assert await read(store, "customer-1") == [ANN, ANN]
        await privacy.forget("c-1")
        await store.append("customer-1", [ANN], expected_version=2)
        events = await read(store, "customer-1")
        assert [e.name for e in events] == ["<erased>", "<erased>", "Ann Smith"]


async def test_a_store_opened_again_writes_new_keys_again(sqlite_url: str) -> None:
    store = connect(sqlite_url)
    async with store:
        privacy = enable(store)
        await privacy.ready()
        await store.append("customer-1", [ANN], expected_version=NO_STREAM)
    async with store:
        # Closing may drop the store's participants: then the first new key is stored
        # on its own, and the key writer joins again.
        await store.append("customer-2", [BOB], expected_version=NO_STREAM)
        assert keys_of(store).current("c-2") is not None
        await privacy.ready()
        hooks = capability(store, SupportsTransactionHooks).transaction_hooks
        assert eventfold.privacy.KEYS_PARTICIPANT in [p.name for p in hooks.participants]
        await store.append("customer-3", [CAROL], expected_version=NO_STREAM)
        assert keys_of(store).current("c-3") is not None
    async with connect(sqlite_url) as other:
        enable(other)
        assert await read(other, "customer-1") == [ANN]
        assert await read(other, "customer-2") == [BOB]
        assert await read(other, "customer-3") == [CAROL]


@pytest.mark.postgres
async def test_a_subject_forgotten_while_a_unit_seals_for_it_is_erased_at_once(
    postgres_url: str,
) -> None:
    """On PostgreSQL a new key is committed on its own before the unit's events (the
    store's keys do not join appends): a forget meanwhile deletes it, and the unit's event
    reads as erased from its commit on."""
    async with connect(postgres_url) as store:
        privacy = enable(store)
        await privacy.ready()
        async with store.unit_of_work() as uow:  # type: ignore[attr-defined]
            await uow.append("customer-1", [ANN], expected_version=NO_STREAM)
            await privacy.forget("c-1")
        assert await privacy.is_forgotten("c-1")
        [seen] = await read(store, "customer-1")
        assert (seen.name, seen.email, seen.age) == ("<erased>", "", None)


class CountingKeys:
    """A store's `SubjectKeys` that counts the round trips of `find`."""

    def __init__(self, keys: Any) -> None:
        self.keys = keys
        self.finds: list[int] = []

    def find(self, key_ids: Any) -> dict[bytes, bytes]:
        self.finds.append(len(key_ids))
        found: dict[bytes, bytes] = self.keys.find(key_ids)
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self.keys, name)


async def test_a_page_of_many_subjects_looks_their_keys_up_at_once(store: EventStore) -> None:
    enable(store)
    people = [
        CustomerRegistered(customer_id=f"c-{n}", name=f"Person {n}", email=f"{n}@x")
        for n in range(40)
    ]
    await store.append("customers-1", people, expected_version=NO_STREAM)
    # A reader with nothing cached (another process, or after its cache window).
    reader = enable(store, cache_seconds=0)
    counting = CountingKeys(reader._keys)
    ring: Any = codec_of(store).protector
    ring._keys = counting
    assert await read(store, "customers-1") == people
    assert counting.finds == [40]  # one round trip for the page, not one per subject

    counting.finds.clear()
    states: list[str] = []

    def evolve(state: tuple[str, ...], event: Event) -> tuple[str, ...]:
        return (*state, event.name) if isinstance(event, CustomerRegistered) else state

    decider: eventfold.Decider[Any, tuple[str, ...], Event] = eventfold.Decider(
        initial_state=(), evolve=evolve, decide=lambda command, state: []
    )
    states = list(await eventfold.CommandHandler(store, decider).load("customers-1"))
    assert states == [p.name for p in people]
    assert counting.finds == [40]


async def test_a_new_subject_right_after_a_unit_of_work_does_not_wait_for_its_lock(
    sqlite_url: str,
) -> None:
    """Until the key writer is registered, a new key is stored on a connection of its
    own; a unit's transaction that only waits for its deferred commit must not make that
    write wait out the busy timeout (the commit runs on the very loop the write blocks)."""

    class Boom(Exception):
        pass

    async def unit(fail: bool) -> None:
        async with store.unit_of_work() as uow:  # type: ignore[attr-defined]
            await uow.append("note-1", [Plain(n=1)], expected_version=eventfold.ANY)
            if fail:
                raise Boom

    async with connect(sqlite_url) as store:
        enable(store)  # the writer registers in the background, after what follows
        for n, fail in enumerate((True, False)):
            if fail:
                with pytest.raises(Boom):
                    await unit(fail)
            else:
                await unit(fail)
            person = CustomerRegistered(customer_id=f"u-{n}", name=f"P{n}", email="p@x")
            started = time.monotonic()
            await store.append(f"customer-u{n}", [person], expected_version=NO_STREAM)
            assert time.monotonic() - started < 5  # not the busy timeout (10 s)
            assert await read(store, f"customer-u{n}") == [person]
