"""The append counters and latency histogram: plain numbers on the append path, turned
into Prometheus families only when scraped.

``prometheus_client``'s `Counter` and `Histogram` take a lock and go through a few
method calls per increment (about 1.4 µs for the two counters and the observation of
one append); an append here adds to three integers, one bucket and one float. The
scrape yields the same families, samples and values the client's own metrics would:
``_total`` and ``_created`` per counter, the cumulative ``_bucket`` series, ``_count``,
``_sum`` and ``_created`` of the histogram, under the same ``backend`` label.

The numbers are updated on the event loop that runs the store's appends, without a
lock: one store's appends all run on its loop.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterator, Sequence

import prometheus_client.metrics
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

__all__ = ["AppendCounts"]

_APPENDS = ("eventfold_appends", "Appends that stored events.")
_EVENTS = ("eventfold_events_appended", "Events stored by appends.")
_CONFLICTS = (
    "eventfold_append_conflicts",
    "Appends refused because the stream was not at the expected version.",
)
_DURATION = ("eventfold_append_duration_seconds", "How long an append took (refused ones too).")


class AppendCounts(Collector):
    """Appends, their events, conflicts and append latency of one ``backend``, as a
    Prometheus collector (register it in a registry)."""

    def __init__(self, backend: str, buckets: Sequence[float]) -> None:
        self.backend = backend
        self.bounds = tuple(float(b) for b in buckets)
        self.appends = 0
        self.events = 0
        self.conflicts = 0
        self.buckets = [0] * (len(self.bounds) + 1)
        """Observations per bucket (not cumulative), the last one past every bound."""
        self.sum = 0.0
        self._labels = {"backend": backend}
        # The ``le`` labels as the client writes them (0.0005, 1.0, +Inf).
        self._bucket_labels = [floatToGoString(b) for b in (*self.bounds, math.inf)]  # type: ignore[no-untyped-call]
        self.created = time.time()
        """When counting started: the families' ``_created`` samples."""

    def observe(self, seconds: float) -> None:
        """One append's latency. `instrument`'s wrapper does the same inline."""
        self.sum += seconds
        # An observation equal to a bound falls in that bound's bucket (``le``).
        self.buckets[bisect.bisect_left(self.bounds, seconds)] += 1

    def describe(self) -> Iterator[Metric]:
        # The names the registry checks for clashes, without reading the numbers.
        yield CounterMetricFamily(*_APPENDS, labels=("backend",))
        yield CounterMetricFamily(*_EVENTS, labels=("backend",))
        yield CounterMetricFamily(*_CONFLICTS, labels=("backend",))
        yield HistogramMetricFamily(*_DURATION, labels=("backend",))

    def collect(self) -> Iterator[Metric]:
        labels = [self.backend]
        # The client's switch for ``_created`` samples (`disable_created_metrics`).
        created = self.created if getattr(prometheus_client.metrics, "_use_created", True) else None
        for (name, text), number in zip(
            (_APPENDS, _EVENTS, _CONFLICTS),
            (self.appends, self.events, self.conflicts),
            strict=True,
        ):
            family = CounterMetricFamily(name, text, labels=("backend",))
            family.add_metric(labels, float(number), created=created)
            yield family
        histogram = HistogramMetricFamily(*_DURATION, labels=("backend",))
        total = 0.0
        cumulative = []
        for bound, count in zip(self._bucket_labels, self.buckets, strict=True):
            total += count
            cumulative.append((bound, total))
        histogram.add_metric(labels, cumulative, self.sum)
        if created is not None:
            histogram.samples.append(
                Sample(histogram.name + "_created", dict(self._labels), created, None, None)
            )
        yield histogram
