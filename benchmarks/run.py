"""eventfold's benchmark runner: one JSON line per workload, each beside the raw driver.

::

    .venv/bin/python benchmarks/run.py --backend sqlite
    .venv/bin/python benchmarks/run.py --backend postgres \\
        --url postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python benchmarks/run.py --backend memory --workload bulk_append read_all --scale 0.1

stdout gets only JSON lines (one per workload); progress and the summary table go to
stderr. Every workload runs on a fresh store: a new SQLite file in a temporary folder, or
a new PostgreSQL schema (``?schema=bench_<random>``) dropped afterwards. See README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import eventfold
import hybrid
import read_path
import write_path
from harness import (
    Context,
    Figures,
    Work,
    check,
    fresh_baseline,
    fresh_location,
    fresh_store,
    interleave,
    ms,
    rate,
    rate_figures,
)
from probe import probe
from raw import RawPostgres, RawSQLite, open_raw
from workloads import (
    RATE_UNITS,
    TARGETS,
    UNITS,
    WORKLOADS,
    OrderPlaced,
    Sizes,
    append_batches,
    append_concurrently,
    append_sequentially,
    make_orders,
    peak_rss_mb,
    populate,
    read_all,
    read_stream,
    ru_maxrss_mb,
    stream_ids,
)

BACKENDS = ("memory", "sqlite", "postgres")
SCRIPT = os.path.abspath(__file__)
MEMORY_STREAMS = 100
"""Streams the read_all workloads' events are spread over, round-robin."""


# -- the workloads -------------------------------------------------------------------
# Each opens a fresh eventfold store and a fresh raw baseline side by side, warms both,
# then times them in turns (`interleave`).


async def bulk_append(ctx: Context) -> Figures:
    """``bulk_events`` events to one new stream in one `append` call, several times."""
    n, runs = ctx.sizes.bulk_events, ctx.sizes.bulk_runs
    events = make_orders(n)
    no_stream = eventfold.NO_STREAM
    async with fresh_store(ctx) as store, fresh_baseline(ctx) as raw:
        await store.append("warmup-0", events, expected_version=no_stream)
        works: dict[str, Work | None] = {
            "eventfold": lambda i: store.append(f"order-{i}", events, expected_version=no_stream),
            "raw": None,
            "copy": None,
        }
        if raw is not None:
            await raw.append_batch("warmup-0", events, 0)
            works["raw"] = lambda i: raw.append_batch(f"order-{i}", events, 0)
        if isinstance(raw, RawPostgres):
            await raw.append_batch_copy("warmup-1", events, 0)
            works["copy"] = lambda i: raw.append_batch_copy(f"copy-{i}", events, 0)
        t = await interleave(runs, works)
    extra: dict[str, object] = {"runs": runs, "best_rate": rate(n, min(t["eventfold"]))}
    if "copy" in t:
        extra["raw_copy_rate"] = rate(n, statistics.median(t["copy"]))
    return rate_figures(n, t, extra)


async def batched_append(ctx: Context) -> Figures:
    """``batched_events`` events to one stream in calls of ``batch_size``, each with its
    exact expected version; a new stream per run."""
    n, batch, runs = ctx.sizes.batched_events, ctx.sizes.batch_size, ctx.sizes.append_runs
    events = make_orders(n)

    async def raw_batches(append: Callable[..., Awaitable[None]], stream: str) -> None:
        for i in range(0, n, batch):
            await append(stream, events[i : i + batch], i)

    async with fresh_store(ctx) as store, fresh_baseline(ctx) as raw:
        await store.append("warmup-0", events[:batch], expected_version=eventfold.NO_STREAM)
        works: dict[str, Work | None] = {
            "eventfold": lambda i: append_batches(store, f"order-{i}", events, batch),
            "raw": None,
            "copy": None,
        }
        if raw is not None:
            await raw.append_batch("warmup-0", events[:batch], 0)
            works["raw"] = lambda i: raw_batches(raw.append_batch, f"order-{i}")
        if isinstance(raw, RawPostgres):
            works["copy"] = lambda i: raw_batches(raw.append_batch_copy, f"copy-{i}")
        t = await interleave(runs, works)
    extra: dict[str, object] = {"batch_size": batch, "calls": -(-n // batch), "runs": runs}
    if "copy" in t:
        extra["raw_copy_rate"] = rate(n, statistics.median(t["copy"]))
    return rate_figures(n, t, extra)


async def sequential_append(ctx: Context) -> Figures:
    """One single-event append to each of ``sequential_streams`` new streams, in turn."""
    n, runs = ctx.sizes.sequential_streams, ctx.sizes.append_runs
    events = make_orders(n)
    warm = min(10, n)
    async with fresh_store(ctx) as store, fresh_baseline(ctx) as raw:
        await append_sequentially(store, stream_ids(warm, "warmup"), events[:warm])
        works: dict[str, Work | None] = {
            "eventfold": lambda i: append_sequentially(store, stream_ids(n, f"o{i}"), events),
            "raw": None,
        }
        if raw is not None:

            async def raw_sequential(prefix: str, count: int) -> None:
                for stream_id, event in zip(stream_ids(count, prefix), events, strict=False):
                    await raw.append_single(stream_id, event)

            await raw_sequential("warmup", warm)
            works["raw"] = lambda i: raw_sequential(f"o{i}", n)
        t = await interleave(runs, works)
    return rate_figures(n, t, {"runs": runs})


async def concurrent_append(ctx: Context) -> Figures:
    """One single-event append to each of ``concurrent_streams`` new streams, from
    ``concurrent_tasks`` asyncio tasks at once."""
    n, tasks, runs = ctx.sizes.concurrent_streams, ctx.sizes.concurrent_tasks, ctx.sizes.append_runs
    events = make_orders(n)
    warm = stream_ids(tasks, "warmup")
    async with fresh_store(ctx) as store, fresh_baseline(ctx) as raw:
        await append_concurrently(store, warm, events[:tasks], tasks)
        works: dict[str, Work | None] = {
            "eventfold": lambda i: append_concurrently(
                store, stream_ids(n, f"o{i}"), events, tasks
            ),
            "raw": None,
            "group": None,
        }
        extra: dict[str, object] = {"tasks": tasks, "runs": runs}
        if raw is not None:
            await raw.open_workers(tasks)
            await raw.append_concurrently(warm, events[:tasks], tasks)
            works["raw"] = lambda i: raw.append_concurrently(stream_ids(n, f"o{i}"), events, tasks)
            extra["raw_baseline"] = f"{tasks} connections, one autocommit INSERT each"
        if isinstance(raw, RawSQLite):
            works["group"] = lambda i: raw.append_group(stream_ids(n, f"g{i}"), events, tasks)
            extra["raw_baseline"] = "one connection, one BEGIN IMMEDIATE transaction each"
            extra["raw_group_size"] = tasks
        t = await interleave(runs, works)
    if "group" in t:
        extra["raw_group_commit_rate"] = rate(n, statistics.median(t["group"]))
    return rate_figures(n, t, extra)


async def read_stream_workload(ctx: Context) -> Figures:
    """Read one ``read_stream_events``-event stream fully, several times."""
    n, runs, batch = (
        ctx.sizes.read_stream_events,
        ctx.sizes.read_stream_runs,
        ctx.sizes.populate_batch,
    )
    events = make_orders(n)
    async with fresh_store(ctx) as store, fresh_baseline(ctx) as raw:
        await append_batches(store, "order-0", events, batch)
        check("read_stream", await read_stream(store, "order-0"), n)
        works: dict[str, Work | None] = {
            "eventfold": lambda i: read_stream(store, "order-0"),
            "raw": None,
            "one_query": None,
        }
        if raw is not None:
            for i in range(0, n, batch):
                await raw.append_batch("order-0", events[i : i + batch], i)
            check("raw read_stream", await raw.read_stream("order-0", raw.page_size), n)
            works["raw"] = lambda i: raw.read_stream("order-0", raw.page_size)
            works["one_query"] = lambda i: raw.read_stream("order-0", None)
        t = await interleave(runs, works)
    median = statistics.median(t["eventfold"])
    extra: dict[str, object] = {"runs": runs, "best_ms": ms(min(t["eventfold"]))}
    raw_ms = None
    if "raw" in t:
        raw_ms = ms(statistics.median(t["raw"]))
        extra["raw_best_ms"] = ms(min(t["raw"]))
        extra["raw_one_query_ms"] = ms(statistics.median(t["one_query"]))
    return Figures(n, median, ms(median), raw_ms, extra)


async def read_all_workload(ctx: Context) -> Figures:
    """Read and decode the whole ``read_all_events``-event log, several times."""
    n, runs, batch = ctx.sizes.read_all_events, ctx.sizes.read_all_runs, ctx.sizes.populate_batch
    async with fresh_store(ctx) as store, fresh_baseline(ctx) as raw:
        await populate(store, n, batch, MEMORY_STREAMS)
        check("read_all", await read_all(store), n)
        works: dict[str, Work | None] = {
            "eventfold": lambda i: read_all(store),
            "raw": None,
            "one_query": None,
        }
        if raw is not None:
            await raw.populate(n, batch, MEMORY_STREAMS)
            check("raw read_all", await raw.read_all(raw.page_size), n)
            works["raw"] = lambda i: raw.read_all(raw.page_size)
            works["one_query"] = lambda i: raw.read_all(None)
        t = await interleave(runs, works)
    extra: dict[str, object] = {"runs": runs, "best_rate": rate(n, min(t["eventfold"]))}
    if "raw" in t:
        extra["raw_best_rate"] = rate(n, min(t["raw"]))
        extra["raw_one_query_rate"] = rate(n, statistics.median(t["one_query"]))
    return rate_figures(n, t, extra)


async def read_all_memory(ctx: Context) -> Figures:
    """Peak RSS of a child process that reads the whole ``memory_events``-event log."""
    n, batch = ctx.sizes.memory_events, ctx.sizes.memory_batch
    async with fresh_location(ctx) as url:
        if ctx.backend == "memory":
            # Nothing outlives the process: the child fills its own store, so its figure
            # includes the stored log.
            child = await run_child("eventfold", url, populate=n, batch=batch)
        else:
            async with eventfold.connect(url) as store:
                await populate(store, n, batch, MEMORY_STREAMS)
            child = await run_child("eventfold", url)
    check("read_all (child)", int(child["events"]), n)
    extra: dict[str, object] = {
        "baseline_rss_mb": child["baseline_rss_mb"],
        "ru_maxrss_mb": child["ru_maxrss_mb"],
        "read_rate": rate(n, float(child["seconds"])),
    }
    raw_peak: float | None = None
    async with fresh_baseline(ctx) as raw:
        if raw is not None:
            await raw.populate(n, batch, MEMORY_STREAMS)
            raw_child = await run_child("raw", raw.location)
            check("raw read_all (child)", int(raw_child["events"]), n)
            raw_peak = float(raw_child["peak_rss_mb"])
            extra["raw_baseline_rss_mb"] = raw_child["baseline_rss_mb"]
            extra["raw_read_rate"] = rate(n, float(raw_child["seconds"]))
    return Figures(n, float(child["seconds"]), float(child["peak_rss_mb"]), raw_peak, extra)


RUNNERS: dict[str, Callable[[Context], Awaitable[Figures]]] = {
    "bulk_append": bulk_append,
    "batched_append": batched_append,
    "sequential_append": sequential_append,
    "concurrent_append": concurrent_append,
    "read_stream": read_stream_workload,
    "read_all": read_all_workload,
    "read_all_memory": read_all_memory,
    **write_path.RUNNERS,
    **read_path.RUNNERS,
    **hybrid.RUNNERS,
}


# -- the child that measures memory --------------------------------------------------


async def run_child(
    kind: str, url: str, *, populate: int | None = None, batch: int | None = None
) -> dict[str, Any]:
    """Run this script as a child that reads the log at ``url``; return its report."""
    argv = [sys.executable, SCRIPT, "--child", kind, "--url", url]
    if populate is not None:
        argv += ["--child-populate", str(populate), "--child-batch", str(batch or populate)]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed ({proc.returncode}):\n{err.decode()}")
    report: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return report


async def child_read(kind: str, url: str, fill: int | None, batch: int | None) -> dict[str, Any]:
    """In the child: open the store at ``url``, note the RSS, read everything, note the peak."""
    if kind == "raw":
        raw = await open_raw(url)
        try:
            gc.collect()
            baseline = peak_rss_mb()
            start = time.perf_counter()
            n = await raw.read_all(raw.page_size)
            seconds = time.perf_counter() - start
        finally:
            await raw.close()
    else:
        async with eventfold.connect(url) as store:
            if fill:
                await populate(store, fill, batch or fill, MEMORY_STREAMS)
            gc.collect()
            baseline = peak_rss_mb()
            start = time.perf_counter()
            n = await read_all(store)
            seconds = time.perf_counter() - start
    return {
        "events": n,
        "seconds": seconds,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": peak_rss_mb(),
        "ru_maxrss_mb": ru_maxrss_mb(),
    }


# -- output --------------------------------------------------------------------------


def to_line(ctx: Context, workload: str, figures: Figures) -> dict[str, object]:
    """The JSON line for one workload."""
    unit = UNITS[workload]
    is_rate = unit in RATE_UNITS
    better: Literal["higher", "lower"] = "higher" if is_rate else "lower"
    ratio = None
    if figures.raw:
        ratio = round(figures.value / figures.raw, 3)
    target = TARGETS.get((ctx.backend, workload))
    meets: bool | None = None
    if target is not None:
        meets = figures.value >= target.value if is_rate else figures.value <= target.value
        if target.min_ratio is not None and ratio is not None:
            meets = meets and ratio >= target.min_ratio
    name, raw_name = ("rate", "raw_rate") if is_rate else ("value", "raw_value")
    line: dict[str, object] = {
        "backend": ctx.backend,
        "workload": workload,
        "events": figures.events,
        "seconds": round(figures.seconds, 6),
        name: figures.value,
        "unit": unit,
        raw_name: figures.raw,
        "ratio": ratio,
        "target": None if target is None else target.value,
        "meets_target": meets,
        "better": better,
    }
    if target is not None and target.min_ratio is not None:
        line["target_ratio"] = round(target.min_ratio, 3)
    line.update(figures.extra)
    line["scale"] = ctx.scale
    line["durability"] = _durability(ctx)
    return line


def _durability(ctx: Context) -> str:
    if ctx.backend == "sqlite":
        return f"synchronous={ctx.synchronous}"
    if ctx.backend == "postgres":
        return "synchronous_commit=on"
    return "none (memory)"


def _fmt(value: object, unit: str) -> str:
    if not isinstance(value, int | float):
        return "-"
    if unit in RATE_UNITS:
        return f"{value:,.0f} {unit}"
    return f"{value:,.1f} {unit}" if unit == "MB" else f"{value:,.2f} {unit}"


def summary(backend: str, lines: Sequence[dict[str, object]]) -> str:
    """A human-readable table of the JSON lines."""
    rows = [("workload", "eventfold", "raw", "ratio", "target", "ok")]
    for line in lines:
        workload = str(line["workload"])
        if "error" in line:
            rows.append((workload, "ERROR", "-", "-", "-", str(line["error"])[:60]))
            continue
        unit = str(line["unit"])
        value = line.get("rate", line.get("value"))
        raw = line.get("raw_rate", line.get("raw_value"))
        target = line["target"]
        op = ">=" if line["better"] == "higher" else "<="
        target_text = "-" if target is None else f"{op} {_fmt(target, unit)}"
        if "target_ratio" in line:
            target_text += f", ratio >= {line['target_ratio']}"
        meets = line["meets_target"]
        ok = "-" if meets is None else ("yes" if meets else "NO")
        ratio = "-" if line["ratio"] is None else f"{line['ratio']:.2f}"
        rows.append((workload, _fmt(value, unit), _fmt(raw, unit), ratio, target_text, ok))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    text = [f"eventfold benchmarks: {backend}"]
    for r in rows:
        text.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(text)


# -- main ----------------------------------------------------------------------------


async def run_all(ctx: Context, workloads: Sequence[str]) -> list[dict[str, object]]:
    """Run each workload, print its JSON line as soon as it is done, and return them all."""
    lines: list[dict[str, object]] = []
    for workload in workloads:
        print(f"[{ctx.backend}] {workload} …", file=sys.stderr, flush=True)
        start = time.perf_counter()
        load = os.getloadavg()[0]
        try:
            floors = await probe(ctx.backend, ctx.url, ctx.tmpdir)
            line = to_line(ctx, workload, await RUNNERS[workload](ctx))
            # Other processes on the machine skew timings; the load says how much, and
            # the floors what the disk and the server cost just then (see probe.py).
            line["load_1m"] = round(load, 2)
            line.update(floors)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            line = {"backend": ctx.backend, "workload": workload, "error": repr(exc)}
        print(
            f"[{ctx.backend}] {workload} done in {time.perf_counter() - start:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        print(json.dumps(line), flush=True)
        lines.append(line)
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark eventfold beside the raw driver; one JSON line per workload."
    )
    parser.add_argument("--backend", choices=BACKENDS, help="the store to benchmark (required)")
    parser.add_argument(
        "--url",
        help="PostgreSQL URL (default: $EVENTFOLD_BENCH_POSTGRES_URL or "
        "$EVENTFOLD_TEST_POSTGRES_URL); each workload gets its own scratch schema",
    )
    parser.add_argument(
        "--workload", nargs="+", choices=WORKLOADS, default=list(WORKLOADS), metavar="NAME",
        help=f"workloads to run (default: all): {', '.join(WORKLOADS)}",
    )  # fmt: skip
    parser.add_argument(
        "--scale", type=float, default=1.0,
        help="multiply every event count by this (default 1; tests use tiny values)",
    )  # fmt: skip
    parser.add_argument(
        "--tmpdir", help="folder for the SQLite files (default: the system's temp folder)"
    )
    parser.add_argument(
        "--synchronous", choices=("FULL", "NORMAL"), default="FULL",
        help="SQLite synchronous setting for eventfold and raw alike (default FULL: durable)",
    )  # fmt: skip
    parser.add_argument("--child", choices=("eventfold", "raw"), help=argparse.SUPPRESS)
    parser.add_argument("--child-populate", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is None and args.backend is None:
        parser.error("--backend is required: memory, sqlite or postgres")
    if args.scale <= 0:
        parser.error("--scale must be > 0")
    if args.backend is not None and args.backend not in read_path.INLINE_ONLY:
        sql_only = ("inline_append", "unit_of_work")
        if args.workload == list(WORKLOADS):
            args.workload = [w for w in WORKLOADS if w not in sql_only]
        elif any(w in sql_only for w in args.workload):
            parser.error(
                "inline_append and unit_of_work run on sqlite and postgres (inline "
                "projections, SQL in units of work)"
            )
    if args.child is None and args.backend == "postgres":
        args.url = (
            args.url
            or os.environ.get("EVENTFOLD_BENCH_POSTGRES_URL")
            or os.environ.get("EVENTFOLD_TEST_POSTGRES_URL")
        )
        if not args.url:
            parser.error("--backend postgres needs --url postgresql://user@host:5432/dbname")
    elif args.child is None and args.url:
        parser.error("--url is only for --backend postgres")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        report = asyncio.run(
            child_read(args.child, args.url, args.child_populate, args.child_batch)
        )
        print(json.dumps(report), flush=True)
        return 0
    ctx = Context(
        backend=args.backend,
        url=args.url,
        sizes=Sizes().scaled(args.scale),
        scale=args.scale,
        tmpdir=args.tmpdir,
        synchronous=args.synchronous,
    )
    assert OrderPlaced.__event_type__ == "bench.OrderPlaced"
    lines = asyncio.run(run_all(ctx, args.workload))
    print(summary(ctx.backend, lines), file=sys.stderr, flush=True)
    return 1 if any("error" in line for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
