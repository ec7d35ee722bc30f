"""The hybrid write: a unit of work holding one CRUD upsert and one append.

- ``unit_of_work``: ``inline_appends`` units from 32 asyncio tasks, each upserting one
  row of an ``accounts`` table (1,000 accounts) and appending one event to a new stream,
  committed together; beside the same single-event appends made bare (the ``raw`` side of
  this line: the ratio is the unit of work's cost, target >= 0.7). The raw driver doing
  the same transaction (upsert + event insert, one transaction per unit; 32 connections on
  PostgreSQL, one on SQLite) is reported beside them as ``raw_driver_rate``; the same
  units that also publish one outbox message each as ``publish_rate``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import eventfold
from eventfold.store import SupportsUnitOfWork, capability
from harness import Context, Figures, fresh_baseline, fresh_location, interleave, rate
from raw import EMPTY_META, TYPE_NAME, RawPostgres, RawSQLite
from workloads import OrderPlaced, append_concurrently, make_orders, stream_ids

__all__ = ["RUNNERS"]

ACCOUNTS = 1_000
_TABLE = "bench_accounts"
_CREATE = f"CREATE TABLE IF NOT EXISTS {_TABLE} (id TEXT PRIMARY KEY, balance BIGINT NOT NULL)"


def _upsert(mark: str) -> str:
    return (
        f"INSERT INTO {_TABLE} (id, balance) VALUES ({mark}, {mark}) ON CONFLICT (id) "
        f"DO UPDATE SET balance = {_TABLE}.balance + excluded.balance"
    )


async def units_concurrently(
    store: eventfold.EventStore,
    streams: Sequence[str],
    events: Sequence[OrderPlaced],
    tasks: int,
    *,
    write: bool = True,
    ids: bool = False,
    publish: bool = False,
) -> None:
    """One unit of work per new stream (an upsert and a single-event append), from
    ``tasks`` asyncio tasks sharing one queue. The upsert goes through ``uow.write``
    (the documented way for a statement whose rows are not needed) or, with
    ``write=False``, ``uow.execute``. ``ids``: each event carries an id of the caller's
    (what makes a retry of the unit detectable). ``publish``: each unit also publishes one
    outbox message (to ``bench``)."""
    units = capability(store, SupportsUnitOfWork)
    mark = "?" if store.backend == "sqlite" else "%s"
    upsert = _upsert(mark)
    work = iter(enumerate(zip(streams, events, strict=True)))

    async def worker() -> None:
        for n, (stream_id, event) in work:
            async with units.unit_of_work() as uow:
                if write:
                    await uow.write(upsert, (f"a{n % ACCOUNTS}", event.unit_price_cents))
                else:
                    await uow.execute(upsert, (f"a{n % ACCOUNTS}", event.unit_price_cents))
                batch = [eventfold.NewEvent(event, event_id=uuid.uuid4()) if ids else event]
                await uow.append(stream_id, batch, expected_version=eventfold.NO_STREAM)
                if publish:
                    uow.publish("bench", {"stream": stream_id}, key=stream_id)

    await asyncio.gather(*(worker() for _ in range(tasks)))


async def _raw_sqlite_units(
    raw: RawSQLite, streams: Sequence[str], events: Sequence[OrderPlaced]
) -> None:
    from raw import _SQLITE_INSERT

    conn = raw.conn
    upsert = _upsert("?")
    encode = raw._encode
    for n, (stream_id, event) in enumerate(zip(streams, events, strict=True)):
        row = (
            os.urandom(16), stream_id, 1, TYPE_NAME, 1, encode(event), EMPTY_META,
            time.time_ns() // 1000,
        )  # fmt: skip
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(upsert, (f"a{n % ACCOUNTS}", event.unit_price_cents))
        conn.execute(_SQLITE_INSERT, row)
        conn.execute("COMMIT")


async def _raw_postgres_units(
    raw: RawPostgres, streams: Sequence[str], events: Sequence[OrderPlaced], tasks: int
) -> None:
    from raw import _PG_INSERT

    upsert = _upsert("%s").encode()
    encode = raw._encode
    work = iter(enumerate(zip(streams, events, strict=True)))

    async def worker(conn: object) -> None:
        for n, (stream_id, event) in work:
            row = (uuid.uuid4(), stream_id, 1, TYPE_NAME, 1, encode(event), EMPTY_META)
            async with conn.transaction():  # type: ignore[attr-defined]
                await conn.execute(upsert, (f"a{n % ACCOUNTS}", event.unit_price_cents))  # type: ignore[attr-defined]
                await conn.execute(_PG_INSERT, row)  # type: ignore[attr-defined]

    await asyncio.gather(*(worker(conn) for conn in raw.workers[:tasks]))


async def _raw_postgres_pipelined(
    raw: RawPostgres, streams: Sequence[str], events: Sequence[OrderPlaced], tasks: int
) -> None:
    """As `_raw_postgres_units`, with the whole transaction (BEGIN, upsert, insert,
    COMMIT) in one pipelined round trip: the fewest round trips the driver can do."""
    from raw import _PG_INSERT

    upsert = _upsert("%s").encode()
    insert = _PG_INSERT.encode()
    encode = raw._encode
    work = iter(enumerate(zip(streams, events, strict=True)))

    async def worker(conn: Any) -> None:
        for n, (stream_id, event) in work:
            row = (uuid.uuid4(), stream_id, 1, TYPE_NAME, 1, encode(event), EMPTY_META)
            async with conn.pipeline():
                await conn.execute(b"BEGIN")
                await conn.execute(upsert, (f"a{n % ACCOUNTS}", event.unit_price_cents))
                await conn.execute(insert, row)
                await conn.execute(b"COMMIT")

    await asyncio.gather(*(worker(conn) for conn in raw.workers[:tasks]))


def _pool_for(url: str, tasks: int) -> str:
    """``url`` with a PostgreSQL pool of a connection per task: each unit holds one for
    its transaction (as each of the raw driver's tasks does), where bare appends from
    all tasks share a few."""
    if not url.startswith("postgresql"):
        return url
    return f"{url}{'&' if '?' in url else '?'}pool_max_size={tasks}"


async def unit_of_work(ctx: Context) -> Figures:
    """32-task units of work (an upsert and a single-event append each), beside the same
    appends made bare (the ``raw`` side of this line), and the raw driver's transaction."""
    n, tasks, runs = ctx.sizes.inline_appends, ctx.sizes.concurrent_tasks, ctx.sizes.inline_runs
    events = make_orders(n)
    async with (
        fresh_location(ctx) as url,
        eventfold.connect(_pool_for(url, tasks)) as store,
        fresh_location(ctx) as plain_url,
        eventfold.connect(plain_url) as plain,
        fresh_baseline(ctx) as raw,
    ):
        capability(store, SupportsUnitOfWork).declare_destination("bench")
        async with capability(store, SupportsUnitOfWork).unit_of_work() as uow:
            await uow.execute(_CREATE)
        works: dict[str, Callable[[int], Awaitable[object]] | None] = {
            "eventfold": lambda i: units_concurrently(store, stream_ids(n, f"o{i}"), events, tasks),
            "raw": lambda i: append_concurrently(plain, stream_ids(n, f"o{i}"), events, tasks),
            "execute": lambda i: units_concurrently(
                store, stream_ids(n, f"x{i}"), events, tasks, write=False
            ),
            "ids": lambda i: units_concurrently(
                store, stream_ids(n, f"i{i}"), events, tasks, ids=True
            ),
            "publish": lambda i: units_concurrently(
                store, stream_ids(n, f"m{i}"), events, tasks, publish=True
            ),
            "driver": None,
            "pipelined": None,
        }
        if isinstance(raw, RawSQLite):
            raw.conn.execute(_CREATE)
            works["driver"] = lambda i: _raw_sqlite_units(raw, stream_ids(n, f"o{i}"), events)
        elif isinstance(raw, RawPostgres):
            await raw.conn.execute(_CREATE)
            await raw.open_workers(tasks)
            works["driver"] = lambda i: _raw_postgres_units(
                raw, stream_ids(n, f"o{i}"), events, tasks
            )
            works["pipelined"] = lambda i: _raw_postgres_pipelined(
                raw, stream_ids(n, f"p{i}"), events, tasks
            )
        for work in works.values():
            if work is not None:
                await work(-1)
        t = await interleave(runs, works)
    median = statistics.median(t["eventfold"])
    extra: dict[str, object] = {
        "tasks": tasks,
        "runs": runs,
        "accounts": ACCOUNTS,
        "raw_baseline": "the same single-event appends made bare (no unit of work)",
        "upsert_via": "uow.write",
        "pool_max_size": tasks if ctx.backend == "postgres" else None,
        "execute_rate": rate(n, statistics.median(t["execute"])),
        "execute_ratio": round(statistics.median(t["raw"]) / statistics.median(t["execute"]), 3),
        "ids_rate": rate(n, statistics.median(t["ids"])),
        "ids_ratio": round(statistics.median(t["raw"]) / statistics.median(t["ids"]), 3),
        "publish_rate": rate(n, statistics.median(t["publish"])),
        "publish_ratio": round(statistics.median(t["raw"]) / statistics.median(t["publish"]), 3),
    }
    if "driver" in t:
        extra["raw_driver_rate"] = rate(n, statistics.median(t["driver"]))
        extra["raw_driver_baseline"] = "one transaction per unit (upsert + event insert): " + (
            "one connection" if ctx.backend == "sqlite" else f"{tasks} connections"
        )
        extra["raw_driver_ratio"] = round(
            statistics.median(t["raw"]) / statistics.median(t["driver"]), 3
        )
    if "pipelined" in t:
        extra["raw_driver_pipelined_rate"] = rate(n, statistics.median(t["pipelined"]))
        extra["raw_driver_pipelined_ratio"] = round(
            statistics.median(t["raw"]) / statistics.median(t["pipelined"]), 3
        )
        extra["raw_driver_pipelined_baseline"] = (
            f"the same transaction in one pipelined round trip, {tasks} connections"
        )
    return Figures(n, median, rate(n, median), rate(n, statistics.median(t["raw"])), extra)


RUNNERS: dict[str, Callable[[Context], Awaitable[Figures]]] = {"unit_of_work": unit_of_work}
