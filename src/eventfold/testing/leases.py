"""The conformance suite of projection leases (`eventfold.projections.Leases`).

Subclass `LeaseConformance` in a test module and provide:

- ``leases``: the `Leases` under test, holding nothing yet;
- ``rival``: a contender for the same keys, as another process would have (the same
  object for leases that live in one process; the default);
- ``lose_lease``: an async callable ``lose_lease(leases, lease)`` that takes ``lease``
  from its holder the way a crash or a dropped connection would.

A lease keeps the same partition from being worked on twice; the compare-and-set
checkpoint (`ReadModelStoreConformance`) keeps a holder that lost its lease from applying
work twice. Async tests need pytest-asyncio with ``asyncio_mode = "auto"``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from eventfold.projections import Lease, Leases, lease_key

__all__ = ["LeaseConformance", "LoseLease"]

LoseLease = Callable[[Leases, Lease], Awaitable[None]]
"""What the ``lose_lease`` fixture gives: take a lease from its holder as a crash would."""

PATIENCE = 30.0
"""Seconds a lost lease may take to read as lost, or to be free for a rival: a bound for
a busy machine, not a speed anyone relies on."""

KEY = lease_key("orders", 1, 0, 1)


async def _eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + PATIENCE
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} within {PATIENCE} s")
        await asyncio.sleep(0.02)


class LeaseConformance:
    """Behaviour every `Leases` shares: one holder per key at a time."""

    @pytest.fixture
    def rival(self, leases: Leases) -> Leases:
        """Another contender for the same keys; the same object unless overridden."""
        return leases

    async def test_one_owner_at_a_time(self, leases: Leases, rival: Leases) -> None:
        lease = await leases.acquire(KEY, "a")
        assert lease is not None
        assert isinstance(lease, Lease)
        assert (lease.key, lease.held()) == (KEY, True)
        assert await rival.acquire(KEY, "b") is None
        # The holder asking again keeps what it holds.
        again = await leases.acquire(KEY, "a")
        assert again is not None
        assert again.held()
        assert lease.held()
        assert await rival.acquire(KEY, "b") is None
        # Other keys are apart.
        other = await rival.acquire(lease_key("orders", 1, 1, 2), "b")
        assert other is not None
        assert other.held()
        assert await leases.acquire(lease_key("orders", 1, 1, 2), "a") is None
        assert lease.held()

    async def test_a_released_lease_is_free_for_another_owner(
        self, leases: Leases, rival: Leases
    ) -> None:
        lease = await leases.acquire(KEY, "a")
        assert lease is not None
        await lease.release()
        assert not lease.held()
        await lease.release()  # twice is safe
        taken = await rival.acquire(KEY, "b")
        assert taken is not None
        assert taken.held()
        assert await leases.acquire(KEY, "a") is None
        await taken.release()
        back = await leases.acquire(KEY, "a")
        assert back is not None
        assert back.held()

    async def test_another_owner_takes_over_and_the_old_holder_is_fenced_out(
        self, leases: Leases, rival: Leases, lose_lease: LoseLease
    ) -> None:
        lease = await leases.acquire(KEY, "a")
        assert lease is not None
        await lose_lease(leases, lease)

        async def lost() -> bool:
            return not lease.held()

        await _eventually(lost, "the lost lease still read as held")
        taken: list[Lease] = []

        async def take() -> bool:
            found = await rival.acquire(KEY, "b")
            if found is not None:
                taken.append(found)
            return found is not None

        await _eventually(take, "no rival could take the lease over")
        (new,) = taken
        assert new.held()
        # The old holder cannot get it back, and giving up what it no longer holds
        # leaves the new holder's lease alone.
        assert await leases.acquire(KEY, "a") is None
        await lease.release()
        assert new.held()
        assert not lease.held()
        assert await leases.acquire(KEY, "a") is None
