"""Subscriptions: catch up from a checkpoint, then follow the live tail, in batches.

A subscription pages through ``read_all(after=…, types=…, categories=…, limit=…)``. Once a
read comes back short it is at the tail: it waits on a `WakeUp` (polling by default; a
backend may wake it early — LISTEN/NOTIFY, an in-process `Signal`) and reads again.

Each `Batch` carries ``through``: every matching event at or before it has been handed
over. It moves past events the filters skip, so a projection of rare events still
reaches the head (and ``wait_for(head)`` returns). The head is read *before* the page:
a short page then holds every matching event up to that head, which is what makes
``through = head`` safe on PostgreSQL too, where the head is the xid horizon's.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from .._events import Event, RecordedEvent
from .._position import START, Position
from ..errors import InvalidInput
from ..store.ports import Notifier, WakeUp
from ..store.protocol import EventStore
from ._undecodable import Undecodable, aclose, read_page

__all__ = [
    "Batch",
    "Notifier",
    "Polling",
    "Signal",
    "Subscription",
    "WakeUp",
    "aclose",
    "partition_of",
]

DEFAULT_BATCH_SIZE = 500
DEFAULT_POLL_INTERVAL = 0.25
"""Seconds between polls at the tail (Marten's fast polling default)."""


def partition_of(stream_id: str, partitions: int) -> int:
    """The partition (0 … partitions-1) a stream belongs to: CRC-32 of its UTF-8 id.

    Stable across processes, machines and Python versions (unlike ``hash``), so every
    worker agrees which streams are whose, and a stream's events stay in one partition,
    in order.
    """
    return zlib.crc32(stream_id.encode()) % partitions


class Polling:
    """No hint at all: wait the whole interval, then poll (always correct)."""

    async def wait(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def subscribe(self) -> WakeUp:
        return self


class Signal:
    """An in-process notifier: `notify` wakes every subscriber early.

    A subscriber that was busy when `notify` ran returns at once from its next wait, so no
    hint is lost between two waits. Call `notify` from the event loop's thread (from
    another thread: ``loop.call_soon_threadsafe(signal.notify)``).
    """

    def __init__(self) -> None:
        self._generation = 0
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Wake every subscriber."""
        self._generation += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    def subscribe(self) -> WakeUp:
        return _Listener(self)


class _Listener:
    def __init__(self, signal: Signal) -> None:
        self._signal = signal
        self._seen = signal._generation

    async def wait(self, seconds: float) -> None:
        signal = self._signal
        if signal._generation == self._seen:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for may swallow a
            # cancellation that lands as the event fires, and the worker never stops.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await signal._event.wait()
        self._seen = signal._generation


@dataclass(frozen=True, slots=True)
class Batch:
    """Events handed over together, and how far they cover the log."""

    events: list[RecordedEvent]
    """This partition's matching events, in log order (may be empty: ``through`` moved
    past other events, or the subscription just reached the tail)."""
    through: Position
    """Every matching event at or before this position is in this batch or an earlier one."""
    tail: bool
    """The read reached the end of the log as it then stood."""
    undecodable: Undecodable | None = None
    """An event of this partition, right after ``events``, that does not decode: the
    batch's ``through`` is its position, and moving the checkpoint there skips it."""


class Subscription:
    """Batches of the log after a position, filtered, optionally one partition's share.

    ``partition`` is ``(k, n)``: only streams with ``partition_of(stream_id, n) == k``.
    ``ceiling`` bounds how far the subscription goes (it re-reads the bound before each
    page); a projection uses its dependencies' checkpoints. ``follow=False`` stops at
    the tail instead of waiting for more.

    ::

        async for batch in Subscription(store, after=checkpoint, types=["OrderPlaced"]):
            ...  # apply batch.events, then store batch.through
    """

    def __init__(
        self,
        store: EventStore,
        *,
        after: Position | str | None = None,
        types: Sequence[str | type[Event]] | None = None,
        categories: Sequence[str] | None = None,
        partition: tuple[int, int] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        wake: WakeUp | None = None,
        ceiling: Callable[[], Awaitable[Position]] | None = None,
        follow: bool = True,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInput(f"batch_size must be an int >= 1, got {batch_size!r}")
        if poll_interval <= 0:
            raise InvalidInput(f"poll_interval must be > 0 seconds, got {poll_interval!r}")
        if partition is not None:
            k, n = partition
            if not (isinstance(n, int) and n >= 1 and isinstance(k, int) and 0 <= k < n):
                raise InvalidInput(f"partition must be (k, n) with 0 <= k < n, got {partition!r}")
        self.store = store
        self.position = START if after is None else Position.parse(after)
        """Where the next batch starts (exclusive): the last batch's ``through``."""
        self.types = None if types is None else list(types)
        self.categories = None if categories is None else list(categories)
        self.partition = partition
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.wake: WakeUp = wake or Polling()
        self.ceiling = ceiling
        self.follow = follow

    def __aiter__(self) -> AsyncIterator[Batch]:
        return self.batches()

    async def batches(self) -> AsyncIterator[Batch]:
        """The batches, forever (or to the tail when ``follow`` is False)."""
        need_head = True
        at_tail = False
        while True:
            after = self.position
            head = await self.store.head() if need_head else None
            ceiling = await self.ceiling() if self.ceiling is not None else None
            events, bad = await read_page(
                self.store,
                after=after,
                types=self.types,
                categories=self.categories,
                limit=self.batch_size,
            )
            # A bad event ends the page early: there may be more after it.
            full = len(events) == self.batch_size or bad is not None
            through = bad.position if bad else events[-1].position if events else after
            if not full and head is not None and head > through:
                through = head
            if ceiling is not None and through > ceiling:
                events = [e for e in events if e.position <= ceiling]
                through = max(after, ceiling)
                full, bad = False, None
            mine = events if self.partition is None else self._mine(events)
            if bad is not None and self.partition is not None:
                k, n = self.partition
                bad = bad if partition_of(bad.stream_id, n) == k else None
            # Reaching the tail is news even when nothing moved (a rebuild swaps then).
            if through > after or (not full and not at_tail):
                self.position = through
                at_tail = not full
                yield Batch(mine, through, tail=not full, undecodable=bad)
            if full:
                need_head = False
                continue
            if not need_head:
                need_head = True  # a short page read without a head: read the head now
                continue
            if not self.follow:
                return
            await self.wake.wait(self.poll_interval)

    def _mine(self, events: list[RecordedEvent]) -> list[RecordedEvent]:
        assert self.partition is not None
        k, n = self.partition
        return [e for e in events if partition_of(e.stream_id, n) == k]
