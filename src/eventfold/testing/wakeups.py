"""The conformance suite of wake-ups at the tail (`eventfold.projections.Notifier`).

Subclass `WakeUpConformance` in a test module and provide a ``store`` fixture that
yields an open, empty store. Override:

- ``other_store`` to yield a second handle on the same database (another connection or
  pool, as another process would have), whose commits the notifier must hear too; the
  default is the same handle;
- ``notifier`` if the backend's notifier is not the one `notifier_for` picks;
- `WakeUpConformance.until_listening` if the notifier needs time to hear other handles'
  commits after its first `subscribe` (a ``LISTEN`` to set up, say).

A wake-up is a hint that saves a subscriber its poll interval; these tests check that a
commit gives that hint, never how fast. Async tests need pytest-asyncio with
``asyncio_mode = "auto"``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from eventfold import ANY, Event, EventStore
from eventfold.projections import Notifier, WakeUp, notifier_for

__all__ = ["WakeUpConformance"]

PATIENCE = 30.0
"""Seconds a commit's wake-up may take on a busy machine (a bound, not a speed)."""

LONG_WAIT = 4 * PATIENCE
"""How long the waiters wait: a wake-up is what ends their wait before this."""


class Pinged(Event):
    """The suite's event."""

    __event_type__ = "conformance.Pinged"
    n: int = 0


async def _ping(store: EventStore) -> None:
    await store.append("ping-1", [Pinged()], expected_version=ANY)


async def _waiting(wake: WakeUp) -> asyncio.Task[None]:
    """A waiter that has started its long wait, and was not woken without a commit."""
    task = asyncio.create_task(wake.wait(LONG_WAIT))
    await asyncio.sleep(0.05)
    assert not task.done(), "a waiter woke without a commit"
    return task


class WakeUpConformance:
    """Behaviour every notifier shares: a commit wakes the waiters, a wait times out."""

    @pytest.fixture
    def other_store(self, store: EventStore) -> EventStore:
        """A second handle on the same database; the same handle unless overridden."""
        return store

    @pytest.fixture
    async def notifier(self, store: EventStore) -> AsyncIterator[Notifier]:
        """The notifier for ``store``, closed after the test."""
        async with notifier_for(store) as wakeups:
            yield wakeups

    async def until_listening(self, notifier: Notifier) -> None:
        """Return once ``notifier`` hears commits made through other handles (called after
        its first `subscribe`); at once unless overridden. A notifier may wake its
        subscribers once as it starts listening; the tests wait for that first."""
        return None

    async def _started(self, notifier: Notifier) -> None:
        notifier.subscribe()
        await self.until_listening(notifier)

    async def test_a_commit_wakes_a_waiter(self, store: EventStore, notifier: Notifier) -> None:
        await self._started(notifier)
        waiting = await _waiting(notifier.subscribe())
        await _ping(store)
        await asyncio.wait_for(waiting, PATIENCE)

    async def test_a_commit_through_another_handle_wakes_a_waiter(
        self, other_store: EventStore, notifier: Notifier
    ) -> None:
        await self._started(notifier)
        waiting = await _waiting(notifier.subscribe())
        await _ping(other_store)
        await asyncio.wait_for(waiting, PATIENCE)

    async def test_one_commit_wakes_every_waiter(
        self, store: EventStore, notifier: Notifier
    ) -> None:
        await self._started(notifier)
        waiters = [await _waiting(notifier.subscribe()) for _ in range(3)]
        await _ping(store)
        await asyncio.wait_for(asyncio.gather(*waiters), PATIENCE)

    async def test_a_commit_between_two_waits_is_not_missed(
        self, store: EventStore, notifier: Notifier
    ) -> None:
        await self._started(notifier)
        wake = notifier.subscribe()
        await _ping(store)  # the subscriber is busy elsewhere: nobody waits yet
        await asyncio.wait_for(wake.wait(LONG_WAIT), PATIENCE)

    async def test_a_wait_with_no_commit_returns_after_its_timeout(
        self, notifier: Notifier
    ) -> None:
        await self._started(notifier)
        wake = notifier.subscribe()
        await asyncio.wait_for(wake.wait(0.05), PATIENCE)
