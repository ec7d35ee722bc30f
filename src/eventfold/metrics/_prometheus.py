"""`Metrics`: the store's, projections' and relays' numbers in a Prometheus registry."""

from __future__ import annotations

import bisect
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    generate_latest,
)

from .._events import NewEvent
from .._position import Position
from .._tracing import trace_metadata
from ..errors import WrongExpectedVersion
from ..projections import ProjectionBase, ReadModelStore
from ..relay import Relay
from ..store import AppendResult, EventStore, SupportsUnitOfWork, UnitOfWork
from ._appends import AppendCounts
from ._observer import DEFAULT_COUNT_LIMIT, Observer, Snapshot

__all__ = ["APPEND_BUCKETS", "Metrics"]

APPEND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""The append latency histogram's buckets, in seconds."""

_MARK = "__eventfold_instrumented__"


class Metrics:
    """The numbers of one store, its projections and its relays, in a Prometheus
    registry (``registry``; a new one unless given). Never labelled by stream id:
    ``backend``, ``projection`` (its name) and ``relay`` (its destination) only.

    - `instrument` counts the store's appends, conflicts and append latency, those made
      in a unit of work too (opt in: it wraps ``store.append`` and
      ``store.unit_of_work``), into ``append_counts`` (an `AppendCounts`: plain numbers,
      read into the registry's families when it is scraped);
    - `collect` reads the head, lags, parked counts and stalls (an `Observer`) into the
      gauges; call it before each scrape. `exposition` does both and returns the text
      Prometheus reads. Mount it in any ASGI or WSGI app, or use ``eventfold.web``'s
      ``/metrics``.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        projections: Sequence[ProjectionBase] = (),
        relays: Sequence[Relay] = (),
        models: ReadModelStore | None = None,
        registry: CollectorRegistry | None = None,
        stall_seconds: float = 60.0,
        count_limit: int = DEFAULT_COUNT_LIMIT,
        observer: Observer | None = None,
    ) -> None:
        self.store = store
        self.observer = observer or Observer(
            store,
            projections=projections,
            relays=relays,
            models=models,
            stall_seconds=stall_seconds,
            count_limit=count_limit,
        )
        self.registry = registry if registry is not None else CollectorRegistry()
        self.backend = str(getattr(store, "backend", "") or "unknown")
        r = self.registry
        b = ("backend",)
        pb = ("backend", "projection")
        rb = ("backend", "relay")
        # The append figures are plain numbers on the append path, read into their
        # families at scrape time (registered first: the scrape's order is unchanged).
        self.append_counts = AppendCounts(self.backend, APPEND_BUCKETS)
        r.register(self.append_counts)
        self.head = Gauge(
            "eventfold_log_head_position", "The sequence number of the log's head.", b,
            registry=r,
        )  # fmt: skip
        self.scrape_duration = Gauge(
            "eventfold_observe_duration_seconds",
            "How long the last reading of lags and parked lists took.",
            b,
            registry=r,
        )
        self.projection_position = Gauge(
            "eventfold_projection_position",
            "The sequence number of a projection's lowest checkpoint.",
            pb,
            registry=r,
        )
        self.projection_lag_events = Gauge(
            "eventfold_projection_lag_events",
            "Matching events after a projection's checkpoint.",
            pb,
            registry=r,
        )
        self.projection_lag_seconds = Gauge(
            "eventfold_projection_lag_seconds",
            "How much older a projection's oldest waiting event is than the head.",
            pb,
            registry=r,
        )
        self.projection_parked = Gauge(
            "eventfold_projection_parked_events", "A projection's parked events.", pb,
            registry=r,
        )  # fmt: skip
        self.projection_failed = Gauge(
            "eventfold_projection_failed",
            "1 when a projection stopped on a poison event.",
            pb,
            registry=r,
        )
        self.projection_stalled = Gauge(
            "eventfold_projection_stalled",
            "1 when a projection is behind and its checkpoint has not moved for the stall time.",
            pb,
            registry=r,
        )
        self.relay_position = Gauge(
            "eventfold_relay_position",
            "The sequence number of a relay's events checkpoint.",
            rb,
            registry=r,
        )
        self.relay_lag_events = Gauge(
            "eventfold_relay_lag_events",
            "Events and outbox messages a relay has not delivered.",
            rb,
            registry=r,
        )
        self.relay_lag_seconds = Gauge(
            "eventfold_relay_lag_seconds",
            "How much older a relay's checkpoint event is than the head.",
            rb,
            registry=r,
        )
        self.relay_parked = Gauge(
            "eventfold_relay_parked_messages", "A relay's parked messages.", rb, registry=r
        )
        self.relay_oldest_parked = Gauge(
            "eventfold_relay_oldest_parked_seconds",
            "The age of a relay's oldest parked message (0: none).",
            rb,
            registry=r,
        )
        self.relay_stalled = Gauge(
            "eventfold_relay_stalled",
            "1 when a relay is behind and its checkpoint has not moved for the stall time.",
            rb,
            registry=r,
        )
        for p in self.observer.projections:
            for gauge in self._projection_gauges():
                gauge.labels(self.backend, p.name)
        for relay in self.observer.relays:
            for gauge in self._relay_gauges():
                gauge.labels(self.backend, relay.destination)

    def _projection_gauges(self) -> tuple[Gauge, ...]:
        return (
            self.projection_position,
            self.projection_lag_events,
            self.projection_lag_seconds,
            self.projection_parked,
            self.projection_failed,
            self.projection_stalled,
        )

    def _relay_gauges(self) -> tuple[Gauge, ...]:
        return (
            self.relay_position,
            self.relay_lag_events,
            self.relay_lag_seconds,
            self.relay_parked,
            self.relay_oldest_parked,
            self.relay_stalled,
        )

    # -- appends -----------------------------------------------------------------------

    def instrument(self, *, traces: bool = True) -> Callable[[], None]:
        """Count the store's appends, their events, conflicts and latency, and (with
        ``traces``, when OpenTelemetry is installed and a span is active) store the
        span's ``traceparent`` in each appended event's metadata. Wraps ``store.append``
        on this store object, and ``store.unit_of_work`` on a store that has units of
        work (once per `Metrics`; again does nothing). Returns the function that removes
        the wrappers.

        An append in a unit of work counts as one append, with its events, once the unit
        commits (a unit rolled back stored nothing); a `WrongExpectedVersion` counts as a
        conflict when the unit's append raises it, caught or not, or its commit does.
        The latency observed is that of the ``uow.append`` call itself, refused ones too,
        as for ``store.append``; the unit's commit is not timed."""
        return instrument(self.store, self, traces=traces)

    # -- scrapes -----------------------------------------------------------------------

    async def collect(self) -> Snapshot:
        """Read the head, lags, parked lists and stalls into the gauges."""
        snapshot = await self.observer.observe()
        b = self.backend
        self.head.labels(b).set(snapshot.head.seq)
        self.scrape_duration.labels(b).set(snapshot.duration_seconds)
        for r in snapshot.readings:
            if r.kind == "projection":
                self.projection_position.labels(b, r.name).set(r.position.seq)
                self.projection_lag_events.labels(b, r.name).set(r.lag_events)
                self.projection_lag_seconds.labels(b, r.name).set(r.lag_seconds)
                self.projection_parked.labels(b, r.name).set(r.parked)
                self.projection_failed.labels(b, r.name).set(int(r.failed))
                self.projection_stalled.labels(b, r.name).set(int(r.stalled))
            else:
                self.relay_position.labels(b, r.name).set(r.position.seq)
                self.relay_lag_events.labels(b, r.name).set(r.lag_events)
                self.relay_lag_seconds.labels(b, r.name).set(r.lag_seconds)
                self.relay_parked.labels(b, r.name).set(r.parked)
                self.relay_oldest_parked.labels(b, r.name).set(r.oldest_parked_seconds or 0.0)
                self.relay_stalled.labels(b, r.name).set(int(r.stalled))
        return snapshot

    async def exposition(self) -> bytes:
        """`collect`, then the registry in Prometheus' text format."""
        await self.collect()
        return generate_latest(self.registry)

    content_type = CONTENT_TYPE_LATEST
    """The media type of `exposition`'s text."""


def _traced(events: Sequence[Any], trace: dict[str, str]) -> list[NewEvent]:
    """``events`` with ``trace`` (`trace_metadata`) in their metadata."""
    out: list[NewEvent] = []
    for e in events:
        if isinstance(e, NewEvent):
            out.append(
                NewEvent(
                    e.data,
                    event_id=e.event_id,
                    type=e.type,
                    metadata={**trace, **(e.metadata or {})},
                    correlation_id=e.correlation_id,
                    causation_id=e.causation_id,
                    schema_version=e.schema_version,
                )
            )
        else:
            out.append(NewEvent(e, metadata=trace))
    return out


def instrument(store: EventStore, metrics: Metrics, *, traces: bool = True) -> Callable[[], None]:
    """See `Metrics.instrument`."""
    current = store.append
    if getattr(current, _MARK, None) is metrics:
        return lambda: None
    # Over another Metrics' wrapper, that one already adds the traceparent.
    traces = traces and getattr(current, _MARK, None) is None
    counts = metrics.append_counts
    bounds = counts.bounds
    buckets = counts.buckets
    bucket_of = bisect.bisect_left
    clock = time.perf_counter_ns

    async def append(stream_id: str, events: Sequence[Any], **kwargs: Any) -> Any:
        if traces and (trace := trace_metadata()) is not None:
            events = _traced(events, trace)
        started = clock()
        try:
            result = await current(stream_id, events, **kwargs)
        except WrongExpectedVersion:
            seconds = (clock() - started) / 1e9
            counts.sum += seconds
            buckets[bucket_of(bounds, seconds)] += 1
            counts.conflicts += 1
            raise
        # `AppendCounts.observe`, inline: this runs once per append.
        seconds = (clock() - started) / 1e9
        counts.sum += seconds
        buckets[bucket_of(bounds, seconds)] += 1
        if not result.retry:
            counts.appends += 1
            counts.events += len(events)
        return result

    setattr(append, _MARK, metrics)
    setattr(store, "append", append)  # noqa: B010 - an instance attribute over the method
    remove_units = _instrument_units(store, metrics, _Counters(counts, traces))

    def remove() -> None:
        if store.__dict__.get("append") is not append:
            return  # removed already, or wrapped again since (remove that one first)
        _unwrap(store, "append", current)
        remove_units()

    return remove


def _unwrap(store: object, name: str, previous: Any) -> None:
    if getattr(previous, _MARK, None) is not None:
        store.__dict__[name] = previous
    else:
        store.__dict__.pop(name, None)


class _Counters:
    """What an instrumented unit of work counts into (one `Metrics`' numbers)."""

    def __init__(self, counts: AppendCounts, traces: bool) -> None:
        self.counts = counts
        self.traces = traces


def _instrument_units(
    store: EventStore, metrics: Metrics, counters: _Counters
) -> Callable[[], None]:
    """Wrap ``store.unit_of_work`` (on a store that has units of work); the function
    that removes the wrapper."""
    if not isinstance(store, SupportsUnitOfWork):
        return lambda: None
    current = store.unit_of_work
    if getattr(current, _MARK, None) is metrics:
        return lambda: None

    def unit_of_work(**options: Any) -> AbstractAsyncContextManager[UnitOfWork]:
        return _CountedUnit(current(**options), counters)

    setattr(unit_of_work, _MARK, metrics)
    setattr(store, "unit_of_work", unit_of_work)  # noqa: B010 - as ``append`` above

    def remove() -> None:
        if store.__dict__.get("unit_of_work") is unit_of_work:
            _unwrap(store, "unit_of_work", current)

    return remove


class _CountedUnit:
    """A unit of work's context, counting its appends once it commits."""

    def __init__(self, inner: AbstractAsyncContextManager[UnitOfWork], c: _Counters) -> None:
        self._inner = inner
        self._counters = c
        self._unit: _CountedUnitOfWork | None = None

    async def __aenter__(self) -> UnitOfWork:
        self._unit = _CountedUnitOfWork(await self._inner.__aenter__(), self._counters)
        return self._unit

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        unit = self._unit
        assert unit is not None
        try:
            suppressed = await self._inner.__aexit__(kind, error, tb)
        except WrongExpectedVersion as refused:
            if not any(refused is seen for seen in unit.refused):
                self._counters.counts.conflicts += 1  # refused by the commit itself
            raise
        if kind is None:
            counts = self._counters.counts
            for events in unit.stored:
                counts.appends += 1
                counts.events += events
        return suppressed


class _CountedUnitOfWork:
    """A `UnitOfWork` whose appends are timed and remembered until the unit ends."""

    def __init__(self, unit: UnitOfWork, c: _Counters) -> None:
        self._unit = unit
        self._counters = c
        self.backend = unit.backend
        self.paramstyle = unit.paramstyle
        self.stored: list[int] = []
        """The number of events of each append that stored events."""
        self.refused: list[WrongExpectedVersion] = []
        """The conflicts counted already (the commit may raise one of them again)."""

    def __getattr__(self, name: str) -> Any:
        if name == "_unit":
            raise AttributeError(name)
        return getattr(self._unit, name)  # a backend's own further members

    async def execute(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await self._unit.execute(query, params)

    async def write(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> None:
        await self._unit.write(query, params)

    def publish(
        self,
        destination: str,
        payload: object,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        message_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        return self._unit.publish(
            destination, payload, key=key, headers=headers, message_id=message_id
        )

    def outbox_position(self, message_id: uuid.UUID) -> Position:
        return self._unit.outbox_position(message_id)

    async def append(
        self, stream_id: str, events: Sequence[Any], *, expected_version: Any
    ) -> AppendResult:
        c = self._counters
        if c.traces and (trace := trace_metadata()) is not None:
            events = _traced(events, trace)
        started = time.perf_counter_ns()
        try:
            result = await self._unit.append(stream_id, events, expected_version=expected_version)
        except WrongExpectedVersion as refused:
            c.counts.observe((time.perf_counter_ns() - started) / 1e9)
            c.counts.conflicts += 1
            self.refused.append(refused)
            raise
        c.counts.observe((time.perf_counter_ns() - started) / 1e9)
        if not result.retry:
            self.stored.append(len(events))
        return result
