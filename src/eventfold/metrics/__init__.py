"""Metrics and health: lag, parked counts, stalls, appends and conflicts.

- `Observer`: one cheap reading of the head and of each projection's and relay's
  checkpoint, lag (events and seconds) and parked list (`Observer.observe`), and the
  health check built from it (`Observer.health`: what is stalled or failed);
- `Metrics` (``pip install "eventfold[metrics]"``): the same numbers as Prometheus
  metrics in a ``prometheus_client`` registry, plus appends, conflicts and append latency
  once `Metrics.instrument` wraps the store (counted in an `AppendCounts`, a collector
  that gives them to the registry when it is scraped). Never labelled by stream id.

::

    metrics = Metrics(store, projections=[orders], relays=[relay])
    metrics.instrument()
    body = await metrics.exposition()  # serve it with metrics.content_type

``eventfold.web``'s app serves both at ``/metrics`` and ``/health``. See
docs/observability.md.
"""

from __future__ import annotations

import typing

from ._observer import DEFAULT_COUNT_LIMIT, Health, Kind, Observer, Problem, Reading, Snapshot

if typing.TYPE_CHECKING:
    from ._appends import AppendCounts
    from ._prometheus import APPEND_BUCKETS, Metrics

__all__ = [
    "APPEND_BUCKETS",
    "DEFAULT_COUNT_LIMIT",
    "AppendCounts",
    "Health",
    "Kind",
    "Metrics",
    "Observer",
    "Problem",
    "Reading",
    "Snapshot",
]


def __getattr__(name: str) -> typing.Any:
    if name in ("Metrics", "APPEND_BUCKETS", "AppendCounts"):
        try:
            from . import _prometheus
        except ImportError as exc:  # pragma: no cover - the extra is missing
            from ..errors import ConfigurationError

            raise ConfigurationError(
                "eventfold.metrics.Metrics needs prometheus-client: "
                'pip install "eventfold[metrics]"'
            ) from exc
        return getattr(_prometheus, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
