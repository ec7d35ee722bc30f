"""Wake-ups at the tail and projection leases over every backend: the shipped suites
(`WakeUpConformance` over each backend's notifier: in-process, SQLite data_version,
PostgreSQL LISTEN/NOTIFY; `LeaseConformance` over the leases each backend's daemon uses:
`MemoryLeases`, PostgreSQL advisory locks), and what is PostgreSQL's own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from eventfold import ANY, Event, EventStore, connect
from eventfold.backends.postgres import PostgresStore
from eventfold.errors import ConfigurationError
from eventfold.projections import (
    Lease,
    Leases,
    MemoryLeases,
    Notifier,
    PostgresLeases,
    StoreWakeUps,
)
from eventfold.testing import LeaseConformance, LoseLease, WakeUpConformance


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[EventStore]:
    async with connect(store_url) as store:
        yield store


class TestWakeUps(WakeUpConformance):
    @pytest.fixture
    async def other_store(self, store: EventStore, store_url: str) -> AsyncIterator[EventStore]:
        if store_url == "memory://":
            yield store
            return
        async with connect(store_url) as other:
            yield other

    async def until_listening(self, notifier: Notifier) -> None:
        assert isinstance(notifier, StoreWakeUps)
        if notifier.store.backend != "postgresql":
            return
        deadline = asyncio.get_running_loop().time() + 30
        while not notifier.listening:
            assert asyncio.get_running_loop().time() < deadline, "LISTEN never started"
            await asyncio.sleep(0.02)


def _leases_for(store: EventStore) -> Leases:
    """The leases a daemon of ``store``'s backend uses (as the CLI picks them)."""
    if store.backend == "postgresql":
        return PostgresLeases(store, heartbeat=0.05)
    return MemoryLeases()


class TestLeases(LeaseConformance):
    @pytest.fixture
    async def leases(self, store: EventStore) -> AsyncIterator[Leases]:
        leases = _leases_for(store)
        yield leases
        if isinstance(leases, PostgresLeases):
            await leases.close()

    @pytest.fixture
    async def rival(self, store: EventStore, leases: Leases) -> AsyncIterator[Leases]:
        if not isinstance(leases, PostgresLeases):
            yield leases  # one process: every daemon shares the object
            return
        rival = _leases_for(store)
        yield rival
        assert isinstance(rival, PostgresLeases)
        await rival.close()

    @pytest.fixture
    def lose_lease(self) -> LoseLease:
        async def lose(leases: Leases, lease: Lease) -> None:
            if isinstance(leases, MemoryLeases):
                leases.revoke(lease.key)
                return
            # The holder's session dies (a crash, a network cut): its locks go with it.
            assert isinstance(leases, PostgresLeases)
            pid = leases._conn.info.backend_pid
            async with await leases.store.connect_direct() as admin:
                await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

        return lose


class Pinged(Event, frozen=True):
    n: int = 0


@pytest.mark.postgres
async def test_a_burst_of_appends_sends_few_notifications(postgres_url: str) -> None:
    async with connect(postgres_url) as writer, connect(postgres_url) as reader:
        assert isinstance(reader, PostgresStore)
        heard: list[object] = []
        conn = await reader.connect_direct()
        async with conn:
            await conn.execute(
                psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(reader.channel))
            )
            await asyncio.gather(
                *(
                    writer.append(f"ping-{i}", [Pinged(n=i)], expected_version=ANY)
                    for i in range(200)
                )
            )
            await asyncio.sleep(0.1)
            async for note in conn.notifies(timeout=0.5):
                heard.append(note)
        # At least one hint, and far fewer than one per append (debounced per process).
        assert 1 <= len(heard) < 50


async def test_postgres_leases_refuse_other_backends() -> None:
    async with connect("memory://") as store:
        with pytest.raises(ConfigurationError, match="PostgreSQL"):
            PostgresLeases(store)
