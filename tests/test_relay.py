"""The relay with the in-process sink: order, checkpoint, parking, outages, outbox, CLI."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest

from eventfold import ANY, EventStore, InvalidInput, NewEvent, Position, connect
from eventfold.projections import MemoryLeases
from eventfold.relay import (
    EVENTS,
    OUTBOX,
    InProcessSink,
    Message,
    Relay,
    RelayOptions,
    header_value,
    relay_parked,
    relay_status,
    replay_parked,
    subject_token,
    token_text,
)
from eventfold.store import OutboxMessage
from eventfold.testing.conformance import settle

FAST = RelayOptions(
    checkpoint_interval=0.01,
    poll_interval=0.02,
    retry_delay=0.01,
    max_backoff=0.05,
    lease_retry=0.05,
    parked_refresh=0.05,
)


async def until(check: Callable[[], Any], timeout: float = 15.0) -> None:  # noqa: ASYNC109
    """Wait until ``check()`` (sync or async) is true, or fail after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[EventStore]:
    async with connect(store_url) as s:
        yield s


async def append(store: EventStore, stream: str, n: int, type: str = "Happened") -> Position:
    result = await store.append(
        stream,
        [NewEvent({"i": i, "stream": stream}, type=type) for i in range(n)],
        expected_version=ANY,
    )
    await settle(store, result.position)
    return result.position


def in_stream_order(sink: InProcessSink) -> dict[str, list[int]]:
    """Each stream's delivered event versions, in arrival order."""
    return {
        key: [int(m.headers["Eventfold-Stream-Version"]) for m in msgs]
        for key, msgs in sink.by_key().items()
    }


def test_subject_tokens_escape_what_nats_forbids_and_round_trip() -> None:
    for text in ["order", "a b", "a.b", "*", ">", "tab\there", "", "%", "ünï", "x-y_z"]:
        token = subject_token(text)
        assert token
        assert not any(c in token for c in " .*>\t\r\n")
        assert token_text(token) == text
    assert subject_token("order") == "order"
    assert subject_token("a.b") != subject_token("a%2Eb")
    with pytest.raises(InvalidInput, match="not a token"):
        token_text("a.b")


async def test_delivers_every_event_in_stream_order_with_headers(store: EventStore) -> None:
    sink = InProcessSink()
    for k in range(5):
        await append(store, f"order-{k}", 20)
    head = await append(store, "order-0", 5)
    async with Relay(store, sink, destination="orders", options=FAST) as relay:
        await relay.wait_for(head)
    assert len(sink.messages) == 105
    versions = in_stream_order(sink)
    assert versions["order-0"] == list(range(1, 26))
    assert all(versions[f"order-{k}"] == list(range(1, 21)) for k in range(1, 5))
    first = sink.by_key()["order-1"][0]
    assert first.subject == "orders.order.Happened"
    assert first.headers["Eventfold-Stream-Id"] == "order-1"
    assert first.headers["Eventfold-Event-Type"] == "Happened"
    assert Position.parse(first.headers["Eventfold-Position"]) <= head
    assert msgspec.json.decode(first.payload) == {"i": 0, "stream": "order-1"}
    ids = {m.message_id for m in sink.messages}
    assert len(ids) == 105


async def test_metadata_becomes_headers_and_odd_categories_map_to_tokens(
    store: EventStore,
) -> None:
    sink = InProcessSink()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    event = NewEvent(
        {"x": 1},
        type="Odd Type.v1",
        correlation_id="corr-1",
        causation_id="cmd-7",
        metadata={"traceparent": traceparent},
    )
    result = await store.append("a b.c*>-1", [event], expected_version=ANY)
    await settle(store, result.position)
    async with Relay(store, sink, destination="odd", options=FAST) as relay:
        await relay.wait_for(result.position)
    (message,) = sink.messages
    assert message.subject == "odd.a%20b%2Ec%2A%3E.Odd%20Type%2Ev1"
    _, category, type_token = message.subject.split(".")
    assert (token_text(category), token_text(type_token)) == ("a b.c*>", "Odd Type.v1")
    assert message.headers["Eventfold-Stream-Id"] == "a b.c*>-1"
    assert message.headers["traceparent"] == traceparent
    assert message.headers["Eventfold-Correlation-Id"] == "corr-1"
    assert message.headers["Eventfold-Causation-Id"] == "cmd-7"


async def test_header_values_that_are_not_ascii_are_encoded_and_named(
    store: EventStore,
) -> None:
    sink = InProcessSink()
    head = await append(store, "ünï code-1", 1)
    async with Relay(store, sink, destination="odd", options=FAST) as relay:
        await relay.wait_for(head)
    (message,) = sink.messages
    assert message.headers["Eventfold-Stream-Id"] == "%C3%BCn%C3%AF%20code-1"
    assert message.headers["Eventfold-Percent-Encoded"] == "Eventfold-Stream-Id"
    assert header_value(message.headers, "Eventfold-Stream-Id") == "ünï code-1"
    assert header_value(message.headers, "Eventfold-Event-Type") == "Happened"
    assert message.subject == "odd.%C3%BCn%C3%AF%20code.Happened"


async def test_reading_waits_for_acks_beyond_max_pending(store: EventStore) -> None:
    sink = InProcessSink()
    for k in range(10):
        await append(store, f"order-{k}", 10)
    head = await store.head()
    options = RelayOptions(
        max_pending=4, max_in_flight=2, batch_size=3, checkpoint_interval=0.01, poll_interval=0.02
    )
    async with Relay(store, sink, destination="orders", options=options) as relay:
        await relay.wait_for(head)
    assert in_stream_order(sink) == {f"order-{k}": list(range(1, 11)) for k in range(10)}


async def test_filters_by_category_and_type(store: EventStore) -> None:
    sink = InProcessSink()
    await append(store, "order-1", 3, "Placed")
    await append(store, "order-2", 2, "Shipped")
    head = await append(store, "invoice-1", 4, "Placed")
    relay = Relay(store, sink, destination="orders", categories=["order"], types=["Placed"])
    relay = Relay(
        store, sink, destination="orders", categories=["order"], types=["Placed"], options=FAST
    )
    async with relay:
        await relay.wait_for(head)
    assert [m.key for m in sink.messages] == ["order-1"] * 3


class HoldingSink(InProcessSink):
    """Leaves the acks of one stream's messages pending until released."""

    def __init__(self, held: str) -> None:
        super().__init__()
        self.held = held
        self.waiting: list[asyncio.Future[None]] = []

    async def send(self, message: Message) -> Any:
        if message.key == self.held and not self.released:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.waiting.append(future)
            self.messages.append(message)
            return future
        return await super().send(message)

    released = False

    def release(self) -> None:
        self.released = True
        for f in self.waiting:
            f.set_result(None)


async def test_checkpoint_moves_only_over_the_acknowledged_prefix(store: EventStore) -> None:
    sink = HoldingSink("slow-1")
    await append(store, "fast-1", 3)
    held_at = await append(store, "slow-1", 1)
    head = await append(store, "fast-2", 3)
    async with Relay(store, sink, destination="orders", options=FAST) as relay:
        await until(lambda: len(sink.messages) == 7)
        await asyncio.sleep(0.1)  # several checkpoint intervals: it must not pass slow-1
        checkpoint = await relay.checkpoint()
        assert checkpoint < held_at
        status = await relay_status(relay)
        assert status.lag_events == 4
        sink.release()
        await relay.wait_for(head)


async def test_restart_resumes_from_the_checkpoint_without_loss(store: EventStore) -> None:
    sink = InProcessSink()
    first = await append(store, "order-1", 10)
    async with Relay(store, sink, destination="orders", options=FAST) as relay:
        await relay.wait_for(first)
    await append(store, "order-1", 5)
    head = await append(store, "order-2", 5)
    # The memory backend's read models live in the relay's object: hand them over.
    again = Relay(store, sink, destination="orders", options=FAST, models=relay.models)
    async with again:
        await again.wait_for(head)
    versions = in_stream_order(sink)
    assert versions == {"order-1": list(range(1, 16)), "order-2": list(range(1, 6))}


def rejecting(stream: str) -> Callable[[Message], str | None]:
    return lambda m: "too large for the stream" if m.key == stream else None


async def test_a_poison_stream_parks_alone_and_replays_in_order(store: EventStore) -> None:
    sink = InProcessSink(reject=rejecting("bad-1"))
    await append(store, "good-1", 3)
    await append(store, "bad-1", 2)
    await append(store, "good-2", 3)
    head = await append(store, "bad-1", 2)
    async with Relay(store, sink, destination="orders", options=FAST) as relay:
        await relay.wait_for(head)
        assert sorted(in_stream_order(sink)) == ["good-1", "good-2"]
        parked = await relay_parked(relay)
        assert [(p.stream_id, p.position <= head) for p in parked] == [("bad-1", True)] * 4
        assert [p.attempts for p in parked] == [FAST.retries + 1, 0, 0, 0]
        assert "too large" in parked[0].error
        status = await relay_status(relay)
        assert (status.parked, status.parked_streams, status.lag_events) == (4, 1, 0)
        assert status.oldest_parked_seconds is not None
        # Later events of the parked stream are parked too, in order, behind it.
        later = await append(store, "bad-1", 1)
        await relay.wait_for(later)
        assert len(await relay_parked(relay)) == 5
        sink.reject = None
        result = await replay_parked(relay, stream_id="bad-1")
        assert len(result.replayed) == 5
        assert not result.failed
        assert await relay_parked(relay) == []
        after = await append(store, "bad-1", 1)
        await relay.wait_for(after)
        await until(lambda: len(sink.by_key().get("bad-1", [])) == 6)
    assert in_stream_order(sink)["bad-1"] == list(range(1, 7))


async def test_replay_that_fails_again_keeps_the_stream_parked(store: EventStore) -> None:
    sink = InProcessSink(reject=rejecting("bad-1"))
    head = await append(store, "bad-1", 3)
    relay = Relay(store, sink, destination="orders", options=FAST)
    async with relay:
        await relay.wait_for(head)
    result = await replay_parked(relay)
    assert result.replayed == []
    assert len(result.failed) == 1
    parked = await relay_parked(relay)
    assert len(parked) == 3
    assert parked[0].attempts == FAST.retries + 2
    with pytest.raises(InvalidInput, match="no parked message of stream 'nope'"):
        await replay_parked(relay, stream_id="nope")


async def test_sink_down_waits_with_backoff_and_loses_nothing(store: EventStore) -> None:
    sink = InProcessSink(down=True)
    head = await append(store, "order-1", 5)
    async with Relay(store, sink, destination="orders", options=FAST) as relay:
        await until(lambda: relay.error is not None)
        assert "in-process sink is down" in (relay.error or "")
        status = await relay_status(relay)
        assert status.lag_events == 5
        assert status.lag_seconds >= 0
        assert "down" in (status.last_error or "")
        attempts = sink.attempts
        await asyncio.sleep(0.2)
        assert sink.attempts - attempts < 20, "it backs off instead of spinning"
        sink.down = False
        await relay.wait_for(head)
        await until(lambda: relay.error is None)
        # The error recorded for other processes is cleared too.
        await until(lambda: _stored_error(relay, None))
    assert in_stream_order(sink) == {"order-1": [1, 2, 3, 4, 5]}


async def _stored_error(relay: Relay, expected: str | None) -> bool:
    return (await relay_status(relay)).last_error == expected


async def test_a_sink_that_never_acknowledges_times_out_and_is_retried(
    store: EventStore,
) -> None:
    sink = InProcessSink(hang=True, ack_timeout=0.5)
    head = await append(store, "order-1", 2)
    async with Relay(store, sink, destination="orders", options=FAST) as relay:
        await until(lambda: relay.error is not None)
        assert "did not acknowledge message" in (relay.error or "")
        assert "within 0.5 s" in (relay.error or "")
        assert await relay.checkpoint() < head
        sink.hang = False
        await relay.wait_for(head)
    assert in_stream_order(sink)["order-1"][-2:] == [1, 2]


async def test_one_relay_per_destination_and_the_standby_takes_over(store: EventStore) -> None:
    leases = MemoryLeases()
    models_sink_a, models_sink_b = InProcessSink(), InProcessSink()
    a = Relay(store, models_sink_a, destination="orders", options=FAST, leases=leases)
    b = Relay(
        store, models_sink_b, destination="orders", options=FAST, leases=leases, models=a.models
    )
    head = await append(store, "order-1", 3)
    async with a, b:
        await a.wait_for(head)
        await until(lambda: b.state == "standby")
        await a.stop()
        more = await append(store, "order-1", 2)
        await b.wait_for(more)
    assert len(models_sink_a.messages) == 3
    assert [int(m.headers["Eventfold-Stream-Version"]) for m in models_sink_b.messages] == [4, 5]


def test_bad_destination_and_prefix_are_refused(store_url: str) -> None:
    async def go() -> None:
        async with connect(store_url) as s:
            with pytest.raises(InvalidInput, match="destination 'Bad Name'"):
                Relay(s, InProcessSink(), destination="Bad Name")
            with pytest.raises(InvalidInput, match="not a NATS subject"):
                Relay(s, InProcessSink(), destination="ok", subject_prefix="a b.>")
            with pytest.raises(InvalidInput, match="not a Sink"):
                Relay(s, object(), destination="ok")  # type: ignore[arg-type]
            with pytest.raises(InvalidInput, match="max_in_flight"):
                RelayOptions(max_in_flight=0)

    asyncio.run(go())


class FakeOutbox:
    """read_outbox / outbox_head over a list, added to a real store."""

    def __init__(self) -> None:
        self.messages: list[OutboxMessage] = []

    def add(self, destination: str, key: str | None, payload: bytes) -> OutboxMessage:
        m = OutboxMessage(
            position=Position(0, len(self.messages) + 1),
            message_id=uuid.uuid4().bytes,
            destination=destination,
            key=key,
            payload=payload,
            headers={"kind": "test"},
            recorded_us=1,
        )
        self.messages.append(m)
        return m

    async def read_outbox(
        self, after: Position, limit: int, *, destination: str | None = None
    ) -> list[OutboxMessage]:
        found = [
            m for m in self.messages if m.position > after and destination in (None, m.destination)
        ]
        return found[:limit]

    async def outbox_head(self, destination: str | None = None) -> Position:
        found = [m for m in self.messages if destination in (None, m.destination)]
        return found[-1].position if found else Position(0, 0)


def with_outbox(store: EventStore) -> FakeOutbox:
    fake = FakeOutbox()
    store.read_outbox = fake.read_outbox  # type: ignore[attr-defined]
    store.outbox_head = fake.outbox_head  # type: ignore[attr-defined]
    return fake


async def test_outbox_messages_of_the_destination_are_delivered_per_key(
    store: EventStore,
) -> None:
    fake = with_outbox(store)
    sink = InProcessSink(reject=lambda m: "refused" if m.key == "bad" else None)
    for i in range(6):
        fake.add("billing", f"k{i % 2}", b'{"n": %d}' % i)
    fake.add("other", "k0", b"{}")
    fake.add("billing", "bad", b"{}")
    last = fake.add("billing", None, b"{}")
    head = await append(store, "order-1", 2)
    async with Relay(store, sink, destination="billing", options=FAST) as relay:
        assert relay.has_outbox
        await relay.wait_for(last.position, partition=OUTBOX)
        await relay.wait_for(head, partition=EVENTS)
        status = await relay_status(relay)
        assert status.outbox_lag == 0
        assert status.parked == 1
    outbox = [m for m in sink.messages if m.subject == "billing.outbox"]
    assert [m.payload for m in outbox if m.key == "k0"] == [b'{"n": 0}', b'{"n": 2}', b'{"n": 4}']
    assert [m.payload for m in outbox if m.key == "k1"] == [b'{"n": 1}', b'{"n": 3}', b'{"n": 5}']
    assert all(m.headers["Eventfold-Destination"] == "billing" for m in outbox)
    assert {m.message_id for m in outbox} == {
        str(uuid.UUID(bytes=m.message_id))
        for m in fake.messages
        if m.destination == "billing" and m.key != "bad"
    }
    assert len([m for m in sink.messages if m.key == "order-1"]) == 2


async def test_without_the_outbox_port_only_events_are_relayed(store: EventStore) -> None:
    relay = Relay(store, InProcessSink(), destination="orders", outbox=False)
    assert not relay.has_outbox
    assert (await relay_status(relay)).outbox_lag is None


async def test_a_store_without_the_outbox_port_relays_its_events(tmp_path: Any) -> None:
    from dict_backend import DictStore
    from eventfold.store.kit import Codec

    bare = DictStore(Codec())
    await bare.open()
    relay = Relay(bare, InProcessSink(), destination="orders", leases=MemoryLeases())
    assert not relay.has_outbox


async def test_units_of_work_reach_the_sink_in_key_order_and_delivered_ones_are_pruned(
    store: EventStore,
) -> None:
    """The store's own outbox end to end: messages committed by units of work are
    delivered per key, parked ones stay stored, and the rest are deleted once delivered."""
    from eventfold.store import SupportsOutbox, SupportsUnitOfWork, capability

    units = capability(store, SupportsUnitOfWork)
    outbox = capability(store, SupportsOutbox)
    units.declare_destination("billing")
    for i in range(6):
        async with units.unit_of_work() as uow:
            await uow.append(f"invoice-{i}", [NewEvent({"i": i}, type="Invoiced")],
                             expected_version=ANY)  # fmt: skip
            uow.publish("billing", {"n": i}, key=f"k{i % 2}")
            if i == 5:
                uow.publish("billing", {"n": i}, key="bad")
    sink = InProcessSink(reject=lambda m: "refused" if m.key == "bad" else None)
    options = dataclasses.replace(FAST, prune_interval=0.01)
    async with Relay(store, sink, destination="billing", options=options) as relay:

        async def parked() -> list[str]:
            return [p.stream_id for p in await relay_parked(relay)]

        async def left() -> list[str | None]:
            return [m.key for m in await outbox.read_outbox(Position(0, 0), 100)]

        # The last unit's messages are delivered (or parked) once "bad" is parked: it
        # comes last in the unit that published it.
        await until(lambda: _is(parked(), ["bad"]))
        await until(lambda: len(sink.messages) >= 6 + 6)  # six events, six messages
        delivered = [m for m in sink.messages if m.subject == "billing.outbox"]
        numbers: dict[str | None, list[int]] = {m.key: [] for m in delivered}
        for m in delivered:
            numbers[m.key].append(msgspec.json.decode(m.payload)["n"])
        assert (numbers["k0"], numbers["k1"]) == ([0, 2, 4], [1, 3, 5])
        # Only the parked message is left once a checkpoint has pruned the rest.
        await until(lambda: _is(left(), ["bad"]))
        sink.reject = None
        result = await replay_parked(relay)
        assert [p.stream_id for p in result.replayed] == ["bad"]
    assert [m.key for m in sink.messages if m.subject == "billing.outbox"][-1] == "bad"


async def _is(value: Any, expected: Any) -> bool:
    return bool(await value == expected)
