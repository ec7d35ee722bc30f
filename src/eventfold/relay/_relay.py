"""`Relay`: the global log (and the store's outbox) delivered to a bus, in order per stream.

A relay is a checkpointed subscription: it reads the log after its checkpoint (no second
table holds the events), sends each matching event through its `Sink`, and moves the
checkpoint only over a contiguous prefix of the log whose messages the bus acknowledged
(or that were parked). The checkpoint lives in the store's database, in the read-model
store's checkpoint table, written by compare-and-set like a projection's; the lease
``relay:<destination>`` keeps one relay per destination active across processes (on
PostgreSQL an advisory lock: a standby takes over when the holder dies).

Order: the messages of one stream (one outbox key) go out one at a time, each after the
previous one's ack, so the bus stores them in log order whatever fails; messages of
different streams are sent in parallel, up to ``max_in_flight``. A crash re-sends what
was acknowledged after the last checkpoint: at-least-once delivery, and the message id
(``Nats-Msg-Id``) lets JetStream drop such copies inside its duplicate window.

A message the bus rejects (`SinkRejected`) is retried ``retries`` times with backoff,
then parked with the later events of its stream (kept in order behind it); every other
stream keeps flowing and the checkpoint keeps moving. A bus that is down
(`SinkUnavailable`) is waited for with backoff; nothing is skipped, and the lag shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, unquote

import msgspec

from .._events import Event, RecordedEvent
from .._personal import redacted
from .._position import MAX_POSITION_PART, START, Position
from .._tracing import process_span
from ..errors import (
    CheckpointConflict,
    EventfoldError,
    InvalidInput,
    SinkRejected,
    SinkUnavailable,
)
from ..projections import (
    Leases,
    MemoryLeases,
    ParkedEvent,
    PartitionState,
    ProjectionBase,
    ReadModelStore,
    Signal,
    Subscription,
    notifier_for,
    read_models_for,
)
from ..store import EventStore, OutboxMessage, SupportsOutbox, SupportsUnitOfWork, backend_of
from ._sink import Message, Sink
from ._subjects import check_prefix, subject_token

__all__ = ["EVENTS", "OUTBOX", "Relay", "RelayOptions", "header_value"]

log = logging.getLogger("eventfold.relay")

EVENTS = 0
"""The checkpoint partition of the events the relay delivers."""
OUTBOX = 1
"""The checkpoint partition of the outbox messages the relay delivers."""

_DESTINATION = re.compile(r"[a-z][a-z0-9_]{0,47}")

HEADER_STREAM_ID = "Eventfold-Stream-Id"
HEADER_STREAM_VERSION = "Eventfold-Stream-Version"
HEADER_POSITION = "Eventfold-Position"
HEADER_EVENT_TYPE = "Eventfold-Event-Type"
HEADER_RECORDED_US = "Eventfold-Recorded-Us"
HEADER_CORRELATION_ID = "Eventfold-Correlation-Id"
HEADER_CAUSATION_ID = "Eventfold-Causation-Id"
HEADER_DESTINATION = "Eventfold-Destination"
HEADER_KEY = "Eventfold-Key"


@dataclass(frozen=True)
class RelayOptions:
    """How a relay runs."""

    batch_size: int = 500
    """Events read from the log per page."""
    max_in_flight: int = 2000
    """Messages sent and not yet acknowledged, over all streams."""
    max_pending: int = 20_000
    """Messages read and not yet acknowledged: the relay stops reading beyond it."""
    retries: int = 3
    """How often a rejected message is sent again before its stream is parked."""
    retry_delay: float = 0.1
    """Seconds before the first retry of a rejected message (doubling after)."""
    max_backoff: float = 30.0
    """Longest wait between attempts while the sink is unavailable."""
    ack_timeout: float | None = None
    """Seconds to wait for one ack before the send counts as unavailable; None leaves it
    to the sink (`NatsJetStreamSink` and `InProcessSink` have their own ``ack_timeout``).
    Set it for a sink that has none."""
    checkpoint_interval: float = 0.05
    """Seconds between checkpoint writes while messages are acknowledged."""
    poll_interval: float = 0.25
    """Seconds between polls at the tail when no wake-up comes."""
    lease_retry: float = 1.0
    """Seconds between attempts to take the lease another relay holds."""
    parked_refresh: float = 1.0
    """Seconds between reads of the parked list (a replay elsewhere unparks streams)."""
    stop_timeout: float = 5.0
    prune_interval: float = 5.0
    """Seconds between deletions of the delivered outbox messages (the ones the outbox
    checkpoint has passed, parked ones excepted)."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_in_flight", "max_pending"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(f"RelayOptions.{name} must be an int >= 1, got {value!r}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise InvalidInput(f"RelayOptions.retries must be an int >= 0, got {self.retries!r}")
        if self.ack_timeout is not None and not self.ack_timeout > 0:
            raise InvalidInput("RelayOptions.ack_timeout must be None or > 0 seconds")
        for name in (
            "retry_delay",
            "max_backoff",
            "checkpoint_interval",
            "poll_interval",
            "lease_retry",
            "parked_refresh",
            "stop_timeout",
            "prune_interval",
        ):
            if not getattr(self, name) > 0:
                raise InvalidInput(f"RelayOptions.{name} must be > 0 seconds")


HEADER_ENCODED = "Eventfold-Percent-Encoded"
"""Lists (comma-separated) the headers whose values were percent-encoded (UTF-8)."""


def _ascii_headers(headers: dict[str, str]) -> None:
    """Percent-encode header values that are not printable ASCII (NATS headers are
    HTTP-like; consumers' parsers mangle other bytes), naming them in `HEADER_ENCODED`."""
    encoded = []
    for name, value in headers.items():
        if not (value.isascii() and value.isprintable()):
            headers[name] = quote(value, safe="")
            encoded.append(name)
    if encoded:
        headers[HEADER_ENCODED] = ",".join(encoded)


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """A header of a relayed message as the relay was given it (undoing its encoding)."""
    value = headers.get(name)
    if value is None:
        return None
    value = str(value)
    if name in str(headers.get(HEADER_ENCODED, "")).split(","):
        return unquote(value)
    return value


class _Definition(ProjectionBase):
    """The relay as the projections' status API sees it: its filters and checkpoint."""

    def __init__(self, name: str, categories: Sequence[str] | None, types: tuple[str, ...] | None):
        super().__init__(name, categories=categories)
        self._types = types

    @property
    def event_types(self) -> tuple[str, ...]:
        # None (every type) is what read_all takes for no filter.
        return self._types  # type: ignore[return-value]


class _LeaseLost(Exception):
    """The relay's lease went away."""


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error of a task group that is not the cancellation of a sibling."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]


@dataclass(slots=True)
class _Entry:
    position: Position
    key: str
    message: Message | None
    event_id: str
    type: str
    error: str | None = None
    """Why no message could be built (an event that does not decode)."""
    done: bool = False


@dataclass
class _Lane:
    queue: deque[_Entry] = field(default_factory=deque)


class _Breaker:
    """Shared by every lane: when the sink is down, all wait, and one probe reopens it."""

    def __init__(self, relay: Relay, sink: Sink) -> None:
        self.relay = relay
        self.sink = sink
        self.up = asyncio.Event()
        self.up.set()
        self.failures = 0
        self._probe: asyncio.Task[None] | None = None

    def ok(self) -> None:
        if self.failures:
            self.failures = 0
            self.relay._set_error(None)

    def trip(self, reason: str) -> None:
        if not self.up.is_set():
            return
        self.failures += 1
        self.up.clear()
        self.relay._set_error(reason)
        log.warning("relay %s: %s; backing off", self.relay.destination, reason)
        self._probe = asyncio.get_running_loop().create_task(self._reopen())

    async def _reopen(self) -> None:
        options = self.relay.options
        while True:
            await asyncio.sleep(min(0.05 * 2 ** min(self.failures, 20), options.max_backoff))
            try:
                await self.sink.open()
            except SinkUnavailable as exc:
                self.failures += 1
                self.relay._set_error(exc.reason)
                continue
            except Exception as exc:  # a sink's own failure: say so, keep probing
                self.failures += 1
                self.relay._set_error(f"{type(exc).__name__}: {exc}")
                continue
            self.up.set()
            return

    def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()


class _Pump:
    """One source (the log, or the outbox) delivered through the sink under one lease."""

    def __init__(
        self,
        relay: Relay,
        partition: int,
        lease: Any,
        breaker: _Breaker,
        source: Callable[[Position], AsyncIterator[tuple[list[_Entry], Position]]],
    ) -> None:
        self.relay = relay
        self.partition = partition
        self.park_name = relay.parked_name(partition)
        self.lease = lease
        self.breaker = breaker
        self.source = source
        self.entries: deque[_Entry] = deque()
        self.lanes: dict[str, _Lane] = {}
        self.checkpoint: Position | None = None
        self.sem = asyncio.Semaphore(relay.options.max_in_flight)
        self.space = asyncio.Event()
        self.space.set()
        self.parked_keys: set[str] = set()
        self._local_parks: dict[str, float] = {}
        self.park_lock = asyncio.Lock()
        self._next_prune = 0.0
        self._pruned: Position | None = None
        self._kept = False

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        relay = self.relay
        rows = await relay.models.checkpoints(relay.name, 1)
        row = next((c for c in rows if c.partition == self.partition), None)
        self.checkpoint = None if row is None else row.position
        await self.refresh_parked()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._checkpointer())
                await self._read(tg)
        except BaseExceptionGroup as group:
            raise _first(group) from None
        finally:
            with contextlib.suppress(Exception):
                await self.commit()

    async def _read(self, tg: asyncio.TaskGroup) -> None:
        options = self.relay.options
        refreshed = time.monotonic()
        async for entries, through in self.source(self.checkpoint or START):
            for entry in entries:
                self.entries.append(entry)
                lane = self.lanes.get(entry.key)
                if lane is None:
                    lane = self.lanes[entry.key] = _Lane()
                    lane.queue.append(entry)
                    tg.create_task(self._run_lane(entry.key, lane))
                else:
                    lane.queue.append(entry)
            self.entries.append(_Entry(through, "", None, "", "", done=True))
            while len(self.entries) > options.max_pending:
                self.space.clear()
                await self.space.wait()
            if time.monotonic() - refreshed > options.parked_refresh:
                await self.refresh_parked()
                refreshed = time.monotonic()

    async def _run_lane(self, key: str, lane: _Lane) -> None:
        try:
            while lane.queue:
                entry = lane.queue[0]
                await self._deliver(entry)
                lane.queue.popleft()
                entry.done = True
        finally:
            if self.lanes.get(key) is lane:
                del self.lanes[key]

    async def _deliver(self, entry: _Entry) -> None:
        options = self.relay.options
        attempt = 0
        while True:
            if entry.key in self.parked_keys:
                async with self.park_lock:  # a replay may be clearing it: wait and look again
                    if entry.key in self.parked_keys:
                        await self.park(entry, "an earlier message of its stream is parked", 0)
                        return
            if entry.message is None:
                await self.park(entry, entry.error or "it cannot be read", 1)
                return
            if not self.breaker.up.is_set():
                await self.breaker.up.wait()
            try:
                async with self.sem:
                    with process_span(
                        f"send {self.relay.destination}",
                        (entry.message.headers,),
                        {
                            "messaging.system": self.relay.sink.name,
                            "messaging.operation.type": "send",
                            "messaging.operation.name": "send",
                            "messaging.destination.name": entry.message.subject,
                            "messaging.message.id": entry.message.message_id,
                        },
                        producer=True,
                    ):
                        ack = await self.relay.sink.send(entry.message)
                    if options.ack_timeout is None:
                        await ack
                    else:
                        async with asyncio.timeout(options.ack_timeout):
                            await ack
                if self.breaker.failures:
                    self.breaker.ok()
                return
            except SinkRejected as exc:
                attempt += 1
                if attempt > options.retries:
                    async with self.park_lock:
                        await self.park(entry, str(exc.reason), attempt)
                    return
                await asyncio.sleep(options.retry_delay * 2 ** (attempt - 1))
            except SinkUnavailable as exc:
                self.breaker.trip(exc.reason)
            except TimeoutError:
                self.breaker.trip(
                    f"the {self.relay.sink.name} sink did not acknowledge within "
                    f"{options.ack_timeout} s"
                )

    # -- parking -----------------------------------------------------------------------

    async def park(self, entry: _Entry, error: str, attempts: int) -> None:
        relay = self.relay
        if not self.lease.held():
            raise _LeaseLost(f"lease {relay.lease_key} was lost")
        parked = ParkedEvent(
            name=self.park_name,
            version=1,
            partition=self.partition,
            position=entry.position,
            stream_id=entry.key,
            event_id=entry.event_id,
            type=entry.type,
            error=error,
            attempts=attempts,
            parked_us=time.time_ns() // 1000,
        )
        async with relay.models.transaction() as tx:
            await tx.park(parked)
        self.parked_keys.add(entry.key)
        self._local_parks[entry.key] = time.monotonic()
        if attempts:
            log.warning(
                "relay %s: parked %s at %s (stream %r): %s",
                relay.destination,
                entry.type,
                entry.position,
                entry.key,
                error,
            )

    async def refresh_parked(self) -> None:
        started = time.monotonic()
        rows = await self.relay.models.parked(self.park_name, 1)
        stored = {p.stream_id for p in rows}
        async with self.park_lock:
            recent = {k for k, t in self._local_parks.items() if t >= started}
            self._local_parks = {k: t for k, t in self._local_parks.items() if k in recent}
            self.parked_keys = stored | recent

    # -- the checkpoint ----------------------------------------------------------------

    async def _checkpointer(self) -> None:
        while True:
            await asyncio.sleep(self.relay.options.checkpoint_interval)
            await self.commit()
            await self.prune()

    async def commit(self) -> None:
        """Move the checkpoint over the acknowledged prefix (compare-and-set)."""
        entries = self.entries
        through: Position | None = None
        while entries and entries[0].done:
            through = entries.popleft().position
        if len(entries) <= self.relay.options.max_pending // 2:
            self.space.set()
        if through is None or (self.checkpoint is not None and through <= self.checkpoint):
            return
        relay = self.relay
        if not self.lease.held():
            raise _LeaseLost(f"lease {relay.lease_key} was lost")
        async with relay.models.transaction() as tx:
            await tx.set_checkpoint(
                relay.name, 1, self.partition, through, expected=self.checkpoint
            )
        self.checkpoint = through
        relay.progressed.notify()

    async def prune(self) -> None:
        """Delete the outbox messages the checkpoint has passed, keeping every parked one
        (a replay reads it again from the outbox); at most every ``prune_interval``."""
        relay = self.relay
        store = relay.store
        through = self.checkpoint
        if (
            self.partition != OUTBOX
            or through is None
            or (through == self._pruned and not self._kept)
            or time.monotonic() < self._next_prune
            or not isinstance(store, SupportsUnitOfWork)
        ):
            return
        self._next_prune = time.monotonic() + relay.options.prune_interval
        self._pruned = through
        parked = await relay.models.parked(self.park_name, 1)
        self._kept = bool(parked)
        if parked:
            first = min(p.position for p in parked)
            below = (
                Position(first.tx, first.seq - 1)
                if first.seq > 0
                else Position(first.tx - 1, MAX_POSITION_PART)
            )
            through = min(through, below)
        if through > START:
            try:
                await store.prune_outbox(relay.destination, through)
            except EventfoldError as exc:  # housekeeping: delivery goes on, the next try may do
                log.warning("relay %r could not delete delivered outbox messages: %s",
                            relay.destination, exc)  # fmt: skip


class Relay:
    """Delivers the log's matching events (and the store's outbox messages for
    ``destination``) to ``sink``, checkpointed in the store's database.

    ::

        relay = Relay(store, NatsJetStreamSink(stream="ORDERS", subjects=["orders.>"]),
                      destination="orders", categories=["order"])
        async with relay:           # runs in the background until the block ends
            ...

    Subjects are ``<subject_prefix>.<category>.<type>`` (each part made a valid token by
    `subject_token`; the prefix defaults to the destination) and outbox messages go to
    ``outbox_subject`` (default ``<subject_prefix>.outbox``). Headers carry the stream
    id, stream version, global position, event type, ``traceparent`` and the correlation
    and causation ids of the event's metadata.
    """

    def __init__(
        self,
        store: EventStore,
        sink: Sink,
        *,
        destination: str,
        subject_prefix: str | None = None,
        categories: Sequence[str] | None = None,
        types: Sequence[str | type[Event]] | None = None,
        outbox: bool = True,
        outbox_subject: str | None = None,
        options: RelayOptions | None = None,
        models: ReadModelStore | None = None,
        leases: Leases | None = None,
        owner: str | None = None,
    ) -> None:
        if not isinstance(destination, str) or not _DESTINATION.fullmatch(destination):
            raise InvalidInput(
                f"relay destination {destination!r} must start with a lowercase letter and "
                "hold only lowercase letters, digits and _ (at most 48): it names the "
                "relay's checkpoint and lease"
            )
        if not isinstance(sink, Sink):
            raise InvalidInput(f"{sink!r} is not a Sink (open, send, flush and close)")
        self.store = store
        self.sink = sink
        self.destination = destination
        self.name = f"relay_{destination}"
        """The relay's checkpoint name in the read-model store."""
        self.outbox_name = f"{self.name}__outbox"
        """Where its parked outbox messages are listed (their positions are not the log's)."""
        self.lease_key = f"relay:{destination}"
        self.subject_prefix = check_prefix(subject_prefix or destination)
        self.outbox_subject = check_prefix(outbox_subject or f"{self.subject_prefix}.outbox")
        type_names = (
            None
            if types is None
            else tuple(sorted(t if isinstance(t, str) else t.__event_type__ for t in types))
        )
        self.definition: ProjectionBase = _Definition(self.name, categories, type_names)
        self.categories = self.definition.categories
        self.types = type_names
        self.outbox = outbox
        self.options = options or RelayOptions()
        self._models = models
        self._leases = leases
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.progressed = Signal()
        """Notified after each checkpoint write of this process."""
        self.state = "stopped"
        """What this process's relay does: stopped, standby, running, retrying."""
        self.error: str | None = None
        """The error the relay is retrying now (the sink down, the store failing)."""
        self._error_dirty = False
        self._close_leases = False
        self._task: asyncio.Task[None] | None = None
        self._pumps: list[_Pump] = []

    def __repr__(self) -> str:
        return f"Relay(destination={self.destination!r}, sink={self.sink!r})"

    @property
    def models(self) -> ReadModelStore:
        """The read-model store holding the checkpoint and the parked list."""
        if self._models is None:
            self._models = read_models_for(self.store)
        return self._models

    @property
    def leases(self) -> Leases:
        """Leases shared by every process on the store (PostgreSQL), else in-process."""
        if self._leases is None:
            backend = backend_of(self.store)
            if backend is not None and backend.leases is not None:
                self._leases = backend.leases(self.store)
                self._close_leases = True
            else:
                self._leases = MemoryLeases()
        return self._leases

    @property
    def has_outbox(self) -> bool:
        """Whether the relay delivers outbox messages (the store keeps them)."""
        return self.outbox and isinstance(self.store, SupportsOutbox)

    # -- messages ----------------------------------------------------------------------

    def event_message(self, event: RecordedEvent) -> Message:
        """The message for one event."""
        category = event.stream_id.partition("-")[0]
        headers = {
            HEADER_STREAM_ID: event.stream_id,
            HEADER_STREAM_VERSION: str(event.version),
            HEADER_POSITION: str(event.position),
            HEADER_EVENT_TYPE: event.type,
            HEADER_RECORDED_US: str(event.recorded_us),
        }
        if event.raw_metadata != b"{}":
            meta = event.metadata
            for key, header in (
                ("correlation_id", HEADER_CORRELATION_ID),
                ("causation_id", HEADER_CAUSATION_ID),
                ("traceparent", "traceparent"),
                ("tracestate", "tracestate"),
            ):
                value = meta.get(key)
                if value is not None:
                    headers[header] = str(value)
        _ascii_headers(headers)
        return Message(
            subject=f"{self.subject_prefix}.{subject_token(category)}.{subject_token(event.type)}",
            # The sealed form: a bus is out of erasure's reach, so no opened values.
            payload=msgspec.json.encode(redacted(event.data)),
            headers=headers,
            message_id=str(event.event_id),
            key=event.stream_id,
        )

    def outbox_message(self, message: OutboxMessage) -> Message:
        """The message for one outbox message."""
        message_id = str(uuid.UUID(bytes=message.message_id))
        key = message.key if message.key is not None else message_id
        headers = dict(message.headers)
        headers[HEADER_DESTINATION] = message.destination
        headers[HEADER_POSITION] = str(message.position)
        headers[HEADER_RECORDED_US] = str(message.recorded_us)
        if message.key is not None:
            headers[HEADER_KEY] = message.key
        _ascii_headers(headers)
        return Message(self.outbox_subject, message.payload, headers, message_id, key)

    # -- sources -----------------------------------------------------------------------

    async def _events(
        self, after: Position, wake: Any
    ) -> AsyncIterator[tuple[list[_Entry], Position]]:
        subscription = Subscription(
            self.store,
            after=after,
            types=self.types,
            categories=self.categories,
            batch_size=self.options.batch_size,
            poll_interval=self.options.poll_interval,
            wake=wake,
        )
        async for batch in subscription:
            entries = []
            for e in batch.events:
                message = self.event_message(e)
                entries.append(_Entry(e.position, e.stream_id, message, message.message_id, e.type))
            bad = batch.undecodable
            if bad is not None:
                entries.append(
                    _Entry(
                        bad.position,
                        bad.stream_id,
                        None,
                        "",
                        bad.type,
                        error=f"the {bad.type} event does not decode: {bad.error}",
                    )
                )
            yield entries, batch.through

    async def _outbox(
        self, after: Position, wake: Any
    ) -> AsyncIterator[tuple[list[_Entry], Position]]:
        store = self.store
        assert isinstance(store, SupportsOutbox)
        size = self.options.batch_size
        while True:
            found = await store.read_outbox(after, size, destination=self.destination)
            if found:
                entries = [
                    _Entry(
                        m.position,
                        m.key if m.key is not None else str(uuid.UUID(bytes=m.message_id)),
                        self.outbox_message(m),
                        str(uuid.UUID(bytes=m.message_id)),
                        "outbox",
                    )
                    for m in found
                ]
                after = found[-1].position
                yield entries, after
                if len(found) == size:
                    continue
            await wake.wait(self.options.poll_interval)

    # -- running -----------------------------------------------------------------------

    def _set_error(self, error: str | None) -> None:
        if error != self.error:
            self.error = error
            self._error_dirty = True
        self.state = "retrying" if error else "running"

    async def run(self) -> None:
        """Take the lease and deliver; stand by while another process holds it; until
        cancelled."""
        options = self.options
        failures = 0
        wakeups = notifier_for(self.store)
        try:
            while True:
                lease = await self.leases.acquire(self.lease_key, self.owner)
                if lease is None:
                    self.state = "standby"
                    await asyncio.sleep(options.lease_retry)
                    continue
                delay = options.lease_retry
                try:
                    self.state = "running"
                    await self._own(lease, wakeups)
                except (CheckpointConflict, _LeaseLost) as exc:
                    self.state, self.error = "standby", str(exc)
                    log.warning("relay %s: fenced, standing by: %s", self.destination, exc)
                except Exception as exc:
                    failures += 1
                    self.state, self.error = "retrying", f"{type(exc).__name__}: {exc}"
                    log.error("relay %s: %s; retrying", self.destination, self.error)
                    delay = min(0.1 * 2 ** min(failures, 20), options.max_backoff)
                finally:
                    await lease.release()
                await asyncio.sleep(delay)
        finally:
            self.state = "stopped"
            await wakeups.close(timeout=1.0)
            close = getattr(self._leases, "close", None)
            if self._close_leases and close is not None:
                self._leases, self._close_leases = None, False
                await close()

    async def _own(self, lease: Any, wakeups: Any) -> None:
        breaker = _Breaker(self, self.sink)
        try:
            while True:
                try:
                    await self.sink.open()
                    break
                except SinkUnavailable as exc:
                    breaker.failures += 1
                    self._set_error(exc.reason)
                    await asyncio.sleep(
                        min(0.05 * 2 ** min(breaker.failures, 20), self.options.max_backoff)
                    )
                if not lease.held():
                    raise _LeaseLost(f"lease {self.lease_key} was lost")
            self._set_error(None)
            events = _Pump(
                self, EVENTS, lease, breaker, lambda after: self._events(after, wakeups.subscribe())
            )
            self._pumps = [events]
            if self.has_outbox:
                outbox = _Pump(
                    self,
                    OUTBOX,
                    lease,
                    breaker,
                    lambda after: self._outbox(after, wakeups.subscribe()),
                )
                self._pumps.append(outbox)
            try:
                async with asyncio.TaskGroup() as tg:
                    for pump in self._pumps:
                        tg.create_task(pump.run())
                    tg.create_task(self._watch(lease))
            except BaseExceptionGroup as group:
                raise _first(group) from None
        finally:
            breaker.close()
            self._pumps = []
            with contextlib.suppress(Exception):
                await self.sink.close()

    async def _watch(self, lease: Any) -> None:
        """Notice a lost lease between checkpoints, and record the error for the status."""
        while True:
            await asyncio.sleep(min(self.options.lease_retry, 0.5))
            if not lease.held():
                raise _LeaseLost(f"lease {self.lease_key} was lost")
            if self._error_dirty:
                self._error_dirty = False
                async with self.models.transaction() as tx:
                    await tx.set_state(self.name, 1, EVENTS, PartitionState.RUNNING, self.error)

    async def start(self) -> None:
        """Run in the background (see `run`)."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"eventfold:{self.lease_key}")

    async def stop(self) -> None:
        """Stop: acknowledged messages are checkpointed if the store answers; the rest are
        sent again by the next run."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            async with asyncio.timeout(self.options.stop_timeout):
                await task

    @property
    def running(self) -> bool:
        return self._task is not None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- waiting -----------------------------------------------------------------------

    async def checkpoint(self, partition: int = EVENTS) -> Position:
        """The committed checkpoint of the events (or of the outbox, ``OUTBOX``)."""
        rows = await self.models.checkpoints(self.name, 1)
        return next((c.position for c in rows if c.partition == partition), START)

    async def wait_for(
        self,
        position: Position | str,
        *,
        partition: int = EVENTS,
        timeout: float = 10.0,  # noqa: ASYNC109 - the error reports it
    ) -> Position:
        """Wait until the checkpoint reached ``position`` (everything up to it is on the
        bus); `TimeoutError` after ``timeout`` seconds."""
        target = Position.parse(position)
        wake = self.progressed.subscribe()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            reached = await self.checkpoint(partition)
            if reached >= target:
                return reached
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"relay {self.destination!r} reached {reached}, not {target}, within "
                    f"{timeout:g} s ({self.error or 'no error'})"
                )
            await wake.wait(min(0.05, remaining))

    def parked_name(self, partition: int) -> str:
        """The read-model name the parked messages of ``EVENTS`` or ``OUTBOX`` are kept under."""
        return self.name if partition == EVENTS else self.outbox_name

    def _pump(self, partition: int) -> _Pump | None:
        return next((p for p in self._pumps if p.partition == partition), None)


async def _acked(ack: Awaitable[None], timeout: float) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        await ack
