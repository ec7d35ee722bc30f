"""Wake-ups for subscribers at the tail, per backend: hints that new events may be there.

A subscriber at the tail waits on a `WakeUp` and then reads the log again, so a hint only
saves time; a missed one costs the poll interval at most. What each backend offers:

- every backend: appends made **in this process** wake subscribers at once (the store's
  ``committed`` listeners);
- SQLite: appends made **by other processes** on the same file are seen by polling
  ``PRAGMA data_version`` on a connection of its own (a few microseconds per poll, every
  `SQLITE_POLL` seconds);
- PostgreSQL: a ``LISTEN`` on one direct connection hears the debounced ``pg_notify`` that
  every eventfold process sends after its appends commit, from any machine. When the
  connection drops it is reopened with backoff, and subscribers poll meanwhile.

`notifier_for` picks the right one; ``async with`` (or `close`) stops its background work.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any, Self

from ..store import backend_of
from ..store.ports import SupportsCommitListeners
from ..store.protocol import EventStore
from .shutdown import cancel_and_wait
from .subscription import Signal, WakeUp

__all__ = ["SQLITE_POLL", "StoreWakeUps", "notifier_for"]

SQLITE_POLL = 0.01
"""Seconds between two ``PRAGMA data_version`` polls of a SQLite file."""


class StoreWakeUps:
    """The wake-ups of one event store (see the module docstring for what each hears).

    Background work (the SQLite poll, the PostgreSQL ``LISTEN``) starts with the first
    `subscribe`, which must run on the event loop.
    """

    def __init__(self, store: EventStore, *, sqlite_poll: float = SQLITE_POLL) -> None:
        self.store = store
        self.sqlite_poll = sqlite_poll
        self._signal = Signal()
        self._task: asyncio.Task[None] | None = None
        self._remove: Any = None
        self.listening = False
        """PostgreSQL: whether the ``LISTEN`` connection is up right now."""

    def subscribe(self) -> WakeUp:
        """A `WakeUp` for one subscriber."""
        self._start()
        return self._signal.subscribe()

    def notify(self) -> None:
        """Wake every subscriber now (also what the listeners call)."""
        self._signal.notify()

    def _start(self) -> None:
        if self._remove is not None:
            return
        store = self.store
        if isinstance(store, SupportsCommitListeners):
            self._remove = store.committed.add(self.notify)
        else:
            self._remove = lambda: None
        backend = backend_of(store)
        if backend is not None and backend.wake_ups is not None:
            self._task = asyncio.get_running_loop().create_task(
                backend.wake_ups(self), name="eventfold:wakeups"
            )

    async def close(self, *, timeout: float = 5.0) -> list[str]:  # noqa: ASYNC109
        """Stop listening within ``timeout`` seconds; safe to call twice. Returns the name
        of the background task if it had not stopped by then."""
        remove, self._remove = self._remove, None
        if remove is not None:
            remove()
        task, self._task = self._task, None
        stuck = [] if task is None else await cancel_and_wait([task], timeout=timeout)
        self.listening = False
        return stuck

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def notifier_for(store: EventStore, **options: Any) -> StoreWakeUps:
    """The wake-ups that suit ``store``'s backend (see `StoreWakeUps`)."""
    return StoreWakeUps(store, **options)
