"""How `CommandHandler` reads a stream and folds it: the backend's one-trip read when it
has one, pages of events, and the fold of each page onto the state it starts from."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from .events import RecordedEvent
from .snapshots import Snapshot

__all__ = ["Fold", "ReadForLoad", "pages"]

S = TypeVar("S")


class ReadForLoad(Protocol):
    """A backend's one-trip read of what a load needs (``read_for_load``, optional).

    Returns the newest snapshot of ``state_type`` within the bounds, the stream's first
    page of events from that snapshot's version (inclusive; from 1 without one) up to
    ``max_version``, and the further pages (None when that page was the last). Backends
    without it are read with ``load_snapshot`` then ``read_stream``.
    """

    def __call__(
        self,
        stream_id: str,
        state_type: str,
        *,
        max_version: int | None = None,
        max_recorded_us: int | None = None,
    ) -> Awaitable[
        tuple[Snapshot | None, list[RecordedEvent], AsyncIterator[list[RecordedEvent]] | None]
    ]: ...


class Fold(Generic[S]):
    """Folds a load's events, a page at a time, onto the state it starts from.

    The first event of a load that starts from a snapshot is the snapshot's own: it is
    not folded again, only checked to be the very event the snapshot was taken at, in
    the very stream (reads of a replaced stream come from its replacement).
    ``max_us`` stops the fold at the first event recorded after it.
    """

    __slots__ = ("evolve", "max_us", "mismatch", "replayed", "snapshot", "state", "version")

    def __init__(
        self,
        evolve: Callable[[S, Any], S],
        state: S,
        version: int,
        snapshot: Snapshot | None,
        max_us: int | None,
    ) -> None:
        self.evolve = evolve
        self.state = state
        self.version = version
        self.snapshot = snapshot
        self.max_us = max_us
        self.replayed = 0
        self.mismatch = False

    def feed(self, page: Sequence[RecordedEvent]) -> bool:
        """Fold one page; False when the fold is over (a time bound, a bad snapshot)."""
        going = True
        snapshot = self.snapshot
        if snapshot is not None and page:
            self.snapshot = None
            head = page[0]
            if head.stream_id != snapshot.stream_id:
                # The stream was replaced (a stream transformation): a snapshot of the old
                # one says nothing about its replacement, even where the event ids match.
                self.mismatch = True
                return False
            if head.version == snapshot.version:
                if head.raw_event_id != snapshot.event_id:
                    self.mismatch = True
                    return False
                self.version = head.version
                page = page[1:]
        max_us = self.max_us
        if max_us is not None:
            for at, recorded in enumerate(page):
                if recorded.recorded_us > max_us:
                    page, going = page[:at], False
                    break
        if not page:
            return going
        evolve, state = self.evolve, self.state
        for recorded in page:
            state = evolve(state, recorded.data)
        self.state = state
        self.version = page[-1].version
        self.replayed += len(page)
        return going


async def pages(events: AsyncIterator[RecordedEvent]) -> AsyncIterator[list[RecordedEvent]]:
    """A store's events in pages (for backends without ``read_for_load``)."""
    page: list[RecordedEvent] = []
    try:
        async for recorded in events:
            page.append(recorded)
            if len(page) >= 256:
                yield page
                page = []
        if page:
            yield page
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
