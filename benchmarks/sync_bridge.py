"""What the blocking API costs over the async one: the same work through `eventfold.sync`
and through `eventfold.connect`, on fresh stores of one backend, in alternating runs.

    .venv/bin/python benchmarks/sync_bridge.py --backend sqlite
    .venv/bin/python benchmarks/sync_bridge.py --backend postgres --url postgresql://...

stdout carries one JSON line per workload: the async figure (``async_rate``), the blocking
one (``rate``), and ``ratio`` = blocking / async (1.0: no cost). Workloads:

- ``append_one``: one single-event append after another, from one caller;
- ``append_threads``: 16 callers, each appending to its own stream (async: 16 tasks;
  blocking: 16 threads sharing one store);
- ``read_all``: the whole log read through (async iterator; blocking: pages of 1,000).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import eventfold
import eventfold.sync


class Tick(eventfold.Event):
    __event_type__ = "bench.Tick"
    n: int


WORKERS = 16


@contextmanager
def fresh_url(backend: str, url: str | None) -> Iterator[str]:
    """An empty store's URL, removed afterwards."""
    if backend == "memory":
        yield "memory://"
    elif backend == "sqlite":
        folder = tempfile.mkdtemp(prefix="eventfold-sync-bench-")
        try:
            yield f"sqlite:///{folder}/events.db"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    else:
        import psycopg

        if not url:
            raise SystemExit("--url (or $EVENTFOLD_TEST_POSTGRES_URL) is needed for postgres")
        schema = f"bench_sync_{uuid.uuid4().hex[:10]}"
        sep = "&" if "?" in url else "?"
        try:
            yield f"{url}{sep}schema={schema}"
        finally:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- the work, each side ---------------------------------------------------------------


async def async_append_one(url: str, n: int) -> float:
    async with eventfold.connect(url) as store:
        start = time.perf_counter()
        for i in range(n):
            await store.append("tick-1", [Tick(n=i)], expected_version=i)
        return time.perf_counter() - start


def sync_append_one(url: str, n: int) -> float:
    with eventfold.sync.connect(url) as store:
        start = time.perf_counter()
        for i in range(n):
            store.append("tick-1", [Tick(n=i)], expected_version=i)
        return time.perf_counter() - start


async def async_append_threads(url: str, n: int) -> float:
    each = n // WORKERS

    async with eventfold.connect(url) as store:

        async def work(k: int) -> None:
            for i in range(each):
                await store.append(f"tick-{k}", [Tick(n=i)], expected_version=i)

        start = time.perf_counter()
        await asyncio.gather(*(work(k) for k in range(WORKERS)))
        return time.perf_counter() - start


def sync_append_threads(url: str, n: int) -> float:
    each = n // WORKERS
    with eventfold.sync.connect(url) as store:

        def work(k: int) -> None:
            for i in range(each):
                store.append(f"tick-{k}", [Tick(n=i)], expected_version=i)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(WORKERS)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - start


def fill(url: str, n: int) -> None:
    with eventfold.sync.connect(url) as store:
        for at in range(0, n, 1000):
            store.append(
                f"tick-{at}", [Tick(n=i) for i in range(at, min(at + 1000, n))], expected_version=0
            )


async def async_read_all(url: str, n: int) -> float:
    async with eventfold.connect(url) as store:
        start = time.perf_counter()
        count = sum([1 async for _ in store.read_all()])
        seconds = time.perf_counter() - start
    if count != n:
        raise AssertionError(f"read {count} events, expected {n}")
    return seconds


def sync_read_all(url: str, n: int) -> float:
    with eventfold.sync.connect(url) as store:
        start = time.perf_counter()
        count = sum(1 for _ in store.read_all())
        seconds = time.perf_counter() - start
    if count != n:
        raise AssertionError(f"read {count} events, expected {n}")
    return seconds


# -- the runner ----------------------------------------------------------------------------

Side = Callable[[str, int], float]


def measure(
    backend: str, url: str | None, runs: int, n: int, sides: dict[str, Side], *, filled: bool
) -> dict[str, list[float]]:
    """Seconds of each side's runs, taken in turns, each on a fresh store."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(runs):
        for name, side in sides.items():
            with fresh_url(backend, url) as target:
                if filled:
                    if backend == "memory":
                        raise SystemExit("read_all needs a persistent store (sqlite, postgres)")
                    fill(target, n)
                times[name].append(side(target, n))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["memory", "sqlite", "postgres"], required=True)
    parser.add_argument("--url", default=os.environ.get("EVENTFOLD_TEST_POSTGRES_URL"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()

    def size(base: int) -> int:
        return max(WORKERS, int(base * args.scale) // WORKERS * WORKERS)

    workloads: list[tuple[str, int, Side, Side, str, bool]] = [
        (
            "append_one",
            size(2000),
            sync_append_one,
            lambda u, n: asyncio.run(async_append_one(u, n)),
            "appends/s",
            False,
        ),
        (
            "append_threads",
            size(4000),
            sync_append_threads,
            lambda u, n: asyncio.run(async_append_threads(u, n)),
            "appends/s",
            False,
        ),
    ]
    if args.backend != "memory":
        workloads.append(
            (
                "read_all",
                size(100_000),
                sync_read_all,
                lambda u, n: asyncio.run(async_read_all(u, n)),
                "events/s",
                True,
            )
        )
    load = os.getloadavg()[0]
    for name, n, blocking, awaited, unit, filled in workloads:
        times = measure(
            args.backend,
            args.url,
            args.runs,
            n,
            {"async": awaited, "sync": blocking},
            filled=filled,
        )
        async_rate = n / statistics.median(times["async"])
        sync_rate = n / statistics.median(times["sync"])
        line = {
            "backend": args.backend,
            "workload": name,
            "events": n,
            "unit": unit,
            "rate": round(sync_rate, 1),
            "async_rate": round(async_rate, 1),
            "ratio": round(sync_rate / async_rate, 3),
            "runs": args.runs,
            "scale": args.scale,
            "load_1m": round(load, 2),
        }
        print(json.dumps(line), flush=True)
        print(
            f"{args.backend:9} {name:15} sync {sync_rate:>10.0f} {unit:10} "
            f"async {async_rate:>10.0f}  ratio {sync_rate / async_rate:.2f}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
