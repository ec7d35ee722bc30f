"""The table of routes: what each one does, who may call it, what it takes and returns.

The app's routing and its OpenAPI document are both built from it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..metrics import Health
from . import _admin, _append, _live, _observe, _reads, _stepper
from ._api import Api
from ._auth import Role
from ._types import (
    AppendIn,
    AppendOut,
    EventDetail,
    ForgetIn,
    ForgetOut,
    LogPage,
    ParkedOut,
    ProjectionOut,
    RebuildIn,
    RebuildOut,
    ReplayIn,
    ReplayOut,
    SchemaRecordOut,
    SchemaTypeOut,
    StreamPage,
    StreamsPage,
)

__all__ = ["ROUTES", "Param", "RouteSpec"]


@dataclass(frozen=True)
class Param:
    """One parameter of a route."""

    name: str
    where: str
    """``query``, ``path`` or ``header``."""
    schema: dict[str, Any]
    description: str
    required: bool = False


@dataclass(frozen=True)
class RouteSpec:
    """One route."""

    method: str
    path: str
    handler: Callable[[Api, Request], Awaitable[Response]]
    summary: str
    role: Role
    params: tuple[Param, ...] = ()
    body: type[Any] | None = None
    body_required: bool = True
    ok: int = 200
    returns: Any = None
    """The body of a success: a msgspec type, ``list[...]`` of one, ``str`` for text in
    ``media_type``, or None for SSE."""
    tag: str = "events"
    media_type: str = "application/json"
    """The media type of a success (a body of another type is described as text)."""


_INT = {"type": "integer", "minimum": 1}
_STR = {"type": "string"}
LIMIT = Param("limit", "query", {"type": "integer", "minimum": 1}, "Page size (bounded).")
CURSOR = Param("cursor", "query", _STR, "The `next` cursor of the page before.")
STREAM = Param("stream_id", "path", {"type": "string", "minLength": 1}, "The stream.", True)
NAME = Param("name", "path", _STR, "The projection's name.", True)
TYPES = Param("type", "query", _STR, "Event types, comma-separated or repeated.")
CATEGORIES = Param("category", "query", _STR, "Stream categories (the id before its first -).")
CORRELATION = Param("correlation_id", "query", _STR, "Only events with this correlation id.")
SINCE = Param("since", "query", {"type": "string", "format": "date-time"}, "Recorded at or after.")
UNTIL = Param("until", "query", {"type": "string", "format": "date-time"}, "Recorded before.")

ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec(
        "GET", "/streams", _reads.streams, "List streams by id", Role.READ,
        (LIMIT, CURSOR, Param("category", "query", _STR, "Only streams of this category.")),
        returns=StreamsPage, tag="streams",
    ),
    RouteSpec(
        "GET", "/streams/{stream_id}/events", _reads.read_stream, "Read a stream", Role.READ,
        (STREAM, LIMIT, CURSOR,
         Param("from_version", "query", _INT, "The first version to read (inclusive)."),
         Param("backwards", "query", {"type": "boolean"}, "Newest first."),
         TYPES, CORRELATION, SINCE, UNTIL),
        returns=StreamPage, tag="streams",
    ),
    RouteSpec(
        "POST", "/streams/{stream_id}/events", _append.append,
        "Append events with optimistic concurrency", Role.WRITE,
        (STREAM,
         Param("If-Match", "header", _STR,
               'The stream version read, as its ETag (W/"3"), or * for any version.'),
         Param("expected_version", "query", _STR,
               "Instead of If-Match: any, no_stream, stream_exists or a version.")),
        body=AppendIn, ok=201, returns=AppendOut, tag="streams",
    ),
    RouteSpec(
        "GET", "/streams/{stream_id}/events/{version}", _reads.read_event,
        "Read one event with its stored payload", Role.READ,
        (STREAM, Param("version", "path", _INT, "The event's version in the stream.", True)),
        returns=EventDetail, tag="streams",
    ),
    RouteSpec(
        "GET", "/log", _reads.read_log, "Read the global log", Role.READ,
        (LIMIT, CURSOR, Param("after", "query", _STR, "Start after this position."),
         TYPES, CATEGORIES, CORRELATION, SINCE, UNTIL),
        returns=LogPage,
    ),
    RouteSpec(
        "GET", "/log/{position}", _reads.read_log_event, "Read the event at a position",
        Role.READ, (Param("position", "path", _STR, "A global position.", True),),
        returns=EventDetail,
    ),
    RouteSpec(
        "GET", "/subscribe", _live.subscribe, "Follow the global log (Server-Sent Events)",
        Role.READ,
        (Param("Last-Event-ID", "header", _STR, "Resume after this position."),
         Param("after", "query", _STR, "Start after this position (default: the head)."),
         TYPES, CATEGORIES),
        returns=None,
    ),
    RouteSpec(
        "GET", "/projections", _admin.projections, "Every projection's status", Role.READ,
        returns=list[ProjectionOut], tag="projections",
    ),
    RouteSpec(
        "GET", "/projections/{name}", _admin.projection, "A projection's status and lag",
        Role.READ, (NAME,), returns=ProjectionOut, tag="projections",
    ),
    RouteSpec(
        "GET", "/projections/{name}/parked", _admin.parked, "A projection's parked events",
        Role.READ, (NAME,), returns=list[ParkedOut], tag="projections",
    ),
    RouteSpec(
        "POST", "/projections/{name}/parked/replay", _admin.replay,
        "Replay parked events (recorded in $audit)", Role.ADMIN, (NAME,),
        body=ReplayIn, body_required=False, returns=ReplayOut, tag="projections",
    ),
    RouteSpec(
        "POST", "/projections/{name}/rebuild", _admin.start_rebuild,
        "Rebuild beside the live version (recorded in $audit)", Role.ADMIN, (NAME,),
        body=RebuildIn, body_required=False, ok=202, returns=RebuildOut, tag="projections",
    ),
    RouteSpec(
        "GET", "/projections/{name}/rebuild", _admin.rebuild_progress,
        "The progress of a rebuild", Role.READ, (NAME,), returns=RebuildOut,
        tag="projections",
    ),
    RouteSpec(
        "GET", "/projections/{name}/steps/{stream_id}", _stepper.steps,
        "A document projection's state at each event of a stream, and each event's changes",
        Role.READ,
        (NAME, STREAM, Param("upto", "query", _INT, "The last version to fold (inclusive)."),
         Param("doc_id", "query", _STR, "The document (default: the stream id).")),
        returns=_stepper.StepsOut, tag="projections",
    ),
    RouteSpec(
        "GET", "/schemas", _admin.schemas, "The schema registry's types", Role.READ,
        returns=list[SchemaTypeOut], tag="schemas",
    ),
    RouteSpec(
        "GET", "/schemas/{type}", _admin.schema_type, "A type's recorded schemas", Role.READ,
        (Param("type", "path", _STR, "The event type.", True),),
        returns=list[SchemaRecordOut], tag="schemas",
    ),
    RouteSpec(
        "POST", "/privacy/forget", _admin.forget_subject,
        "Forget a data subject: their personal fields read as erased for good "
        "(recorded in $audit)", Role.ADMIN, body=ForgetIn, returns=ForgetOut, tag="privacy",
    ),
    RouteSpec(
        "GET", "/metrics", _observe.metrics, "Prometheus metrics", Role.READ,
        returns=str, tag="operations", media_type="text/plain; version=0.0.4",
    ),
    RouteSpec(
        "GET", "/health", _observe.health, "Stalled or failed projections and relays",
        Role.READ, returns=Health, tag="operations",
    ),
)  # fmt: skip
