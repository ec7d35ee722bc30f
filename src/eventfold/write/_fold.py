"""How `CommandHandler` reads a stream and folds it: the backend's one-trip read when it
has one, pages of events, and the fold of each page onto the state it starts from."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .._codec import LoadRow
from .._events import RecordedEvent
from .._personal import SubjectScan
from ..store.ports import LoadRows, Snapshot

if TYPE_CHECKING:
    from ..store.protocol import EventStore

__all__ = ["Fold", "LoadRow", "LoadRows", "ReadForLoad", "rows_from_stream", "snapshot_fits"]

S = TypeVar("S")


class ReadForLoad(Protocol):
    """A backend's one-trip read of what a load needs (``read_for_load``, optional).

    Returns the newest snapshot of ``state_type`` within the bounds, the anchor that
    checks it, and the stream's events after it up to ``max_version`` (`LoadRows`).
    Backends without it are read with ``load_snapshot`` then ``read_stream``
    (`rows_from_stream`).
    """

    def __call__(
        self,
        stream_id: str,
        state_type: str,
        *,
        max_version: int | None = None,
        max_recorded_us: int | None = None,
    ) -> Awaitable[LoadRows]: ...


def snapshot_fits(snapshot: Snapshot, rows: LoadRows) -> bool:
    """Whether ``snapshot`` was taken of the stream the load reads, at the very event
    stored at its version there (a transformation replaces streams; a snapshot of the old
    one says nothing about its replacement, even where the event ids match)."""
    return snapshot.stream_id == rows.stream_id and snapshot.event_id == rows.anchor


class Fold(Generic[S]):
    """Folds a load's events, a page at a time, onto the state it starts from.

    ``max_us`` stops the fold at the first event recorded after it. ``scan`` notes the
    data subjects of the personal fields folded (a snapshot of the state is sealed for
    them).
    """

    __slots__ = ("evolve", "max_us", "replayed", "scan", "state", "version")

    def __init__(
        self,
        evolve: Callable[[S, Any], S],
        state: S,
        version: int,
        max_us: int | None,
        scan: SubjectScan,
    ) -> None:
        self.evolve = evolve
        self.state = state
        self.version = version
        self.max_us = max_us
        self.scan = scan
        self.replayed = 0

    def feed(self, page: Sequence[LoadRow]) -> bool:
        """Fold one page; False when the fold is over (a time bound)."""
        going = True
        max_us = self.max_us
        if max_us is not None:
            for at, row in enumerate(page):
                if row[2] > max_us:
                    page, going = page[:at], False
                    break
        if not page:
            return going
        evolve, state = self.evolve, self.state
        for row in page:
            state = evolve(state, row[1])
        self.state = state
        self.scan.rows(page)
        self.version = page[-1][0]
        self.replayed += len(page)
        return going


async def rows_from_stream(
    store: EventStore, stream_id: str, snapshot: Snapshot | None, limit: int | None
) -> LoadRows:
    """`LoadRows` read with ``read_stream`` (for backends without ``read_for_load``): from
    the snapshot's own event, which gives the anchor, then the events after it, at most
    ``limit`` events in all."""
    events = store.read_stream(
        stream_id, from_version=snapshot.version if snapshot is not None else 1, limit=limit
    )
    head: RecordedEvent | None = None
    if snapshot is not None:
        async for recorded in events:
            head = recorded
            break
        if head is None or head.version != snapshot.version:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
            sid = head.stream_id if head is not None else stream_id
            return LoadRows(snapshot, sid, None, [], None)
    sid = head.stream_id if head is not None else stream_id
    anchor = head.raw_event_id if head is not None else None
    return LoadRows(snapshot, sid, anchor, [], _pages(events))


async def _pages(events: AsyncIterator[RecordedEvent]) -> AsyncIterator[list[LoadRow]]:
    page: list[LoadRow] = []
    try:
        async for recorded in events:
            page.append((recorded.version, recorded.data, recorded.recorded_us))
            if len(page) >= 256:
                yield page
                page = []
        if page:
            yield page
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
