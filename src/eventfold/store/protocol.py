"""The narrow port every backend implements, and the small records it returns."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

import msgspec

from .._events import Event, NewEvent, RecordedEvent
from .._position import ExpectedVersion, Position

__all__ = ["AppendResult", "EventStore", "StoreStats", "StreamInfo"]


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did: the stream's new version and the last event's position.

    Two results are equal when version and position are; ``retry`` only says how this
    one came about.
    """

    version: int
    """The stream's version after the append (its number of events)."""
    position: Position
    """The global position of the last appended event."""
    retry: bool = field(default=False, compare=False)
    """True when the events were already stored (a retry): nothing new was appended."""


class StreamInfo(msgspec.Struct, frozen=True):
    """One stream in a listing."""

    stream_id: str
    version: int
    replaced_by: str | None = None
    """The stream that replaced this one (a stream transformation), or None.

    A replaced stream keeps its events, but reads of it follow the alias to that stream
    and appends to it fail with `eventfold.StreamReplaced`."""


class StoreStats(msgspec.Struct, frozen=True):
    """What a store holds, for operators."""

    backend: str
    head: Position
    streams: int
    events: int
    epoch: int | None = None
    """PostgreSQL: the global log's epoch (it moves on when a logical copy of the store
    opens on a server whose transaction counter is behind it); None elsewhere."""


@runtime_checkable
class EventStore(Protocol):
    """An append-only event store: streams with optimistic concurrency and a global log.

    Open it with ``async with store:`` (or `open`/`close`); opening creates or migrates
    the store's tables. Opens nest: each `open` (or ``async with`` block) needs its own
    `close`, and the store closes at the last one, so an inner block never closes the
    store under an outer one. Reads are async iterators that page through the database,
    so memory stays flat however long the stream or the log.
    """

    backend: str
    """The backend's name: ``memory``, ``sqlite`` or ``postgresql``."""

    async def open(self) -> None:
        """Connect, and create or migrate the store's tables; on an open store, only
        count one more open."""

    async def close(self) -> None:
        """Count one open as closed; release connections when it was the last. Closing a
        closed store does nothing."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent],
        *,
        expected_version: ExpectedVersion,
    ) -> AppendResult:
        """Append all of ``events`` to the stream, or none of them.

        ``expected_version`` is the version the caller read (0: no events yet), or `ANY`,
        `NO_STREAM`, `STREAM_EXISTS`; a mismatch raises `WrongExpectedVersion`.
        Appending events whose explicit ids are already in the stream, in the same order
        and with the same content, returns the first append's result and stores nothing.
        """
        ...

    def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
        follow_alias: bool = True,
    ) -> AsyncIterator[RecordedEvent]:
        """The stream's events from ``from_version`` (inclusive), forwards or backwards.

        Forwards starts at version 1 by default, backwards at the newest event. The
        events of a stream a transformation replaced are read from its replacement
        (their ``stream_id`` says which); ``follow_alias=False`` reads the originals.
        """
        ...

    async def find_events(
        self, stream_id: str, event_ids: Sequence[uuid.UUID]
    ) -> list[RecordedEvent]:
        """The stream's events with these ids, in stream order (missing ids are skipped).

        A replaced stream's events are looked up in its replacement.
        """
        ...

    async def stream_version(self, stream_id: str) -> int:
        """The stream's version: its number of events, 0 when it has none.

        For a replaced stream, its replacement's version.
        """
        ...

    async def stream_info(self, stream_id: str) -> StreamInfo:
        """The stream's own version and what replaced it, without following any alias.

        A stream with no events is ``StreamInfo(stream_id, 0)``.
        """
        ...

    def read_all(
        self,
        *,
        after: Position | str | None = None,
        types: Sequence[str | type[Event]] | None = None,
        categories: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """The global log after ``after`` (exclusive), in log order, optionally filtered.

        A category is the part of a stream id before its first ``-``.
        """
        ...

    async def head(self) -> Position:
        """The position of the newest readable event (`START` when there is none)."""
        ...

    def streams(
        self,
        *,
        after: str | None = None,
        category: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[StreamInfo]:
        """Streams with their versions, ordered by id, starting after the id ``after``."""
        ...

    async def stats(self) -> StoreStats:
        """The backend's name, the head, and how many streams and events it holds."""
        ...
