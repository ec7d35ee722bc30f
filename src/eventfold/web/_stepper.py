"""The projection stepper: a document projection's state for one document at each event
of a stream, and the change each event made.

It folds the projection's evolvers over the stream's events in memory, as
`eventfold.projections._live` does; nothing is read from or written to the read models.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from .._events import RecordedEvent
from ..errors import HandlerFailed
from ..projections import DocumentProjection
from ._api import Api
from ._auth import Role
from ._errors import ApiError, json_response
from ._params import bad

__all__ = ["ChangeOut", "StepOut", "StepsOut", "diff", "steps"]


class ChangeOut(msgspec.Struct, kw_only=True):
    """One value an event changed in the document."""

    path: str
    """Where, as dotted keys and list indexes (``lines.0.sku``); empty: the whole document."""
    before: Any = None
    after: Any = None
    op: str
    """``add``, ``remove`` or ``replace``."""


class StepOut(msgspec.Struct, kw_only=True):
    """One event of the stream and the document after it."""

    version: int
    position: str
    type: str
    handled: bool
    """Whether the projection handles this event's type (when not, nothing changed)."""
    state: Any
    """The document after this event, as stored (null: none yet, or deleted)."""
    changes: list[ChangeOut]
    error: str | None = None
    """What the evolver raised on this event; the fold stops there."""


class StepsOut(msgspec.Struct, kw_only=True):
    """The projection stepped over a stream."""

    projection: str
    version: int
    stream_id: str
    doc_id: str
    steps: list[StepOut]
    complete: bool
    """False when the fold stopped before ``upto`` or the stream's end: at the page
    bound (``Limits.max_page`` events) or at an evolver's error."""


_MISSING = object()


def diff(before: Any, after: Any, path: str = "") -> list[ChangeOut]:
    """The changes from ``before`` to ``after`` (JSON values): per key of objects, per
    index of lists of the same length, else the whole value."""
    if before is _MISSING and after is _MISSING:
        return []
    if before is _MISSING:
        return [ChangeOut(path=path, after=after, op="add")]
    if after is _MISSING:
        return [ChangeOut(path=path, before=before, op="remove")]
    if isinstance(before, dict) and isinstance(after, dict):
        found: list[ChangeOut] = []
        for key in [*before, *(k for k in after if k not in before)]:
            sub = f"{path}.{key}" if path else str(key)
            found += diff(before.get(key, _MISSING), after.get(key, _MISSING), sub)
        return found
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        found = []
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            found += diff(b, a, f"{path}.{i}" if path else str(i))
        return found
    if type(before) is type(after) and before == after:
        return []
    if before is None:
        return [ChangeOut(path=path, after=after, op="add")]
    if after is None:
        return [ChangeOut(path=path, before=before, op="remove")]
    return [ChangeOut(path=path, before=before, after=after, op="replace")]


def _int_param(request: Request, name: str) -> int | None:
    text = request.query_params.get(name)
    if text is None:
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 18 or int(text) < 1:
        raise bad(name, f"{name} must be an integer >= 1, got {text[:40]!r}")
    return int(text)


async def steps(api: Api, request: Request) -> Response:
    """GET /projections/{name}/steps/{stream_id}: the document after each event."""
    api.authorize(request, Role.READ)
    p = api.projection(request.path_params["name"])
    stream_id: str = request.path_params["stream_id"]
    if not isinstance(p, DocumentProjection):
        raise bad(
            "name",
            f"projection {p.name!r} writes its read model with free-form handlers; the "
            "stepper folds document projections (DocumentProjection) only",
        )
    projection: DocumentProjection[Any] = p
    doc_id = request.query_params.get("doc_id") or stream_id
    upto = _int_param(request, "upto")
    bound = api.limits.max_page
    events: list[RecordedEvent] = []
    complete = True
    async for event in api.store.read_stream(stream_id, limit=bound + 1):
        if upto is not None and event.version > upto:
            break
        if len(events) == bound:
            complete = False
            break
        events.append(event)
    if not events:
        raise ApiError(404, "not_found", f"stream {stream_id!r} has no events", field="stream_id")
    docs: dict[str, Any] = {}
    state: Any = None
    out: list[StepOut] = []
    for event in events:
        handled = projection.handles(event)
        try:
            projection.fold(docs, [event], only=doc_id)
        except HandlerFailed as exc:
            cause = exc.cause
            out.append(
                StepOut(
                    version=event.version, position=str(event.position), type=event.type,
                    handled=handled, state=state, changes=[],
                    error=f"{type(cause).__name__}: {cause}",
                )
            )  # fmt: skip
            complete = False
            break
        doc = docs.get(doc_id)
        after = None if doc is None else msgspec.json.decode(projection.encode(doc))
        out.append(
            StepOut(
                version=event.version, position=str(event.position), type=event.type,
                handled=handled, state=after, changes=diff(state, after),
            )
        )  # fmt: skip
        state = after
    body = StepsOut(
        projection=projection.name,
        version=projection.version,
        stream_id=stream_id,
        doc_id=doc_id,
        steps=out,
        complete=complete,
    )
    return json_response(body)
