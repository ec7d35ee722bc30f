"""Wake-ups at the tail (in-process, SQLite data_version, PostgreSQL LISTEN/NOTIFY) and
PostgreSQL advisory-lock leases."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from eventfold import Event, connect
from eventfold.backends.postgres import PostgresStore
from eventfold.errors import ConfigurationError
from eventfold.position import ANY
from eventfold.projections import PostgresLeases, StoreWakeUps, notifier_for


class Pinged(Event, frozen=True):
    n: int = 0


async def _woken(wakeups: StoreWakeUps, append: object) -> float:
    """Seconds from the append to the wake-up (the wait itself is 30 s long)."""
    wake = wakeups.subscribe()
    waiting = asyncio.create_task(wake.wait(30))
    await asyncio.sleep(0.05)
    assert not waiting.done(), "woke without an append"
    started = time.perf_counter()
    await append()  # type: ignore[operator]
    await asyncio.wait_for(waiting, 5)
    return time.perf_counter() - started


async def test_an_append_in_this_process_wakes_subscribers_at_once() -> None:
    async with connect("memory://") as store, notifier_for(store) as wakeups:

        async def append() -> None:
            await store.append("ping-1", [Pinged()], expected_version=ANY)

        assert await _woken(wakeups, append) < 1.0


async def test_sqlite_hears_appends_made_through_another_connection(sqlite_url: str) -> None:
    async with (
        connect(sqlite_url) as reader,
        connect(sqlite_url) as writer,
        notifier_for(reader, sqlite_poll=0.01) as wakeups,
    ):

        async def append() -> None:
            await writer.append("ping-1", [Pinged()], expected_version=ANY)

        assert await _woken(wakeups, append) < 1.0


@pytest.mark.postgres
async def test_postgres_hears_appends_of_another_store_through_notify(postgres_url: str) -> None:
    async with (
        connect(postgres_url) as reader,
        connect(postgres_url) as writer,
        notifier_for(reader) as wakeups,
    ):
        wakeups.subscribe()
        for _ in range(100):
            if wakeups.listening:
                break
            await asyncio.sleep(0.02)
        assert wakeups.listening

        async def append() -> None:
            await writer.append("ping-1", [Pinged()], expected_version=ANY)

        assert await _woken(wakeups, append) < 1.0


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


@pytest.mark.postgres
async def test_one_holder_per_lease_and_takeover_when_the_holder_dies(
    postgres_url: str,
) -> None:
    async with connect(postgres_url) as store:
        assert isinstance(store, PostgresStore)
        first = PostgresLeases(store, heartbeat=0.05)
        second = PostgresLeases(store, heartbeat=0.05)
        try:
            lease = await first.acquire("orders/v1/p0of1", "a")
            assert lease is not None
            assert lease.held()
            assert await second.acquire("orders/v1/p0of1", "b") is None
            # The same owner asking again gets the lease it holds.
            assert await first.acquire("orders/v1/p0of1", "a") is lease
            other = await second.acquire("orders/v1/p1of2", "b")
            assert other is not None

            await lease.release()
            assert not lease.held()
            taken = await second.acquire("orders/v1/p0of1", "b")
            assert taken is not None
            await taken.release()

            # The holder's session dies (a crash, a network cut): its locks go with it.
            lease = await first.acquire("orders/v1/p0of1", "a")
            assert lease is not None
            pid = first._conn.info.backend_pid
            async with await store.connect_direct() as admin:
                await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            for _ in range(100):
                if not lease.held():
                    break
                await asyncio.sleep(0.02)
            assert not lease.held()
            assert await second.acquire("orders/v1/p0of1", "b") is not None
            # The dead holder can come back and stand by.
            assert await first.acquire("orders/v1/p0of1", "a") is None
        finally:
            await first.close()
            await second.close()


async def test_postgres_leases_refuse_other_backends() -> None:
    async with connect("memory://") as store:
        with pytest.raises(ConfigurationError, match="PostgreSQL"):
            PostgresLeases(store)
