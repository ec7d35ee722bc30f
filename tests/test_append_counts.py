"""`AppendCounts` scrapes exactly as prometheus-client's own Counter and Histogram would
for the same appends: names, types, labels, buckets, values and ``_created``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    enable_created_metrics,
    generate_latest,
)
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

import eventfold
from eventfold import WrongExpectedVersion
from eventfold.metrics import APPEND_BUCKETS, AppendCounts, Metrics
from eventfold.store import SupportsUnitOfWork

# Below, on and just past bounds, past the last bound, and zero.
SECONDS = [0.0, 1e-9, 0.0004, 0.0005, 0.00050001, 0.001, 0.003, 0.0099, 0.5, 2.5, 2.6, 40.0]


class Reference:
    """The append figures as prometheus-client's own metrics, as `Metrics` kept them."""

    def __init__(self, backend: str, created: float) -> None:
        r = self.registry = CollectorRegistry()
        b = ("backend",)
        self.appends = Counter("eventfold_appends", "Appends that stored events.", b, registry=r)
        self.events = Counter(
            "eventfold_events_appended", "Events stored by appends.", b, registry=r
        )
        self.conflicts = Counter(
            "eventfold_append_conflicts",
            "Appends refused because the stream was not at the expected version.",
            b,
            registry=r,
        )
        self.duration = Histogram(
            "eventfold_append_duration_seconds",
            "How long an append took (refused ones too).",
            b,
            buckets=APPEND_BUCKETS,
            registry=r,
        )
        for metric in (self.appends, self.events, self.conflicts, self.duration):
            metric.labels(backend)._created = created
        self.backend = backend


@pytest.fixture(params=[True, False], ids=["created", "no_created"])
def created_samples(request: pytest.FixtureRequest) -> Iterator[bool]:
    if not request.param:
        disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        yield bool(request.param)
    finally:
        enable_created_metrics()  # type: ignore[no-untyped-call]


def test_the_scrape_is_the_clients_own(created_samples: bool) -> None:
    counts = AppendCounts("sqlite", APPEND_BUCKETS)
    ours = CollectorRegistry()
    ours.register(counts)
    reference = Reference("sqlite", counts.created)
    assert generate_latest(ours) == generate_latest(reference.registry)  # all zero

    for n, seconds in enumerate(SECONDS):
        counts.observe(seconds)
        reference.duration.labels("sqlite").observe(seconds)
        if n % 4 == 3:
            counts.conflicts += 1
            reference.conflicts.labels("sqlite").inc()
        else:
            counts.appends += 1
            counts.events += n
            reference.appends.labels("sqlite").inc()
            reference.events.labels("sqlite").inc(n)

    text = generate_latest(ours)
    assert text == generate_latest(reference.registry)
    openmetrics = generate_openmetrics(ours)  # type: ignore[no-untyped-call]
    assert openmetrics == generate_openmetrics(reference.registry)  # type: ignore[no-untyped-call]
    assert (b"_created" in text) is created_samples
    assert b'eventfold_append_duration_seconds_bucket{backend="sqlite",le="0.0005"} 4.0' in text
    assert b'eventfold_append_duration_seconds_bucket{backend="sqlite",le="+Inf"} 12.0' in text
    assert b'eventfold_appends_total{backend="sqlite"} 9.0' in text


async def test_an_instrumented_store_scrapes_as_before() -> None:
    async with eventfold.connect("memory://") as store:
        metrics = Metrics(store)
        metrics.instrument()
        counts = metrics.append_counts
        first, second, refused, in_unit = (
            eventfold.NewEvent({"n": n}, type="Counted") for n in range(4)
        )
        await store.append("acct-1", [first, second], expected_version=0)
        with pytest.raises(WrongExpectedVersion):
            await store.append("acct-1", [refused], expected_version=0)
        assert isinstance(store, SupportsUnitOfWork)
        async with store.unit_of_work() as uow:
            await uow.append("acct-2", [in_unit], expected_version=0)
        assert (counts.appends, counts.events, counts.conflicts) == (2, 3, 1)
        assert sum(counts.buckets) == 3
        assert counts.sum > 0

        # The same figures in prometheus-client's own metrics, scraped first, in the
        # order Metrics registered them, then the gauges.
        reference = Reference(store.backend, counts.created)
        reference.appends.labels(store.backend).inc(2)
        reference.events.labels(store.backend).inc(3)
        reference.conflicts.labels(store.backend).inc()
        histogram = reference.duration.labels(store.backend)
        histogram._sum.set(counts.sum)
        for bucket, count in zip(histogram._buckets, counts.buckets, strict=True):
            bucket.set(count)
        text = await metrics.exposition()
        expected = generate_latest(reference.registry)
        assert text.startswith(expected)
        assert text[len(expected) :].startswith(b"# HELP eventfold_log_head_position ")


def test_a_second_metrics_on_one_registry_is_refused() -> None:
    store = eventfold.connect("memory://")
    registry = CollectorRegistry()
    Metrics(store, registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Metrics(store, registry=registry)
