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
import logging
from types import TracebackType
from typing import Any, Self

from ..store.protocol import EventStore
from .shutdown import cancel_and_wait
from .subscription import Signal, WakeUp

__all__ = ["SQLITE_POLL", "StoreWakeUps", "notifier_for"]

SQLITE_POLL = 0.01
"""Seconds between two ``PRAGMA data_version`` polls of a SQLite file."""

log = logging.getLogger("eventfold.projections")


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
        committed = getattr(self.store, "committed", None)
        self._remove = committed.add(self.notify) if committed is not None else (lambda: None)
        backend = self.store.backend
        if backend == "sqlite":
            self._task = asyncio.get_running_loop().create_task(
                self._poll_sqlite(), name="eventfold:wakeups"
            )
        elif backend == "postgresql":
            self._task = asyncio.get_running_loop().create_task(
                self._listen(), name="eventfold:wakeups"
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

    async def _poll_sqlite(self) -> None:
        import sqlite3

        path: str = self.store.path  # type: ignore[attr-defined]
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            seen = conn.execute("PRAGMA data_version").fetchone()[0]
            while True:
                await asyncio.sleep(self.sqlite_poll)
                try:
                    now = conn.execute("PRAGMA data_version").fetchone()[0]
                except sqlite3.Error as exc:  # a hint: subscribers poll anyway
                    log.debug("cannot poll %s for changes: %s", path, exc)
                    continue
                if now != seen:
                    seen = now
                    self.notify()
        finally:
            conn.close()

    async def _listen(self) -> None:
        from psycopg import sql as _pgsql

        store: Any = self.store
        statement = _pgsql.SQL("LISTEN {}").format(_pgsql.Identifier(store.channel))
        backoff = 0.1
        while True:
            try:
                conn = await store.connect_direct()
                async with conn:
                    await conn.execute(statement)
                    self.listening = True
                    backoff = 0.1
                    self.notify()  # anything appended while we were not listening
                    async for _ in conn.notifies():
                        self.notify()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "the LISTEN connection for wake-ups failed (%s); polling until it is back",
                    exc,
                )
            self.listening = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


def notifier_for(store: EventStore, **options: Any) -> StoreWakeUps:
    """The wake-ups that suit ``store``'s backend (see `StoreWakeUps`)."""
    return StoreWakeUps(store, **options)
