"""Reading: the streams, one stream's events, the global log, one event.

Pages are cursor-paged: ``next`` is an opaque cursor (a stream version or a log
position inside) to pass back as ``cursor``. Filters the store cannot apply (a
correlation id, a time range, types within a stream) are applied here while reading at
most ``limit × scan_factor`` events, so a page may hold fewer matches than ``limit``
and still have a ``next``: the end is when ``next`` is null.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .._events import RecordedEvent
from .._position import START, Position
from ..store import EventStore, event_at
from ..store.kit import Codec, Row
from ._api import Api
from ._auth import Role
from ._erased import mark_erased
from ._errors import ApiError, etag, json_response
from ._params import bad, decode_cursor, encode_cursor, flag, limit, position, timestamp, values
from ._render import event_detail, events_out, rows_out
from ._types import LogPage, StreamOut, StreamPage, StreamsPage

__all__ = ["read_event", "read_log", "read_log_event", "read_stream", "streams"]

Match = Callable[[RecordedEvent], bool]


def _matcher(request: Request, *, types: bool) -> Match | None:
    """The filters the store does not apply, as one test (None: no filter)."""
    correlation = request.query_params.get("correlation_id")
    since = timestamp(request, "since")
    until = timestamp(request, "until")
    wanted = values(request, "type") if types else None
    if since is not None and until is not None and until < since:
        raise bad("until", "until is before since; give a time range that is not empty")
    if correlation is None and since is None and until is None and wanted is None:
        return None
    kinds = None if wanted is None else set(wanted)

    def match(e: RecordedEvent) -> bool:
        if kinds is not None and e.type not in kinds:
            return False
        if since is not None and e.recorded_us < since:
            return False
        if until is not None and e.recorded_us >= until:
            return False
        return correlation is None or e.metadata.get("correlation_id") == correlation

    return match


async def streams(api: Api, request: Request) -> Response:
    """GET /streams: the streams, by id."""
    api.authorize(request, Role.READ)
    size = limit(request, api.limits.default_page, api.limits.max_page)
    after = decode_cursor(request, "streams")
    category = request.query_params.get("category")
    found = [
        StreamOut(stream_id=s.stream_id, version=s.version, replaced_by=s.replaced_by)
        async for s in api.store.streams(after=after, category=category, limit=size)
    ]
    nxt = encode_cursor("streams", found[-1].stream_id) if len(found) == size else None
    return json_response(StreamsPage(streams=found, next=nxt))


def _int_param(request: Request, name: str, minimum: int) -> int | None:
    text = request.query_params.get(name)
    if text is None:
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 18 or int(text) < minimum:
        raise bad(name, f"{name} must be an integer >= {minimum}, got {text[:40]!r}")
    return int(text)


async def read_stream(api: Api, request: Request) -> Response:
    """GET /streams/{stream_id}/events: a page of one stream, forwards or backwards."""
    api.authorize(request, Role.READ)
    stream_id: str = request.path_params["stream_id"]
    size = limit(request, api.limits.default_page, api.limits.max_page)
    backwards = flag(request, "backwards")
    match = _matcher(request, types=True)
    cursor = decode_cursor(request, "stream")
    start = _int_param(request, "from_version", 1)
    if cursor is not None:
        if start is not None:
            raise bad("cursor", "give cursor or from_version, not both")
        if not cursor.isdigit():
            raise bad("cursor", "cursor is not a cursor of this listing; pass a page's `next`")
        start = int(cursor)
    store = api.store
    last: int | None = None  # the version of the last event looked at
    row_reads = api.row_reads
    # The version (the ETag) is read before the events, never after: an ETag newer than
    # the page would let a client append over events it has not seen.
    if match is None and row_reads is not None:
        version, rows = await row_reads.read_stream_page(
            stream_id, from_version=start, backwards=backwards, limit=size
        )
        events = await _rows_shown(store, row_reads.codec, rows)
        more = len(rows) == size
        if rows:
            last = rows[-1][2]
    else:
        version = await store.stream_version(stream_id)
        budget = size if match is None else size * api.limits.scan_factor
        scanned = [
            e
            async for e in store.read_stream(
                stream_id, from_version=start, backwards=backwards, limit=budget
            )
        ]
        page, looked = _take(scanned, match, size)
        events = await _events_shown(store, page)
        more = len(scanned) == budget or len(page) == size
        if looked is not None:
            last = looked.version
    nxt: str | None = None
    if last is not None and more:
        following = last - 1 if backwards else last + 1
        if following >= 1:
            nxt = encode_cursor("stream", str(following))
    body = StreamPage(stream_id=stream_id, version=version, events=events, next=nxt)
    return json_response(body, headers={"ETag": etag(version)})


def _take(
    scanned: list[RecordedEvent], match: Match | None, size: int
) -> tuple[list[RecordedEvent], RecordedEvent | None]:
    """The first ``size`` matches, and the last event looked at (where the next page
    goes on from)."""
    if match is None:
        return scanned[:size], (scanned[size - 1] if len(scanned) >= size else
                                (scanned[-1] if scanned else None))  # fmt: skip
    page: list[RecordedEvent] = []
    last: RecordedEvent | None = None
    for e in scanned:
        last = e
        if match(e):
            page.append(e)
            if len(page) == size:
                break
    return page, last


async def read_log(api: Api, request: Request) -> Response:
    """GET /log: a page of the global log."""
    api.authorize(request, Role.READ)
    size = limit(request, api.limits.default_page, api.limits.max_page)
    match = _matcher(request, types=False)
    types = values(request, "type")
    categories = values(request, "category")
    cursor = decode_cursor(request, "log")
    after_text = request.query_params.get("after")
    if cursor is not None and after_text is not None:
        raise bad("cursor", "give cursor or after, not both")
    after: Position = START
    if cursor is not None:
        after = position(cursor, "cursor")
    elif after_text is not None:
        after = position(after_text, "after")
    store = api.store
    head = await store.head()
    last: Position | None = None  # the position of the last event looked at
    row_reads = api.row_reads
    if match is None and row_reads is not None:
        rows = [
            row
            async for rows_page in row_reads.read_all_rows(
                after=after, types=types, categories=categories, limit=size
            )
            for row in rows_page
        ]
        events = await _rows_shown(store, row_reads.codec, rows)
        more = len(rows) == size
        if rows:
            last = Position(rows[-1][8], rows[-1][9])
    else:
        budget = size if match is None else size * api.limits.scan_factor
        scanned = [
            e
            async for e in store.read_all(
                after=after, types=types, categories=categories, limit=budget
            )
        ]
        page, looked = _take(scanned, match, size)
        events = await _events_shown(store, page)
        more = len(scanned) == budget or len(page) == size
        if looked is not None:
            last = looked.position
    nxt: str | None = None
    if last is not None and more:
        nxt = encode_cursor("log", str(last))
    body = LogPage(events=events, head=str(head), next=nxt)
    return json_response(body)


async def _rows_shown(store: EventStore, codec: Codec, rows: list[Row]) -> list[Any]:
    """A page of stored rows as the API shows it, erased personal fields named."""
    sealed: list[int] = []
    events = rows_out(codec, rows, sealed)
    await mark_erased(store, events, sealed)
    return events


async def _events_shown(store: EventStore, page: list[RecordedEvent]) -> list[Any]:
    """A page of events as the API shows it, erased personal fields named."""
    sealed: list[int] = []
    events = events_out(page, sealed)
    await mark_erased(store, events, sealed)
    return events


async def read_event(api: Api, request: Request) -> Response:
    """GET /streams/{stream_id}/events/{version}: one event with its stored payload."""
    api.authorize(request, Role.READ)
    stream_id: str = request.path_params["stream_id"]
    text: str = request.path_params["version"]
    if not text.isascii() or not text.isdigit() or len(text) > 18 or int(text) < 1:
        raise bad("version", f"version must be an integer >= 1, got {text[:40]!r}")
    wanted = int(text)
    found = [e async for e in api.store.read_stream(stream_id, from_version=wanted, limit=1)]
    if not found or found[0].version != wanted:
        raise ApiError(
            404, "not_found", f"stream {stream_id!r} has no event at version {wanted}",
            field="version",
        )  # fmt: skip
    detail = event_detail(found[0])
    await mark_erased(api.store, [detail])
    return json_response(detail)


async def read_log_event(api: Api, request: Request) -> Response:
    """GET /log/{position}: the event at a global position, with its stored payload."""
    api.authorize(request, Role.READ)
    at = position(request.path_params["position"], "position")
    found = await event_at(api.store, at)
    if found is None:
        raise ApiError(404, "not_found", f"no readable event at position {at}", field="position")
    detail = event_detail(found)
    await mark_erased(api.store, [detail])
    return json_response(detail)
