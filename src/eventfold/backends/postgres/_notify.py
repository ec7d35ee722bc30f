"""Wake-up hints on PostgreSQL: ``pg_notify`` after commit, debounced per process.

A ``NOTIFY`` inside the append transaction would take PostgreSQL's database-wide commit
lock and halve append throughput (storage design §3.1, measured). So the hint is sent
*after* the append commits, in its own autocommit statement on a pooled connection, and
at most once per `DEBOUNCE` seconds per process: the first commit after a quiet spell
sends at once (no added latency), commits during the next interval share one trailing
hint. The notification carries no data; listeners read the log again, and keep polling
as the fallback, so a lost hint only adds delay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["DEBOUNCE", "NotifySender", "channel_name"]

DEBOUNCE = 0.01
"""Seconds between two hints sent by one process."""

log = logging.getLogger("eventfold.postgres")


def channel_name(schema: str) -> str:
    """The channel a store's appends notify: one per eventfold schema."""
    return f"eventfold.{schema}"


class NotifySender:
    """Sends one debounced ``pg_notify`` per burst of commits (call `poke` after each)."""

    __slots__ = ("_last", "_run", "_task", "_waiting", "interval")

    def __init__(self, run: Callable[[], Awaitable[Any]], *, interval: float = DEBOUNCE) -> None:
        self._run = run
        self.interval = interval
        self._last = 0.0
        self._task: asyncio.Task[None] | None = None
        self._waiting = False

    def poke(self) -> None:
        """Note a commit: a hint goes out now, or at the end of the current interval."""
        if self._task is not None and not self._task.done():
            self._waiting = True
            return
        self._waiting = False
        self._task = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        while True:
            delay = self._last + self.interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._waiting = False
            self._last = time.monotonic()
            try:
                await self._run()
            except Exception as exc:  # a hint: listeners poll anyway
                log.debug("could not send the wake-up notification: %s", exc)
            if not self._waiting:
                return

    async def close(self) -> None:
        """Send the hint still owed, then stop."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            await asyncio.gather(task, return_exceptions=True)
