"""A ``/metrics`` scrape with many projections, over uvicorn, beside the raw driver.

One JSON line on stdout (progress on stderr). The store holds ``--events`` events (half
of the type the projections handle); ``--projections`` projections have checkpoints, most
at the head and every fifth ``--behind`` events behind it. Three figures are timed in
turns (HTTP scrape, in-process scrape, raw driver, again, ...), ``--rounds`` times each;
figures are medians (and p95) in ms:

- ``http``: ``GET /metrics`` of `eventfold.web.create_app` served by uvicorn (one worker,
  in a thread of its own), from a keep-alive client: what Prometheus sees;
- ``in_process``: `eventfold.metrics.Metrics.exposition` called directly;
- ``raw``: on SQLite the same reads through ``sqlite3``: the head and the event at it,
  each projection's checkpoints and parked list, and for a projection behind, its
  waiting events (at most ``count_limit + 1``); no rendering. On PostgreSQL the floor of
  as many round trips as a scrape makes (``SELECT 1`` through psycopg's async connection,
  one after the other: the head, every projection's checkpoints and parked counts in one
  query, the event at the head, and 1 per projection behind).

Target: ``http`` median <= 20 ms with 50 projections.

A second line, ``instrumented_append``, times ``--appends`` one-event appends made one
after another on the same store, plain and through `Metrics.instrument` (counters,
latency histogram, the traceparent check), in turns (``--rounds`` // 10, at least 3,
each), and gives the median rates and their ratio (1.0: no cost). ``--backend memory``
prints only this line: the wrapper's own cost, with no disk or server under it.

::

    .venv/bin/python benchmarks/metrics_bench.py --backend sqlite
    .venv/bin/python benchmarks/metrics_bench.py --backend postgres \\
        --url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import psycopg
import uvicorn

import eventfold
from eventfold.metrics import DEFAULT_COUNT_LIMIT, Metrics, Observer
from eventfold.projections import Projection, read_models_for
from eventfold.testing import settle
from eventfold.web import create_app

TARGET_MS = 20.0


def say(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def projections(n: int) -> list[Projection]:
    found = []
    for k in range(n):
        p = Projection(f"bench_view_{k}")

        @p.on("BenchPlaced")
        async def placed(event: eventfold.RecordedEvent, tx: Any) -> None:
            return None

        found.append(p)
    return found


async def fill(url: str, events: int, views: list[Projection], behind: int) -> None:
    async with eventfold.connect(url) as store:
        k = 0
        last = eventfold.START
        while k < events:
            batch = [
                eventfold.NewEvent(
                    {"n": k + i}, type="BenchPlaced" if (k + i) % 2 == 0 else "BenchNoise"
                )
                for i in range(min(100, events - k))
            ]
            result = await store.append(f"order-{k // 100}", batch, expected_version=eventfold.ANY)
            last = result.position
            k += len(batch)
        # On PostgreSQL an event is readable once older transactions in the cluster end.
        await settle(store, last)
        log = [e.position async for e in store.read_all()]
        models = read_models_for(store)
        async with models.transaction() as tx:
            for i, p in enumerate(views):
                at = log[-1] if i % 5 else log[max(0, len(log) - 1 - behind)]
                await tx.set_checkpoint(p.name, p.version, 0, at, expected=None)


def raw_scrape(path: str, views: list[Projection], limit: int) -> None:
    conn = sqlite3.connect(path)
    try:
        (head,) = conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()
        conn.execute("SELECT recorded_at FROM events WHERE position = ?", (head,)).fetchall()
        for p in views:
            rows = conn.execute(
                "SELECT name, version, part, tx, seq, state, error, updated_us FROM "
                "ef_checkpoints WHERE name = ? AND version = ? ORDER BY part",
                (p.name, p.version),
            ).fetchall()
            conn.execute(
                "SELECT name, version, part, tx, seq, stream_id, event_id, type, error, "
                "attempts, parked_us FROM ef_parked WHERE name = ? AND version = ? "
                "ORDER BY tx, seq",
                (p.name, p.version),
            ).fetchall()
            low = min(r[4] for r in rows)
            if low < head:
                conn.execute(
                    "SELECT position, stream_id, recorded_at, data, metadata FROM events "
                    "WHERE position > ? AND type = ? ORDER BY position LIMIT ?",
                    (low, "BenchPlaced", limit + 1),
                ).fetchall()
    finally:
        conn.close()


async def raw_round_trips(conn: psycopg.AsyncConnection[Any], n: int) -> None:
    for _ in range(n):
        await (await conn.execute("SELECT 1")).fetchall()


class Server:
    """The app served by uvicorn in a thread of its own."""

    def __init__(self, url: str, views: list[Projection], concurrency: int) -> None:
        store = eventfold.connect(url)
        observer = Observer(store, projections=views, concurrency=concurrency)
        app = create_app(store, projections=views, metrics=Metrics(store, observer=observer))
        config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median_ms": round(statistics.median(times), 3), "p95_ms": round(p95, 3)}


async def scrape_rounds(
    args: argparse.Namespace,
    client: httpx.AsyncClient,
    metrics: Metrics,
    views: list[Projection],
    sqlite_path: str | None,
    times: dict[str, list[float]],
    raw: Any,
) -> list[str]:
    """Warm each side, then time them in turns; the sample lines of one scrape."""
    text = (await client.get("/metrics")).text
    await metrics.exposition()
    for _ in range(args.rounds):
        started = time.perf_counter()
        response = await client.get("/metrics")
        times["http"].append((time.perf_counter() - started) * 1e3)
        assert response.status_code == 200, response.text
        started = time.perf_counter()
        await metrics.exposition()
        times["in_process"].append((time.perf_counter() - started) * 1e3)
        started = time.perf_counter()
        if sqlite_path is not None:
            raw_scrape(sqlite_path, views, DEFAULT_COUNT_LIMIT)
        else:
            await raw_round_trips(raw, 3 + len(views[::5]))
        times["raw"].append((time.perf_counter() - started) * 1e3)
    return [line for line in text.splitlines() if line.startswith("eventfold_")]


async def measure(args: argparse.Namespace, url: str, sqlite_path: str | None) -> dict[str, Any]:
    views = projections(args.projections)
    say(f"[{args.backend}] {args.events:,} events, {len(views)} projections")
    await fill(url, args.events, views, args.behind)
    times: dict[str, list[float]] = {"http": [], "in_process": [], "raw": []}
    async with eventfold.connect(url) as store:
        observer = Observer(store, projections=views, concurrency=args.concurrency)
        metrics = Metrics(store, observer=observer)
        with Server(url, views, args.concurrency) as base:
            async with httpx.AsyncClient(base_url=base) as client:
                conn = None
                if sqlite_path is None:
                    conn = await psycopg.AsyncConnection.connect(args.url, autocommit=True)
                try:
                    lines = await scrape_rounds(
                        args, client, metrics, views, sqlite_path, times, conn
                    )
                finally:
                    if conn is not None:
                        await conn.close()
        observe = (await metrics.observer.observe()).duration_seconds * 1e3
    http = summary(times["http"])
    raw = summary(times["raw"])
    return {
        "backend": args.backend,
        "workload": "metrics_scrape",
        "events": args.events,
        "projections": len(views),
        "behind": args.behind,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "unit": "ms",
        "http": http,
        "in_process": summary(times["in_process"]),
        "raw": raw,
        "ratio": round(http["median_ms"] / raw["median_ms"], 2),
        "observe_ms": round(observe, 3),
        "sample_lines": len(lines),
        "target_ms": TARGET_MS,
        "meets_target": http["median_ms"] <= TARGET_MS,
        "load_1m": os.getloadavg()[0],
    }


async def append_overhead(args: argparse.Namespace, url: str) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"plain": [], "instrumented": []}
    async with eventfold.connect(url) as store:
        metrics = Metrics(store)

        async def run(stream: str) -> float:
            event = eventfold.NewEvent({"n": 1}, type="BenchAppended")
            started = time.perf_counter()
            for i in range(args.appends):
                await store.append(stream, [event], expected_version=i)
            return float(args.appends / (time.perf_counter() - started))

        await run("warm-0")
        for r in range(max(3, args.rounds // 10)):
            rates["plain"].append(await run(f"plain-{r}"))
            remove = metrics.instrument()
            rates["instrumented"].append(await run(f"instrumented-{r}"))
            remove()
    plain = float(statistics.median(rates["plain"]))
    instrumented = float(statistics.median(rates["instrumented"]))
    return {
        "backend": args.backend,
        "workload": "instrumented_append",
        "appends": args.appends,
        "unit": "appends/s",
        "plain_rate": round(plain),
        "instrumented_rate": round(instrumented),
        "ratio": round(instrumented / plain, 3),
        "runs": {k: [round(x) for x in v] for k, v in rates.items()},
        "load_1m": os.getloadavg()[0],
    }


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--backend",
        choices=["sqlite", "postgres", "memory"],
        default="sqlite",
        help="memory: only the instrumented_append line (the wrapper's cost, no disk)",
    )
    parser.add_argument(
        "--url", help="the PostgreSQL server (default $EVENTFOLD_TEST_POSTGRES_URL)"
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--projections", type=int, default=50)
    parser.add_argument("--behind", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument(
        "--concurrency", type=int, default=8, help="projections read at once (Observer)"
    )
    args = parser.parse_args()
    if args.backend == "postgres":
        args.url = args.url or os.environ.get("EVENTFOLD_TEST_POSTGRES_URL")
        if not args.url:
            parser.error("--backend postgres needs --url or $EVENTFOLD_TEST_POSTGRES_URL")
    for name in ("events", "projections", "rounds", "appends"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    return args


def main() -> None:
    args = arguments()
    folder = tempfile.mkdtemp(prefix="eventfold-metrics-")
    schema = f"bench_metrics_{uuid.uuid4().hex[:10]}"
    if args.backend == "memory":
        overhead = asyncio.run(append_overhead(args, "memory://"))
        print(json.dumps(overhead), flush=True)
        return
    if args.backend == "sqlite":
        path = f"{folder}/events.db"
        url, sqlite_path = f"sqlite:///{path}", path
    else:
        # The URL's own schema option, if any, is replaced by a scratch schema.
        parts = urlsplit(args.url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "schema"]
        args.url = urlunsplit(parts._replace(query=urlencode(query)))
        scratch = urlencode([*query, ("schema", schema)])
        url, sqlite_path = urlunsplit(parts._replace(query=scratch)), None
    try:
        line = asyncio.run(measure(args, url, sqlite_path))
        print(json.dumps(line), flush=True)
        overhead = asyncio.run(append_overhead(args, url))
        print(json.dumps(overhead), flush=True)
    finally:
        if args.backend == "postgres":
            with psycopg.connect(args.url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    say(
        f"[{args.backend}] /metrics with {line['projections']} projections: "
        f"http {line['http']['median_ms']} ms (p95 {line['http']['p95_ms']}), in process "
        f"{line['in_process']['median_ms']} ms, raw {line['raw']}; appends "
        f"{overhead['plain_rate']}/s plain, {overhead['instrumented_rate']}/s instrumented"
    )


if __name__ == "__main__":
    main()
