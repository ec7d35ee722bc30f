"""Appending over HTTP with optimistic concurrency.

The expected version travels as ``If-Match``: the ETag of a read of the stream
(``W/"3"``; a bare ``"3"`` or ``3`` is accepted too), or ``*`` for any version. Instead,
``expected_version=any|no_stream|stream_exists|N`` may be given as a query parameter. With
neither the append is refused with 428: a client must say what it read, or that it does
not care.
"""

from __future__ import annotations

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .._events import NewEvent
from .._position import ANY, ExpectedVersion, StreamState
from .._undecodable import keep_undecodable
from ..errors import EventfoldError
from ._api import Api
from ._auth import Role
from ._errors import ApiError, encode_json, error_response, etag, from_eventfold
from ._params import bad, check_body_head, decode_body, receive_body
from ._types import AppendIn, AppendOut

__all__ = ["append", "append_target", "serve_append"]

_PREFIX = "/streams/"
_SUFFIX = "/events"


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


def expected_version(header: str | None, query_string: bytes) -> ExpectedVersion:
    """The expected version of an append request from its ``If-Match`` header and its
    query string, or 400/428."""
    # Parsing the query string costs more than the rest of this check: skip it when empty.
    query = QueryParams(query_string).get("expected_version") if query_string else None
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


def append_target(path: str) -> str | None:
    """The stream id of ``path`` when it is ``/streams/{stream_id}/events``, else None
    (the same paths Starlette's route for it matches: an id of one segment)."""
    if path.startswith(_PREFIX) and path.endswith(_SUFFIX):
        stream_id = path[len(_PREFIX) : -len(_SUFFIX)]
        if stream_id and "/" not in stream_id:
            return stream_id
    return None


async def append(api: Api, request: Request) -> Response:
    """POST /streams/{stream_id}/events: append every event of the body, or none."""
    stream_id: str = request.path_params["stream_id"]
    status, answer, tag = await _append(api, stream_id, request.scope, request.receive)
    return Response(answer, status, headers={"ETag": tag}, media_type="application/json")


async def serve_append(
    api: Api, stream_id: str, scope: Scope, receive: Receive, send: Send
) -> None:
    """`append` as a bare ASGI call, answering as `append` under `guarded` does.

    An app with nothing wrapped around its routes answers appends with it, without
    Starlette's middleware, routing, request and response objects (see ``_App``).
    """
    try:
        with keep_undecodable():
            status, answer, tag = await _append(api, stream_id, scope, receive)
    except ApiError as err:
        await error_response(err)(scope, receive, send)
        return
    except EventfoldError as exc:
        await error_response(from_eventfold(exc))(scope, receive, send)
        return
    headers = [
        (b"content-length", b"%d" % len(answer)),
        (b"content-type", b"application/json"),
        (b"etag", tag.encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


async def _append(
    api: Api, stream_id: str, scope: Scope, receive: Receive
) -> tuple[int, bytes, str]:
    """Append the request's events: the status, JSON body and ETag of the answer."""
    authorization = if_match = content_type = content_length = None
    # One pass over the headers for the four read here (the first of each, as Starlette's
    # Headers.get gives; ASGI servers send names in lower case).
    for name, value in scope["headers"]:
        if name == b"authorization":
            if authorization is None:
                authorization = value.decode("latin-1")
        elif name == b"if-match":
            if if_match is None:
                if_match = value.decode("latin-1")
        elif name == b"content-type":
            if content_type is None:
                content_type = value.decode("latin-1")
        elif name == b"content-length" and content_length is None:
            content_length = value.decode("latin-1")
    api.authorize_header(authorization, Role.WRITE)
    expected = expected_version(if_match, scope["query_string"])
    maximum = api.limits.max_body_bytes
    check_body_head(content_type, content_length, maximum)
    body = decode_body(await receive_body(receive, maximum), AppendIn)
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
    return (200 if result.retry else 201), encode_json(out), etag(result.version)
