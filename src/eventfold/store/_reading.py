"""Reads any `EventStore` answers through its protocol alone."""

from __future__ import annotations

from .._events import RecordedEvent
from .._position import Position
from .protocol import EventStore

__all__ = ["event_at"]


async def event_at(store: EventStore, position: Position) -> RecordedEvent | None:
    """The event at exactly ``position`` of ``store``'s log, or None when no event is
    there (`DecodeError` if it does not decode)."""
    if position.seq == 0:
        return None
    reader = store.read_all(after=Position(position.tx, position.seq - 1), limit=1)
    try:
        found = await anext(aiter(reader), None)
    finally:
        close = getattr(reader, "aclose", None)
        if close is not None:
            await close()
    return found if found is not None and found.position == position else None
