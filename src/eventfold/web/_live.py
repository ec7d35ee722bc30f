"""The live subscription: the global log as Server-Sent Events.

Each event's SSE ``id`` is its global position. A client that reconnects sends it back
as ``Last-Event-ID`` and the stream goes on with the event right after it: none skipped,
none twice. Where to start otherwise: ``after`` (a position, ``0`` for the beginning),
or the head (only what is appended from now on).

A subscription holds at most ``sse_batch`` events at once: it reads the next page only
once the previous one has been written to the connection, so a slow client slows only
its own reads and never grows the server's memory. A quiet subscription sends a
``: heartbeat`` comment every ``heartbeat_seconds``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from .._position import Position
from .._undecodable import keep_undecodable
from ._api import Api
from ._auth import Role
from ._erased import mark_erased
from ._errors import ApiError
from ._params import position, values
from ._render import event_out

__all__ = ["subscribe"]

_encoder = msgspec.json.Encoder()
_FIRST_RETRY = 0.005
"""After a wake-up whose read found nothing, the first wait before reading again (it
doubles up to ``Limits.poll_seconds``)."""


async def subscribe(api: Api, request: Request) -> Response:
    """GET /subscribe: follow the global log (optionally by category and type)."""
    api.authorize(request, Role.READ)
    types = values(request, "type")
    categories = values(request, "category")
    last_id = request.headers.get("last-event-id")
    after_text = request.query_params.get("after")
    if last_id is not None and last_id.strip():
        start = position(last_id.strip(), "Last-Event-ID")
    elif after_text is not None:
        start = position(after_text, "after")
    else:
        start = await api.store.head()
    if api.subscribers >= api.limits.max_subscribers:
        raise ApiError(
            503,
            "too_many_subscribers",
            f"this server already serves {api.subscribers} live subscriptions, its limit; "
            "try again later",
            headers={"Retry-After": "5"},
        )
    return StreamingResponse(
        _frames(api, start, types, categories),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _frames(
    api: Api,
    start: Position,
    types: list[str] | None,
    categories: list[str] | None,
) -> AsyncIterator[bytes]:
    store, limits = api.store, api.limits
    api.subscribers += 1
    try:
        wake = api.wakeups().subscribe()
        after = start
        yield b"retry: 1000\n\n"
        quiet_since = time.monotonic()
        retry = limits.poll_seconds
        while True:
            # Subscribed before reading: an append that lands between this read and the
            # wait below still wakes it. This runs after the route returned, outside its
            # guard: an event that does not decode is shown as stored here too.
            with keep_undecodable():
                batch = [
                    e
                    async for e in store.read_all(
                        after=after, types=types, categories=categories, limit=limits.sse_batch
                    )
                ]
            if batch:
                shown = [event_out(e) for e in batch]
                await mark_erased(store, shown)
                for e, out in zip(batch, shown, strict=True):
                    data = _encoder.encode(out)
                    yield b"id: %s\ndata: %s\n\n" % (str(e.position).encode(), data)
                after = batch[-1].position
                quiet_since = time.monotonic()
                retry = limits.poll_seconds
                continue
            left = limits.heartbeat_seconds - (time.monotonic() - quiet_since)
            if left <= 0:
                yield b": heartbeat\n\n"
                quiet_since = time.monotonic()
                continue
            timeout = min(left, retry)
            began = time.monotonic()
            await wake.wait(timeout)
            if time.monotonic() - began < timeout:
                # Woken: the event may not be readable yet (on PostgreSQL it waits for
                # older transactions), so if this read finds nothing, read again soon.
                retry = _FIRST_RETRY
            else:
                retry = min(retry * 2, limits.poll_seconds)
    finally:
        api.subscribers -= 1
