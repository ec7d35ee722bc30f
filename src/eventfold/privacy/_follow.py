"""Following the audit stream, so a forget made in any process reaches this one at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Self

from .._cancel import cancel_and_wait
from .._position import Position
from ..errors import InvalidInput, StoreClosed
from ..projections import Subscription
from ..store import EventStore
from ._audit import AUDIT_STREAM, SubjectForgotten

__all__ = ["DEFAULT_POLL_SECONDS", "MAX_BACKOFF", "Follower"]

DEFAULT_POLL_SECONDS = 1.0
"""How often a follower reads the log's new forgets. Forgets are rare: a steady poll
costs one small query a second per process, where waking on every append (LISTEN/NOTIFY)
would cost one per append per process."""

MAX_BACKOFF = 30.0
"""Seconds between two attempts of a failing follower, at most."""

_STOP_TIMEOUT = 5.0

_log = logging.getLogger("eventfold.privacy")


class Follower:
    """Tails `AUDIT_STREAM` from the log's head at entry, reading it every
    ``poll_seconds``, and hands each forgotten subject to ``forgotten`` (made by
    `Privacy.follow`; an async context manager, entered once)."""

    def __init__(
        self,
        store: EventStore,
        forgotten: Callable[[str], None],
        *,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
    ) -> None:
        if isinstance(poll_seconds, bool) or not isinstance(poll_seconds, int | float):
            raise InvalidInput(f"poll_seconds must be a number > 0, got {poll_seconds!r}")
        if not poll_seconds > 0:
            raise InvalidInput(f"poll_seconds must be > 0, got {poll_seconds!r}")
        self.store = store
        self._forgotten = forgotten
        self.poll_seconds = float(poll_seconds)
        self.position: Position | None = None
        """Every forget at or before this position has been handed over (None before
        entry)."""
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        if self._task is not None or self.position is not None:
            raise InvalidInput("a follower is entered once; call privacy.follow() again")
        self.position = await self.store.head()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="eventfold:privacy-follow"
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        stuck = [] if task is None else await cancel_and_wait([task], timeout=_STOP_TIMEOUT)
        if stuck:
            _log.warning("the privacy follower did not stop within %ss: %s", _STOP_TIMEOUT, stuck)

    @property
    def running(self) -> bool:
        """Whether the follower's task is running."""
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        """Follow until cancelled or the store is closed, retrying failures with backoff
        from the last position handed over (so no forget is skipped)."""
        failures = 0
        while True:
            try:
                subscription = Subscription(
                    self.store,
                    after=self.position,
                    types=[SubjectForgotten],
                    poll_interval=self.poll_seconds,
                )
                async for batch in subscription:
                    for event in batch.events:
                        data = event.data
                        if event.stream_id == AUDIT_STREAM and isinstance(data, SubjectForgotten):
                            self._forgotten(data.subject)
                    self.position = batch.through
                    failures = 0
            except StoreClosed:
                _log.debug("the store was closed: the privacy follower stops")
                return
            except Exception as exc:
                if await self._closed():
                    # Closed under a read: the driver's error says so less plainly.
                    _log.debug("the store was closed: the privacy follower stops")
                    return
                failures += 1
                delay = min(0.1 * 2 ** min(failures, 20), MAX_BACKOFF)
                _log.warning(
                    "following %s failed (%s: %s); retrying in %.1fs",
                    AUDIT_STREAM,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _closed(self) -> bool:
        """Whether the store is closed (a failed read may have been cut short by it)."""
        try:
            await self.store.head()
        except StoreClosed:
            return True
        except Exception:
            return False
        return False
