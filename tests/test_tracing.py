"""OpenTelemetry over SQLite and PostgreSQL: the active span's ``traceparent`` stored in
the metadata of appended events, and projection and relay spans linked to it (the SDK's
in-memory exporter)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import eventfold
from eventfold import NewEvent
from eventfold.metrics import Metrics
from eventfold.projections import (
    DaemonOptions,
    DocumentProjection,
    ProjectionDaemon,
    read_models_for,
)
from eventfold.relay import InProcessSink, Relay
from eventfold.testing import settle

FAST = DaemonOptions(poll_interval=0.01, lease_retry=0.02)
_EXPORTER = InMemorySpanExporter()
OWN = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"


class TracedPlaced(eventfold.Event):
    cents: int


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


@pytest.fixture
async def store(sql_url: str) -> AsyncIterator[eventfold.EventStore]:
    async with eventfold.connect(sql_url) as store:
        remove = Metrics(store).instrument()
        yield store
        remove()


def traceparent_of(span: Any) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def linked(span: ReadableSpan) -> set[tuple[int, int]]:
    return {(link.context.trace_id, link.context.span_id) for link in span.links}


async def test_appends_in_a_span_carry_its_traceparent(
    store: eventfold.EventStore, spans: InMemorySpanExporter
) -> None:
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("place order") as span:
        await store.append(
            "order-1",
            [TracedPlaced(cents=1), NewEvent(TracedPlaced(cents=2), metadata={"who": "ann"})],
            expected_version=0,
        )
        # A traceparent the caller sets is kept.
        await store.append(
            "order-1",
            [
                NewEvent(
                    TracedPlaced(cents=3),
                    metadata={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
                )
            ],
            expected_version=2,
        )
    await store.append("order-1", [TracedPlaced(cents=4)], expected_version=3)
    events = [e async for e in store.read_stream("order-1")]
    expected = traceparent_of(span)
    assert [e.metadata.get("traceparent") for e in events] == [
        expected,
        expected,
        OWN,
        None,  # no span: nothing added
    ]
    assert events[1].metadata["who"] == "ann"
    assert [e.data.cents for e in events] == [1, 2, 3, 4]


async def test_projection_and_relay_spans_link_to_the_appending_span(
    store: eventfold.EventStore, spans: InMemorySpanExporter
) -> None:
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("place order") as span:
        result = await store.append("order-7", [TracedPlaced(cents=7)], expected_version=0)
    await store.append("order-8", [TracedPlaced(cents=8)], expected_version=0)
    await settle(store, result.position)
    head = await store.head()
    await settle(store, head)
    origin = (span.get_span_context().trace_id, span.get_span_context().span_id)

    p: DocumentProjection[dict[str, Any]] = DocumentProjection("traced_totals", document=dict)

    @p.on(TracedPlaced)
    def placed(doc: dict[str, Any], event: eventfold.RecordedEvent) -> dict[str, Any]:
        return {"cents": doc.get("cents", 0) + event.data.cents}

    async with ProjectionDaemon(store, read_models_for(store), [p], options=FAST) as daemon:
        await daemon.wait_for("traced_totals", head, timeout=10)
    processed = [s for s in spans.get_finished_spans() if s.name == "process traced_totals"]
    assert processed
    assert all(s.kind is trace.SpanKind.CONSUMER for s in processed)
    assert any(origin in linked(s) for s in processed)
    # The event appended without a span brings no link.
    assert all(linked(s) <= {origin} for s in processed)
    assert processed[0].attributes is not None
    assert processed[0].attributes["messaging.consumer.group.name"] == "traced_totals"

    sink = InProcessSink()
    async with Relay(store, sink, destination="traced", outbox=False) as relay:
        await relay.wait_for(head)
    (message,) = [m for m in sink.messages if m.key == "order-7"]
    assert message.headers["traceparent"] == traceparent_of(span)
    sent = [s for s in spans.get_finished_spans() if s.name == "send traced"]
    assert len(sent) == 2
    assert all(s.kind is trace.SpanKind.PRODUCER for s in sent)
    assert sorted(len(s.links) for s in sent) == [0, 1]
    assert any(origin in linked(s) for s in sent)


async def test_the_command_handler_stores_the_traceparent_beside_its_ids(
    store: eventfold.EventStore, spans: InMemorySpanExporter
) -> None:
    from bank import OpenAccount, account

    handler = eventfold.CommandHandler(store, account)
    with trace.get_tracer("tests").start_as_current_span("open account") as span:
        await handler.handle("account-1", OpenAccount(owner="ann"), correlation_id="req-1")
    (event,) = [e async for e in store.read_stream("account-1")]
    assert event.metadata["traceparent"] == traceparent_of(span)
    assert event.correlation_id == "req-1"
    assert event.causation_id is not None
