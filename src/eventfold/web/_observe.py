"""``/metrics`` (Prometheus) and ``/health`` (stalled or failed projections and relays).

Both read through the app's `eventfold.metrics.Metrics` (``create_app(metrics=...)``).
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ..metrics import Metrics
from ._api import Api
from ._auth import Role

__all__ = ["METRICS_STATE", "health", "metrics"]

METRICS_STATE = "eventfold_metrics"
"""Where the app keeps its `Metrics` (``app.state``)."""


def _metrics_of(request: Request) -> Metrics:
    found: Metrics = getattr(request.app.state, METRICS_STATE)
    return found


async def metrics(api: Api, request: Request) -> Response:
    """GET /metrics: the Prometheus text format. Lag in events and seconds, parked
    counts and stalls per projection and relay, the head, appends, conflicts and append
    latency; never labelled by stream id."""
    api.authorize(request, Role.READ)
    found = _metrics_of(request)
    return Response(await found.exposition(), media_type=found.content_type)


async def health(api: Api, request: Request) -> Response:
    """GET /health: 200 when no projection or relay is stalled (behind, its checkpoint
    not moving for the app's ``stall_seconds``) or failed; else 503 naming them."""
    api.authorize(request, Role.READ)
    found = await _metrics_of(request).observer.health()
    return Response(
        msgspec.json.encode(found),
        status_code=200 if found.ok else 503,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
