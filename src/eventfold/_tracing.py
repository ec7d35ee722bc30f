"""OpenTelemetry, when it is installed (the ``otel`` extra); nothing otherwise.

- `trace_metadata`: the W3C ``traceparent`` (and ``tracestate``) of the active span, to
  store in an event's metadata at append;
- `process_span`: a ``process`` span (kind CONSUMER) for a batch of events or messages,
  linked to the creation context of each one that carries a ``traceparent``, as the
  OpenTelemetry messaging conventions ask.

Without ``opentelemetry-api`` both cost one check of a module-level flag.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = ["TRACER_NAME", "enabled", "process_span", "trace_metadata"]

TRACER_NAME = "eventfold"

try:
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - the otel extra is not installed
    _trace = None  # type: ignore[assignment]
    _propagate = None  # type: ignore[assignment]


def enabled() -> bool:
    """Whether OpenTelemetry's API is installed."""
    return _trace is not None


def trace_metadata() -> dict[str, str] | None:
    """``{"traceparent": ..., "tracestate": ...}`` for the active span, or None when no
    span is recording (or OpenTelemetry is not installed)."""
    if _trace is None:
        return None
    span = _trace.get_current_span()
    context = span.get_span_context()
    if not context.is_valid:
        return None
    carrier: dict[str, str] = {}
    _propagate.inject(carrier)
    found = {k: v for k, v in carrier.items() if k in ("traceparent", "tracestate")}
    return found or None


def _links(carriers: Iterable[Mapping[str, Any]]) -> list[Any]:
    assert _trace is not None
    links = []
    seen: set[tuple[int, int]] = set()
    for carrier in carriers:
        parent = carrier.get("traceparent")
        if not isinstance(parent, str):
            continue
        headers = {"traceparent": parent}
        state = carrier.get("tracestate")
        if isinstance(state, str):
            headers["tracestate"] = state
        context = _trace.get_current_span(_propagate.extract(headers)).get_span_context()
        key = (context.trace_id, context.span_id)
        if context.is_valid and key not in seen:
            seen.add(key)
            links.append(_trace.Link(context))
    return links


@contextlib.contextmanager
def process_span(
    name: str,
    carriers: Iterable[Mapping[str, Any]],
    attributes: Mapping[str, str | int] | None = None,
    *,
    producer: bool = False,
) -> Iterator[None]:
    """A CONSUMER (``producer``: PRODUCER) span named ``name`` around processing a
    batch, linked to each
    ``traceparent`` among ``carriers`` (event metadata or message headers). Nothing when
    OpenTelemetry is not installed or no tracer provider is set up (the API's no-op)."""
    if _trace is None:
        yield
        return
    tracer = _trace.get_tracer(TRACER_NAME)
    kind = _trace.SpanKind.PRODUCER if producer else _trace.SpanKind.CONSUMER
    with tracer.start_as_current_span(name, kind=kind, attributes=dict(attributes or {})) as span:
        if span.is_recording():  # links cost a metadata decode each: only when recorded
            for link in _links(carriers):
                span.add_link(link.context)
        yield
