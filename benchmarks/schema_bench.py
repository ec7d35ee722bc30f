"""What schema evolution costs on the hot paths: validation on write, upcasting on read.

::

    .venv/bin/python benchmarks/schema_bench.py                     # SQLite, full size
    .venv/bin/python benchmarks/schema_bench.py --scale 0.01        # a quick look
    .venv/bin/python benchmarks/schema_bench.py --backend postgres --url postgresql://…

Two figures, each against the same work without the feature, timed in turns (with, without,
with, …) after a full garbage collection, medians of several runs (7 by default):

- ``bulk_append_validation``: 10,000 events in one ``append`` with the write-side schema check
  (the default) and with it off (``store.codec.validate = False``). ``cost`` is the share of
  throughput the check takes; the goal is at most 0.15.
- ``read_all_upcast``: ``read_all`` over 100,000 events of which half are stored at schema
  version 1 and lifted through two upcasters (v1 -> v2 -> v3) as they are read, against a
  store of 100,000 current (v3) events. ``ratio`` is upcast rate / current rate; the goal is
  at least 0.7.

Goals are judged on wall-clock rates. Each line also has the same figure in this process's
CPU time (``cpu_cost``, ``cpu_ratio``), which another process's load on a shared machine
disturbs far less: when the two disagree, the machine was busy.

stdout carries one JSON line per figure; progress goes to stderr. Exits 1 when a figure
misses its goal (``--no-fail`` to always exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import eventfold
from eventfold import NewEvent

REGISTRY = eventfold.TypeRegistry()
TYPE = "schemabench.OrderPlaced"


class OrderPlaced(eventfold.Event):
    """Version 3 of a small order (about 100 bytes of JSON), as the code has it today."""

    __event_type__ = TYPE
    __schema_version__ = 3

    order_id: str
    sku: str
    quantity: int
    unit_price_cents: int
    currency: str


REGISTRY.register(OrderPlaced)


@REGISTRY.upcaster(TYPE, from_version=1)
def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v1 had ``qty`` and a float ``unit_price``; v2 has ``quantity`` and integer cents."""
    return {
        "order_id": data["order_id"],
        "sku": data["sku"],
        "quantity": data["qty"],
        "unit_price_cents": round(data["unit_price"] * 100),
    }


@REGISTRY.upcaster(TYPE, from_version=2)
def v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    """v3 adds the currency; everything before it was in euros."""
    return {**data, "currency": "EUR"}


def orders(n: int, start: int = 0) -> list[OrderPlaced]:
    return [
        OrderPlaced(
            order_id=f"ord-{i:08d}",
            sku=f"SKU-{i % 997:05d}",
            quantity=1 + i % 5,
            unit_price_cents=499 + (i * 37) % 10_000,
            currency="EUR",
        )
        for i in range(start, start + n)
    ]


def old_orders(n: int, start: int = 0) -> list[NewEvent]:
    """Version 1 payloads, as an early producer wrote them."""
    return [
        NewEvent(
            {
                "order_id": f"ord-{i:08d}",
                "sku": f"SKU-{i % 997:05d}",
                "qty": 1 + i % 5,
                "unit_price": (499 + (i * 37) % 10_000) / 100,
            },
            type=TYPE,
            schema_version=1,
        )
        for i in range(start, start + n)
    ]


async def timed(work: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """Wall-clock and CPU seconds (this process, all threads) that ``work`` takes.

    CPU time is the steadier figure on a shared machine: another process's load stretches
    the wall clock of both variants but not their CPU time.
    """
    await asyncio.sleep(0.05)
    gc.collect()
    start, cpu = time.perf_counter(), time.process_time()
    await work()
    return time.perf_counter() - start, time.process_time() - cpu


def medians(times: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


class Stores:
    """Fresh stores of one backend; removed (files, PostgreSQL schemas) at the end."""

    def __init__(self, backend: str, url: str | None, tmpdir: str | None) -> None:
        self.backend = backend
        self.url = url
        self.dir = tempfile.TemporaryDirectory(prefix="schema-bench-", dir=tmpdir)
        self.schemas: list[str] = []

    def new_url(self) -> str:
        if self.backend == "memory":
            return "memory://"
        if self.backend == "sqlite":
            return f"sqlite:///{self.dir.name}/{uuid.uuid4().hex}.db"
        assert self.url is not None
        schema = f"schema_bench_{uuid.uuid4().hex[:12]}"
        self.schemas.append(schema)
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}schema={schema}"

    def close(self) -> None:
        self.dir.cleanup()
        if self.schemas:
            import psycopg

            assert self.url is not None
            base = self.url.split("?")[0]
            with psycopg.connect(base, autocommit=True) as conn:
                for schema in self.schemas:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def connect(url: str) -> eventfold.EventStore:
    return eventfold.connect(url, registry=REGISTRY, producer_version="schema-bench 1")


async def bulk_append_validation(stores: Stores, events: int, runs: int) -> dict[str, Any]:
    batch = orders(events)
    with_check: list[tuple[float, float]] = []
    without: list[tuple[float, float]] = []
    for run in range(runs + 1):
        # A fresh store per append, and the order flips each run, so neither variant
        # always lands on the other's WAL checkpoint.
        turns = ((True, with_check), (False, without))
        for validate, times in turns if run % 2 else turns[::-1]:
            async with connect(stores.new_url()) as store:
                codec = getattr(store, "codec")  # noqa: B009 - every backend has one
                codec.validate = validate  # the write-side check, on or off
                await store.append("warm-up", orders(10), expected_version=eventfold.NO_STREAM)

                async def append(store: eventfold.EventStore = store) -> None:
                    await store.append("order-1", batch, expected_version=eventfold.NO_STREAM)

                seconds = await timed(append)
            if run:  # run 0 warms up
                times.append(seconds)
    (wall, cpu), (wall_off, cpu_off) = medians(with_check), medians(without)
    rate, rate_off = events / wall, events / wall_off
    cost = 1 - rate / rate_off
    return {
        "benchmark": "bulk_append_validation",
        "backend": stores.backend,
        "events": events,
        "rate": round(rate, 1),
        "rate_without_validation": round(rate_off, 1),
        "cost": round(cost, 4),
        "cpu_cost": round(1 - cpu_off / cpu, 4),
        "target_max_cost": 0.15,
        "meets_target": cost <= 0.15,
        "unit": "events/s",
        "runs": runs,
    }


async def fill(store: eventfold.EventStore, total: int, old_share: bool) -> None:
    """``total`` orders in appends of 1,000; with ``old_share`` every other one is v1."""
    per = 1_000
    for n, start in enumerate(range(0, total, per)):
        count = min(per, total - start)
        batch: list[OrderPlaced | NewEvent] = []
        current = orders(count, start)
        old = old_orders(count, start) if old_share else []
        for i in range(count):
            batch.append(old[i] if old_share and i % 2 == 0 else current[i])
        await store.append(f"order-{n}", batch, expected_version=eventfold.NO_STREAM)


async def read_all(store: eventfold.EventStore) -> int:
    n = 0
    async for event in store.read_all():
        if event.data.quantity > 0:
            n += 1
    return n


async def read_all_upcast(stores: Stores, events: int, runs: int) -> dict[str, Any]:
    current_times: list[tuple[float, float]] = []
    upcast_times: list[tuple[float, float]] = []
    async with connect(stores.new_url()) as current, connect(stores.new_url()) as mixed:
        await fill(current, events, old_share=False)
        await fill(mixed, events, old_share=True)
        for run in range(runs + 1):
            for store, times in ((current, current_times), (mixed, upcast_times)):

                async def read(store: eventfold.EventStore = store) -> None:
                    assert await read_all(store) == events

                seconds = await timed(read)
                if run:
                    times.append(seconds)
        upcast = len([e async for e in mixed.read_all() if e.upcast_from is not None])
    (wall_current, cpu_current), (wall, cpu) = medians(current_times), medians(upcast_times)
    rate_current, rate = events / wall_current, events / wall
    ratio = rate / rate_current
    return {
        "benchmark": "read_all_upcast",
        "backend": stores.backend,
        "events": events,
        "upcast_events": upcast,
        "upcast_steps": 2,
        "rate": round(rate, 1),
        "rate_current": round(rate_current, 1),
        "ratio": round(ratio, 4),
        "cpu_ratio": round(cpu_current / cpu, 4),
        "target_ratio": 0.7,
        "meets_target": ratio >= 0.7,
        "unit": "events/s",
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["memory", "sqlite", "postgres"], default="sqlite")
    parser.add_argument("--url", help="the PostgreSQL server (only for --backend postgres)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply event counts")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per figure")
    parser.add_argument("--tmpdir", help="where SQLite files go (default: system temp)")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even if a goal is missed")
    args = parser.parse_args(argv)
    url = args.url or os.environ.get("EVENTFOLD_TEST_POSTGRES_URL")
    if args.backend == "postgres" and not url:
        parser.error("--backend postgres needs --url (or $EVENTFOLD_TEST_POSTGRES_URL)")
    bulk = max(2, round(10_000 * args.scale))
    reads = max(2, round(100_000 * args.scale))

    async def go() -> list[dict[str, Any]]:
        stores = Stores(args.backend, url, args.tmpdir)
        try:
            lines = []
            works: list[Callable[[], Awaitable[dict[str, Any]]]] = [
                lambda: bulk_append_validation(stores, bulk, args.runs),
                lambda: read_all_upcast(stores, reads, args.runs),
            ]
            for work in works:
                line = await work()
                line["scale"] = args.scale
                line["load_1m"] = round(os.getloadavg()[0], 2)
                print(json.dumps(line), flush=True)
                print(f"{line['benchmark']}: {line}", file=sys.stderr)
                lines.append(line)
            return lines
        finally:
            stores.close()

    lines = asyncio.run(go())
    return 0 if args.no_fail or all(line["meets_target"] for line in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
