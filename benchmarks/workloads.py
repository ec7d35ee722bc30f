"""The workloads: their names, units and targets, the events they write, their sizes, and
what they do through eventfold's public API.

The functions here do one piece of work on an open store; setting up fresh stores, timing
runs in turns with the raw driver and reporting is `run.py`'s job. The same sizes and
events feed the raw baselines in `raw.py`.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, fields, replace

import eventfold

__all__ = [
    "RATE_UNITS",
    "STREAM_CATEGORY",
    "TARGETS",
    "UNITS",
    "WORKLOADS",
    "OrderPlaced",
    "Sizes",
    "Target",
    "append_batches",
    "append_concurrently",
    "append_sequentially",
    "make_orders",
    "peak_rss_mb",
    "populate",
    "read_all",
    "read_stream",
    "ru_maxrss_mb",
    "stream_ids",
    "timed",
]

STREAM_CATEGORY = "order"
"""Stream ids are ``order-<n>`` (category ``order``)."""

WORKLOADS = (
    "bulk_append",
    "batched_append",
    "sequential_append",
    "concurrent_append",
    "read_stream",
    "read_all",
    "read_all_memory",
    "w1_sequential",
    "w1_concurrent",
    "w1_latency",
    "load_stream",
    "load_snapshot",
    "catchup_document",
    "catchup_sql",
    "live_tail",
    "inline_append",
    "unit_of_work",
)
UNITS = {
    "bulk_append": "events/s",
    "batched_append": "events/s",
    "sequential_append": "appends/s",
    "concurrent_append": "appends/s",
    "read_stream": "ms",
    "read_all": "events/s",
    "read_all_memory": "MB",
    "w1_sequential": "commands/s",
    "w1_concurrent": "commands/s",
    "w1_latency": "ms",
    "load_stream": "ms",
    "load_snapshot": "ms",
    "catchup_document": "events/s",
    "catchup_sql": "events/s",
    "live_tail": "ms",
    "inline_append": "appends/s",
    "unit_of_work": "appends/s",
}
RATE_UNITS = ("events/s", "appends/s", "commands/s")


@dataclass(frozen=True)
class Target:
    """A figure to reach: at least ``value`` (rates) or at most ``value`` (ms, MB)."""

    value: float
    min_ratio: float | None = None
    """Also at least this eventfold/raw ratio."""


TARGETS: dict[tuple[str, str], Target] = {
    ("sqlite", "bulk_append"): Target(120_000),
    ("postgres", "bulk_append"): Target(80_000),
    ("sqlite", "concurrent_append"): Target(25_000),
    ("postgres", "concurrent_append"): Target(5_000),
    ("sqlite", "read_stream"): Target(20),
    ("postgres", "read_stream"): Target(30),
    ("sqlite", "read_all"): Target(500_000, min_ratio=1 / 1.5),
    ("postgres", "read_all"): Target(250_000, min_ratio=1 / 1.5),
    ("sqlite", "read_all_memory"): Target(150),
    ("postgres", "read_all_memory"): Target(150),
    ("sqlite", "w1_sequential"): Target(3_000),
    ("postgres", "w1_sequential"): Target(1_500),
    ("sqlite", "w1_concurrent"): Target(15_000),
    ("postgres", "w1_concurrent"): Target(4_000),
    ("sqlite", "w1_latency"): Target(2),
    ("postgres", "w1_latency"): Target(4),
    ("sqlite", "load_stream"): Target(25),
    ("postgres", "load_stream"): Target(40),
    ("sqlite", "load_snapshot"): Target(1),
    ("postgres", "load_snapshot"): Target(2),
    ("sqlite", "catchup_document"): Target(100_000),
    ("postgres", "catchup_document"): Target(60_000),
    ("sqlite", "catchup_sql"): Target(40_000),
    ("postgres", "catchup_sql"): Target(20_000),
    ("sqlite", "live_tail"): Target(50),
    ("postgres", "live_tail"): Target(50),
    ("sqlite", "inline_append"): Target(0, min_ratio=0.6),
    ("postgres", "inline_append"): Target(0, min_ratio=0.6),
    ("sqlite", "unit_of_work"): Target(0, min_ratio=0.7),
    ("postgres", "unit_of_work"): Target(0, min_ratio=0.7),
}


class OrderPlaced(eventfold.Event):
    """A small order: about 100 bytes of JSON."""

    __event_type__ = "bench.OrderPlaced"

    order_id: str
    sku: str
    quantity: int
    unit_price_cents: int
    currency: str


def make_orders(n: int, start: int = 0) -> list[OrderPlaced]:
    """``n`` distinct orders, numbered from ``start``."""
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


@dataclass(frozen=True)
class Sizes:
    """How much each workload does; `scaled` shrinks or grows the event counts."""

    bulk_events: int = 10_000
    """Events in the one `append` call of ``bulk_append``."""
    bulk_runs: int = 5
    append_runs: int = 3
    """Timed runs of the batched, sequential and concurrent appends (median reported)."""
    batched_events: int = 100_000
    batch_size: int = 1_000
    sequential_streams: int = 1_000
    concurrent_streams: int = 1_000
    concurrent_tasks: int = 32
    read_stream_events: int = 10_000
    read_stream_runs: int = 7
    read_all_events: int = 100_000
    read_all_runs: int = 5
    populate_batch: int = 1_000
    """Events per `append` when filling a store for the read workloads."""
    memory_events: int = 1_000_000
    memory_batch: int = 10_000
    """Events per `append` when filling the store for ``read_all_memory``."""
    w1_accounts: int = 1_000
    """W1's accounts: each is opened, then given ``w1_rounds`` deposits, round-robin."""
    w1_rounds: int = 20
    w1_tasks: int = 32
    """Concurrent asyncio tasks of ``w1_concurrent``."""
    w1_runs: int = 3
    load_events: int = 10_000
    """Events of the stream ``load_stream`` and ``load_snapshot`` load."""
    load_runs: int = 7
    snapshot_tail: int = 100
    """Events after the snapshot in ``load_snapshot`` (it sits at ``load_events - tail``)."""
    snapshot_loads: int = 200
    """Loads per timed run of ``load_snapshot`` (each takes about a millisecond)."""
    catchup_events: int = 100_000
    """Events the ``catchup_*`` workloads build their projections over."""
    catchup_runs: int = 3
    live_events: int = 300
    """Single-event appends whose latency ``live_tail`` measures."""
    inline_appends: int = 4_000
    """Single-event appends per timed run of ``inline_append`` (with and without), and
    units of work per timed run of ``unit_of_work``."""
    inline_runs: int = 5

    _COUNTS = (
        "bulk_events",
        "batched_events",
        "sequential_streams",
        "concurrent_streams",
        "read_stream_events",
        "read_all_events",
        "memory_events",
        "w1_accounts",
        "load_events",
        "snapshot_tail",
        "catchup_events",
        "live_events",
        "inline_appends",
    )

    def scaled(self, scale: float) -> Sizes:
        """These sizes with every event count times ``scale`` (at least 2 each).

        Batch sizes and the task count are capped by the counts they divide, and the
        number of repeated runs stays the same.
        """
        counts = {name: max(2, round(getattr(self, name) * scale)) for name in self._COUNTS}
        s = replace(self, **counts)
        return replace(
            s,
            batch_size=min(s.batch_size, s.batched_events),
            concurrent_tasks=min(s.concurrent_tasks, s.concurrent_streams, s.inline_appends),
            populate_batch=min(s.populate_batch, s.read_all_events),
            memory_batch=min(s.memory_batch, s.memory_events),
            w1_tasks=min(s.w1_tasks, s.w1_accounts),
            snapshot_tail=min(s.snapshot_tail, s.load_events - 1),
        )

    def as_dict(self) -> dict[str, int]:
        """Every size by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB.

    Linux's ``VmHWM``, not ``ru_maxrss``: a child started by fork and exec inherits in
    ``ru_maxrss`` the high-water mark of the forked copy of its parent, so it would
    report the parent's memory. Elsewhere ``ru_maxrss`` is the best there is.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return ru_maxrss_mb()


def ru_maxrss_mb() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS, where this is only indicative).
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


async def timed(work: Callable[[], Awaitable[object]]) -> float:
    """Seconds ``work`` takes, after a full collection so earlier garbage is not billed to it.

    The collector stays enabled during the run, for eventfold and raw alike: what a real
    program would see.
    """
    gc.collect()
    start = time.perf_counter()
    await work()
    return time.perf_counter() - start


def stream_ids(n: int, prefix: str = STREAM_CATEGORY) -> list[str]:
    """``n`` distinct stream ids."""
    return [f"{prefix}-{i}" for i in range(n)]


async def append_batches(
    store: eventfold.EventStore,
    stream_id: str,
    events: Sequence[eventfold.Event],
    batch_size: int,
    start_version: int = 0,
) -> None:
    """Append ``events`` to one stream in calls of ``batch_size``, each with its exact
    expected version (the version the previous call returned)."""
    version = start_version
    for i in range(0, len(events), batch_size):
        result = await store.append(stream_id, events[i : i + batch_size], expected_version=version)
        version = result.version


async def append_sequentially(
    store: eventfold.EventStore, streams: Sequence[str], events: Sequence[OrderPlaced]
) -> None:
    """One single-event append per new stream, each awaited before the next."""
    for stream_id, event in zip(streams, events, strict=True):
        await store.append(stream_id, [event], expected_version=eventfold.NO_STREAM)


async def append_concurrently(
    store: eventfold.EventStore,
    streams: Sequence[str],
    events: Sequence[OrderPlaced],
    tasks: int,
) -> None:
    """Single-event appends to new streams from ``tasks`` asyncio tasks sharing one queue."""
    work = iter(zip(streams, events, strict=True))

    async def worker() -> None:
        for stream_id, event in work:
            await store.append(stream_id, [event], expected_version=eventfold.NO_STREAM)

    await asyncio.gather(*(worker() for _ in range(tasks)))


async def populate(
    store: eventfold.EventStore, total: int, batch: int, streams: int | None = None
) -> None:
    """Fill a store with ``total`` orders in appends of ``batch`` events.

    With ``streams`` the batches go round-robin over that many streams (so the log
    interleaves them); without, one batch per stream.
    """
    version: dict[str, int] = {}
    last = eventfold.START
    for n, start in enumerate(range(0, total, batch)):
        stream_id = f"{STREAM_CATEGORY}-{n % streams if streams else n}"
        events = make_orders(min(batch, total - start), start)
        result = await store.append(stream_id, events, expected_version=version.get(stream_id, 0))
        version[stream_id] = result.version
        last = result.position
    # On PostgreSQL the log is readable up to the oldest write transaction still running
    # anywhere in the cluster: wait until our own last append is, before timing reads.
    for _ in range(3000):
        if await store.head() >= last:
            return
        await asyncio.sleep(0.01)
    raise RuntimeError(f"the log never became readable up to {last}")


async def read_stream(store: eventfold.EventStore, stream_id: str) -> int:
    """Read a whole stream, reading a field of each payload as a consumer would; return
    how many events came back (every order has a quantity of at least 1)."""
    n = 0
    async for event in store.read_stream(stream_id):
        if event.data.quantity > 0:
            n += 1
    return n


async def read_all(store: eventfold.EventStore) -> int:
    """Read the whole log, reading a field of each payload as a consumer would; return
    how many events came back."""
    n = 0
    async for event in store.read_all():
        if event.data.quantity > 0:
            n += 1
    return n
