"""Appending over HTTP with optimistic concurrency.

The expected version travels as ``If-Match``: the ETag of a read of the stream
(``W/"3"``; a bare ``"3"`` or ``3`` is accepted too), or ``*`` for any version. Instead,
``expected_version=any|no_stream|stream_exists|N`` may be given as a query parameter. With
neither the append is refused with 428: a client must say what it read, or that it does
not care.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .._events import NewEvent
from .._position import ANY, ExpectedVersion, StreamState
from ._api import Api
from ._auth import Role
from ._errors import ApiError, etag, json_response
from ._params import bad, read_body
from ._types import AppendIn, AppendOut

__all__ = ["append"]


def _version_text(text: str, field: str) -> int:
    body = text.strip()
    if body.startswith("W/"):
        body = body[2:]
    if len(body) >= 2 and body[0] == body[-1] == '"':
        body = body[1:-1]
    if not body.isascii() or not body.isdigit() or len(body) > 18:
        raise bad(
            field,
            f'{field} must be a stream version as an ETag (W/"3"), or * for any version; '
            f"got {text[:40]!r}",
        )
    return int(body)


def expected_version(request: Request) -> ExpectedVersion:
    """The expected version of an append request, or 400/428."""
    header = request.headers.get("if-match")
    # Parsing the query string costs more than the rest of this check: skip it when empty.
    query = request.query_params.get("expected_version") if request.scope["query_string"] else None
    if header is not None and query is not None:
        raise bad("If-Match", "give If-Match or expected_version, not both")
    if header is not None:
        if header.strip() == "*":
            return ANY
        if "," in header:
            raise bad("If-Match", "If-Match must hold one stream version, not a list")
        return _version_text(header, "If-Match")
    if query is not None:
        lowered = query.strip().lower()
        for state in StreamState:
            if lowered == state.value:
                return state
        if lowered.isascii() and lowered.isdigit() and len(lowered) <= 18:
            return int(lowered)
        raise bad(
            "expected_version",
            "expected_version must be any, no_stream, stream_exists or a version (an integer "
            f">= 0); got {query[:40]!r}",
        )
    raise ApiError(
        428,
        "precondition_required",
        "an append needs the stream version it was decided on: send If-Match with the "
        'ETag of your read of the stream (W/"0" for a new stream), or If-Match: * to '
        "append whatever the version",
        field="If-Match",
    )


async def append(api: Api, request: Request) -> Response:
    """POST /streams/{stream_id}/events: append every event of the body, or none."""
    api.authorize(request, Role.WRITE)
    stream_id: str = request.path_params["stream_id"]
    expected = expected_version(request)
    body = await read_body(request, api.limits.max_body_bytes, AppendIn)
    if len(body.events) > api.limits.max_append_events:
        raise ApiError(
            413,
            "too_many_events",
            f"the append holds {len(body.events)} events; this server takes at most "
            f"{api.limits.max_append_events} in one append",
            field="events",
        )
    if stream_id.startswith("$"):
        raise bad(
            "stream_id",
            f"stream {stream_id!r} starts with $, which marks eventfold's own streams; "
            "append to a stream of your own",
        )
    events = []
    for index, item in enumerate(body.events):
        if item.type.startswith("$"):
            raise bad(
                f"events[{index}].type",
                f"type {item.type!r} starts with $, which marks eventfold's own types; "
                "name the type without it",
            )
        events.append(
            NewEvent(
                item.data,
                type=item.type,
                event_id=item.event_id,
                metadata=item.metadata,
                correlation_id=item.correlation_id,
                causation_id=item.causation_id,
                schema_version=item.schema_version,
            )
        )
    await api.load_schemas()
    result = await api.store.append(stream_id, events, expected_version=expected)
    out = AppendOut(
        stream_id=stream_id,
        version=result.version,
        position=str(result.position),
        retry=result.retry,
    )
    return json_response(out, 200 if result.retry else 201, headers={"ETag": etag(result.version)})
