"""Finding a stored event that no longer decodes, without decoding it.

A page of ``read_all`` fails as a whole when one of its events does not decode (a payload
written by another producer, a class that gained a required field without an upcaster).
A projection treats such an event as a poison event (parked, or the projection stopped,
by its policy), so it needs the events before it and its position, which the store's
port only hands out decoded. Both are found with reads that never reach past it: the
longest prefix of the page that decodes, then the smallest position to read after that
skips the event. A read after a position returns the first matching event after it, so
"reading after Q fails on this very event" holds for every Q from the last good event up
to the bad one and for no Q beyond: a bisection, a few dozen one-event reads, paid only
when a bad event is met.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .._events import Event, RecordedEvent
from .._position import Position
from ..errors import DecodeError
from ..store.protocol import EventStore

__all__ = ["Undecodable", "aclose", "read_page"]

_MAX_SEQ = 2**63 - 1
"""Above every sequence number a store hands out (PostgreSQL's bigint)."""


async def aclose(iterator: AsyncIterator[Any]) -> None:
    """Close an async iterator left early (a store's reader holds a page or a cursor)."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A stored event that does not decode: where it is and why."""

    position: Position
    stream_id: str
    """The stream, as the decode error names it (``""`` when it names none)."""
    type: str
    error: DecodeError


async def _read(
    store: EventStore,
    after: Position,
    types: Sequence[str | type[Event]] | None,
    categories: Sequence[str] | None,
    limit: int,
) -> list[RecordedEvent]:
    reader = store.read_all(after=after, types=types, categories=categories, limit=limit)
    try:
        return [event async for event in reader]
    finally:
        await aclose(reader)


async def read_page(
    store: EventStore,
    *,
    after: Position,
    types: Sequence[str | type[Event]] | None,
    categories: Sequence[str] | None,
    limit: int,
) -> tuple[list[RecordedEvent], Undecodable | None]:
    """Up to ``limit`` matching events after ``after``; when one does not decode, the
    events before it and the `Undecodable` one instead of the rest."""
    try:
        return await _read(store, after, types, categories, limit), None
    except DecodeError:
        pass

    async def decodes(m: int) -> bool:
        try:
            await _read(store, after, types, categories, m)
        except DecodeError:
            return False
        return True

    # The longest prefix that decodes: reading m events fails iff the bad one is among them.
    good_count = await _bisect(0, limit, decodes) - 1
    good = await _read(store, after, types, categories, good_count) if good_count else []
    last = good[-1].position if good else after
    try:
        await _read(store, last, types, categories, 1)
    except DecodeError as exc:
        error = exc
    else:  # it decodes now (a registry changed under us): read the page again
        return await _read(store, after, types, categories, limit), None
    position = await _locate(store, last, types, categories, str(error))
    stream_id = error.where.rpartition("@")[0]
    return good, Undecodable(position, stream_id, error.event_type, error)


async def _locate(
    store: EventStore,
    last: Position,
    types: Sequence[str | type[Event]] | None,
    categories: Sequence[str] | None,
    message: str,
) -> Position:
    """The position of the first matching event after ``last``, which fails to decode
    with ``message``."""

    async def before_it(q: Position) -> bool:
        try:
            await _read(store, q, types, categories, 1)
        except DecodeError as exc:
            return str(exc) == message
        return False

    async def before_its_tx(tx: int) -> bool:
        return await before_it(Position(tx, _MAX_SEQ))

    async def before_its_seq(seq: int) -> bool:
        return await before_it(Position(tx, seq))

    head = await store.head()
    # First the transaction part (always 0 on the embedded backends), then the sequence.
    tx = last.tx
    if await before_its_tx(tx):
        tx = await _bisect(last.tx, head.tx, before_its_tx)
    low = last.seq if tx == last.tx else 0
    high = head.seq if tx == head.tx else _MAX_SEQ
    return Position(tx, await _bisect(low, high, before_its_seq))


async def _bisect(lo: int, hi: int, holds: Callable[[int], Awaitable[bool]]) -> int:
    """The smallest n in (lo, hi] for which ``holds`` is false, given that it holds at
    ``lo``, not at ``hi``, and changes once in between."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if await holds(mid):
            lo = mid
        else:
            hi = mid
    return hi
