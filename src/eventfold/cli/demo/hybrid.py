"""The demo's hybrid write: a table row, events and a message in one unit of work, then
the relay delivering them to NATS JetStream (or to the in-process sink, saying so)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..._events import Event
from ..._position import NO_STREAM, Position
from ...errors import ConfigurationError, SinkUnavailable, WrongExpectedVersion
from ...relay import OUTBOX, InProcessSink, Message, Relay, RelayOptions, Sink, header_value
from ...store import SupportsOutbox, SupportsUnitOfWork, backend_of
from .checks import check
from .orders import place

if TYPE_CHECKING:
    from .tour import Demo

__all__ = [
    "DESTINATION",
    "NATS_URL",
    "CustomerRegistered",
    "Delivery",
    "hybrid_write",
    "open_sink",
]

NATS_URL = "nats://127.0.0.1:4222"
"""Where the demo looks for NATS JetStream unless ``EVENTFOLD_NATS_URL`` says otherwise."""

DESTINATION = "demo"
"""The demo's relay destination (its checkpoint and outbox messages)."""

CONNECT_TIMEOUT = 1.0
"""Seconds the demo waits for a NATS server before it uses the in-process sink."""

SETTLE_TIMEOUT = 30.0
"""Seconds the demo waits for its own writes to become readable (and delivered)."""


class CustomerRegistered(Event):
    """A customer signed up (the event beside the customers table's row)."""

    __event_type__ = "demo.CustomerRegistered"
    customer_id: str
    name: str


@dataclass
class Delivery:
    """Where the demo's relay delivers, and how the messages are read back."""

    sink: Sink
    where: str
    """Said in the output: JetStream at a URL, or the in-process sink and why."""
    url: str | None = None
    """The NATS server's URL (None: the in-process sink)."""
    stream: str | None = None
    """The run's JetStream stream, deleted after the demo."""

    async def received(self) -> list[Message]:
        """What the bus holds, in arrival order."""
        if isinstance(self.sink, InProcessSink) or self.url is None or self.stream is None:
            return list(getattr(self.sink, "messages", []))
        import nats

        nc = await nats.connect(self.url, connect_timeout=CONNECT_TIMEOUT)
        try:
            js = nc.jetstream()
            info = await js.stream_info(self.stream)
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                m = await js.get_msg(self.stream, seq)
                headers = dict(m.headers or {})
                msg_id = headers.get("Nats-Msg-Id", "")
                out.append(Message(m.subject or "", m.data or b"", headers, msg_id, ""))
            return out
        finally:
            await nc.close()

    async def clean_up(self) -> None:
        """Delete the run's JetStream stream (nothing to do in-process)."""
        await self.sink.close()
        if self.stream is None or self.url is None:
            return
        import nats

        nc = await nats.connect(self.url, connect_timeout=CONNECT_TIMEOUT)
        try:
            await nc.jetstream().delete_stream(self.stream)
        finally:
            await nc.close()


def _nats_installed() -> bool:
    try:
        import nats  # noqa: F401
    except ImportError:
        return False
    return True


async def open_sink(run_id: str, prefix: str) -> Delivery:
    """JetStream at ``EVENTFOLD_NATS_URL`` (default `NATS_URL`) on a stream of this run,
    or the in-process sink when nats-py is missing or no server answers in time."""
    url = os.environ.get("EVENTFOLD_NATS_URL") or NATS_URL
    if not _nats_installed():
        return Delivery(
            InProcessSink(),
            "nats-py is not installed, so the relay delivers to the in-process sink "
            "(pip install 'eventfold[nats]' and run nats-server -js to see JetStream)",
        )
    from ...relay import NatsJetStreamSink

    unreachable = await _probe(url)
    if unreachable is not None:
        return _fallback(url, unreachable)
    stream = f"EVENTFOLD_DEMO_{run_id.upper()}"
    sink = NatsJetStreamSink(
        url, stream=stream, subjects=[f"{prefix}.>"], connect_timeout=CONNECT_TIMEOUT
    )
    try:
        await asyncio.wait_for(sink.open(), timeout=3 * CONNECT_TIMEOUT)
    except (SinkUnavailable, ConfigurationError, TimeoutError, OSError) as exc:
        await sink.close()
        return _fallback(url, str(exc) or type(exc).__name__)
    return Delivery(
        sink,
        f"NATS JetStream at {url}, stream {stream} (deleted after the demo)",
        url=url,
        stream=stream,
    )


def _fallback(url: str, reason: str) -> Delivery:
    return Delivery(
        InProcessSink(),
        f"no NATS JetStream reachable at {url} within {CONNECT_TIMEOUT:g} s ({reason}), "
        "so the relay delivers to the in-process sink (run nats-server -js, or set "
        "EVENTFOLD_NATS_URL)",
    )


async def _probe(url: str) -> str | None:
    """Why nothing listens at ``url`` (None: something does), without nats-py's
    reconnect attempts and their logged tracebacks."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    try:
        host, port = parts.hostname or "127.0.0.1", parts.port or 4222
    except ValueError as exc:
        return f"bad URL: {exc}"
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), timeout=CONNECT_TIMEOUT
        )
    except (OSError, TimeoutError) as exc:
        return str(exc) or type(exc).__name__
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


async def hybrid_write(demo: Demo) -> None:
    """(k) A customers row, events and a message in one unit of work; a conflicting unit
    leaves nothing; the relay delivers the events and the message."""
    demo.heading("11. A hybrid write: a table row, events and a message, then the relay")
    store = demo.store
    backend = backend_of(store)
    if (
        backend is None
        or backend.inline is None
        or not isinstance(store, SupportsUnitOfWork)
        or not isinstance(store, SupportsOutbox)
    ):
        demo.say(f"units of work with SQL run on SQLite and PostgreSQL, not {store.backend}")
        return
    store.declare_destination(DESTINATION)
    customer = f"ann-{demo.run_id}"
    customer_stream = f"customer-{demo.run_id}-ann"
    cart_stream = f"cart-{demo.run_id}-ann"

    async with store.unit_of_work(correlation_id=f"signup-{demo.run_id}") as uow:
        p = "?" if uow.paramstyle == "qmark" else "%s"
        await uow.execute(
            "CREATE TABLE IF NOT EXISTS demo_customers "
            "(id TEXT PRIMARY KEY, name TEXT NOT NULL, orders INTEGER NOT NULL)"
        )
        await uow.execute(
            f"INSERT INTO demo_customers (id, name, orders) VALUES ({p}, {p}, 1)",
            (customer, "Ann"),
        )
        await uow.append(
            customer_stream,
            [CustomerRegistered(customer_id=customer, name="Ann")],
            expected_version=NO_STREAM,
        )
        last = await uow.append(cart_stream, [place(cart_stream, 7)], expected_version=NO_STREAM)
        message_id = uow.publish(
            DESTINATION, {"welcome": customer, "cart": cart_stream}, key=customer_stream
        )
    # The message's own position, not the outbox's head: on PostgreSQL the head passes the
    # message only once every older write transaction in the cluster has finished.
    outbox_at = uow.outbox_position(message_id)
    demo.say(
        f"one unit of work committed: a demo_customers row {customer!r}, "
        f"{customer_stream} v1, {cart_stream} v1 and a message for {DESTINATION!r} "
        f"(id {message_id})"
    )

    # A second unit decides on a stale version: everything in it rolls back.
    bob, bob_stream = f"bob-{demo.run_id}", f"customer-{demo.run_id}-bob"
    try:
        async with store.unit_of_work() as uow:
            await uow.execute(
                f"INSERT INTO demo_customers (id, name, orders) VALUES ({p}, {p}, 0)",
                (bob, "Bob"),
            )
            await uow.append(
                bob_stream,
                [CustomerRegistered(customer_id=bob, name="Bob")],
                expected_version=NO_STREAM,
            )
            uow.publish(DESTINATION, {"welcome": bob}, key=bob_stream)
            await uow.append(  # Ann is at version 1 already: a conflict
                customer_stream,
                [CustomerRegistered(customer_id=customer, name="Ann again")],
                expected_version=NO_STREAM,
            )
    except WrongExpectedVersion as exc:
        demo.say(f"a second unit (row {bob!r}, an event, a message, then a stale append) failed:")
        demo.say(f"  WrongExpectedVersion: {exc}")
    else:
        check(False, "a unit appending at a stale version committed")
    async with store.unit_of_work() as uow:
        rows = await uow.execute(f"SELECT count(*) FROM demo_customers WHERE id = {p}", (bob,))
    # Stream versions and the outbox after Ann's message, not the heads: other writers
    # move those, and on PostgreSQL they pass Ann's unit whenever the cluster's older
    # transactions finish, which may be now.
    versions = (await store.stream_version(bob_stream), await store.stream_version(customer_stream))
    messages = await store.read_outbox(outbox_at, 100, destination=DESTINATION)
    bobs = [m for m in messages if m.key == bob_stream]
    demo.say(
        f"  rolled back: {rows[0][0]} rows for {bob!r}, {versions[0]} events, "
        f"{'no new message' if not bobs else 'new messages!'} (log and outbox hold nothing "
        f"of it; {customer_stream} is still at version {versions[1]})"
    )
    check(rows[0][0] == 0 and versions == (0, 1) and not bobs, "a failed unit of work left traces")

    await _relay(demo, last.position, outbox_at, {str(message_id)})


async def _relay(demo: Demo, events_at: Position, outbox_at: Position, ids: set[str]) -> None:
    prefix = f"eventfold_demo_{demo.run_id}"
    delivery = await open_sink(demo.run_id, prefix)
    demo.say(f"relay: {delivery.where}")
    options = RelayOptions(poll_interval=0.05, checkpoint_interval=0.02, max_backoff=1.0)
    relay = Relay(
        demo.store,
        delivery.sink,
        destination=DESTINATION,
        subject_prefix=prefix,
        categories=["customer", "cart"],
        options=options,
    )
    try:
        async with relay:
            try:
                await relay.wait_for(events_at, timeout=SETTLE_TIMEOUT)
                await relay.wait_for(outbox_at, partition=OUTBOX, timeout=SETTLE_TIMEOUT)
            except TimeoutError as exc:
                check(False, f"the relay did not deliver: {exc}")
        received = await delivery.received()
    finally:
        await delivery.clean_up()
    ours = [m for m in received if demo.run_id in (_stream_of(m) or m.payload.decode())]
    for m in ours:
        demo.say(f"  {m.subject:<48} Nats-Msg-Id {m.headers.get('Nats-Msg-Id', m.message_id)}")
    got = {m.headers.get("Nats-Msg-Id", m.message_id) for m in ours}
    events = [m for m in ours if _stream_of(m) is not None]
    check(
        len(events) == 2 and ids <= got and len(ours) == 3,
        f"the relay delivered {[m.subject for m in ours]}, not 2 events and the message",
    )
    demo.say(
        f"delivered {len(events)} events and {len(ours) - len(events)} message; each "
        "Nats-Msg-Id is the event's or message's id, so JetStream drops a copy re-sent "
        "within its duplicate window"
    )


def _stream_of(m: Message) -> str | None:
    value: Any = header_value(m.headers, "Eventfold-Stream-Id")
    return value if isinstance(value, str) else None
