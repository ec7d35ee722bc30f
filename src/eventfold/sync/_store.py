"""The blocking event store: `connect` and `EventStore`, over the async store."""

from __future__ import annotations

import itertools
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

from .. import store as _async
from .._codec import DEFAULT_MAX_EVENT_SIZE
from .._events import Event, NewEvent, RecordedEvent, TypeRegistry
from .._position import ExpectedVersion, Position
from ..errors import StoreClosed
from ..store import AppendResult, StoreStats, StreamInfo
from ..store.connect import detect_producer_version
from ..store.kit import PAGE_SIZE
from ._bridge import Runner

__all__ = ["EventStore", "connect"]

T = TypeVar("T")

_ids = itertools.count(1)


def connect(
    url: str | None = None,
    *,
    registry: TypeRegistry | None = None,
    max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
    producer_version: str | None = None,
    read_only: bool = False,
) -> EventStore:
    """Make a blocking store for ``url``; open it with ``with store:`` (or `open`).

    The arguments, their defaults and their errors are `eventfold.connect`'s.
    """
    if producer_version is None:
        # Found here, from the caller's module: `eventfold.connect` would find this one.
        caller = sys._getframe(1).f_globals.get("__name__")
        producer_version = detect_producer_version(caller if isinstance(caller, str) else None)
    store = _async.connect(
        url,
        registry=registry,
        max_event_size=max_event_size,
        producer_version=producer_version or "",
        read_only=read_only,
    )
    return EventStore(store)


class EventStore:
    """An `eventfold.EventStore` for blocking code: the same methods, arguments, results
    and errors, each call blocking until it is done; reads are plain iterators that page
    through the store as the async ones do.

    The async store runs on an event loop in a thread of this store's own, started at the
    first `open` and stopped (joined) at the last `close`, or at interpreter exit. Any
    number of threads may share one store (a threaded WSGI server); an iterator belongs
    to the thread that iterates it. Every method's docstring is the async one's, in
    `eventfold.EventStore`.
    """

    def __init__(self, store: _async.EventStore) -> None:
        self.async_store = store
        """The async store underneath: await it only through `run`, on the store's thread."""
        self.backend = store.backend
        self._runner: Runner | None = None
        self._opens = 0
        self._lifecycle = threading.Lock()

    def __repr__(self) -> str:
        state = "open" if self._opens else "closed"
        return f"<eventfold.sync.EventStore {state} over {self.async_store!r}>"

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> None:
        """Start the store's thread and open the async store (see `EventStore.open`).

        Opens nest as they do in the async store: each needs its own `close`.
        """
        with self._lifecycle:
            runner = self._runner
            if runner is None:
                runner = Runner(f"eventfold-sync-{next(_ids)}", self._describe())
                runner.on_stop(self._close_all)
            try:
                runner.call(self.async_store.open())
            except BaseException:
                if self._opens == 0:
                    runner.stop()
                raise
            self._runner = runner
            self._opens += 1

    def close(self) -> None:
        """Count one open as closed; at the last, close the async store and stop (join)
        the store's thread. Closing a closed store does nothing."""
        with self._lifecycle:
            runner = self._runner
            if runner is None or self._opens == 0:
                return
            try:
                runner.call(self.async_store.close())
            finally:
                self._opens -= 1
                if self._opens == 0:
                    self._runner = None
                    runner.stop()

    async def _close_all(self) -> None:
        # At interpreter exit, for a store nobody closed.
        while self._opens > 0:
            self._opens -= 1
            await self.async_store.close()

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def thread(self) -> threading.Thread | None:
        """The thread the async store runs on while the store is open, else None."""
        runner = self._runner
        return runner.thread if runner is not None else None

    def _describe(self) -> str:
        return f"the blocking {self.backend} store: `with store:` or `store.open()`"

    def _live_runner(self) -> Runner:
        runner = self._runner
        if runner is None:
            raise StoreClosed(self._describe())
        return runner

    # -- the bridge --------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine of the async API on the store's loop and block for its result.

        For what has no blocking form here, e.g.
        ``store.run(eventfold.transform(store.async_store, ...))``.
        """
        try:
            runner = self._live_runner()
        except StoreClosed:
            coro.close()
            raise
        return runner.call(coro)

    def iterate(self, source: AsyncIterator[T], *, page_size: int = PAGE_SIZE) -> Iterator[T]:
        """An async iterator of the async API as a plain one, ``page_size`` items per
        trip to the store's loop."""
        return self._live_runner().iterate(source, page_size=page_size)

    # -- the EventStore port -----------------------------------------------------------

    def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent],
        *,
        expected_version: ExpectedVersion,
    ) -> AppendResult:
        """See `eventfold.EventStore.append`."""
        return self.run(
            self.async_store.append(stream_id, events, expected_version=expected_version)
        )

    def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
        follow_alias: bool = True,
    ) -> Iterator[RecordedEvent]:
        """See `eventfold.EventStore.read_stream`."""
        return self.iterate(
            self.async_store.read_stream(
                stream_id,
                from_version=from_version,
                backwards=backwards,
                limit=limit,
                follow_alias=follow_alias,
            )
        )

    def find_events(self, stream_id: str, event_ids: Sequence[uuid.UUID]) -> list[RecordedEvent]:
        """See `eventfold.EventStore.find_events`."""
        return self.run(self.async_store.find_events(stream_id, event_ids))

    def stream_version(self, stream_id: str) -> int:
        """See `eventfold.EventStore.stream_version`."""
        return self.run(self.async_store.stream_version(stream_id))

    def stream_info(self, stream_id: str) -> StreamInfo:
        """See `eventfold.EventStore.stream_info`."""
        return self.run(self.async_store.stream_info(stream_id))

    def read_all(
        self,
        *,
        after: Position | str | None = None,
        types: Sequence[str | type[Event]] | None = None,
        categories: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> Iterator[RecordedEvent]:
        """See `eventfold.EventStore.read_all`."""
        return self.iterate(
            self.async_store.read_all(after=after, types=types, categories=categories, limit=limit)
        )

    def head(self) -> Position:
        """See `eventfold.EventStore.head`."""
        return self.run(self.async_store.head())

    def streams(
        self,
        *,
        after: str | None = None,
        category: str | None = None,
        limit: int | None = None,
    ) -> Iterator[StreamInfo]:
        """See `eventfold.EventStore.streams`."""
        return self.iterate(self.async_store.streams(after=after, category=category, limit=limit))

    def stats(self) -> StoreStats:
        """See `eventfold.EventStore.stats`."""
        return self.run(self.async_store.stats())
