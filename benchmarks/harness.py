"""What every workload shares: its context, its figures, fresh stores, timing in turns.

`run.py` (the existing store workloads) and `write_path.py` (the command handler's) both
build on this; neither imports the other.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import statistics
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import eventfold
from raw import RawStore, drop_schema, fresh_raw, scratch_file, split_schema, with_schema
from workloads import Sizes, timed

__all__ = [
    "SETTLE",
    "Context",
    "Figures",
    "Work",
    "check",
    "fresh_baseline",
    "fresh_location",
    "fresh_store",
    "interleave",
    "ms",
    "rate",
    "rate_figures",
]

SETTLE = 0.05
"""Seconds of pause before each timed run (see `interleave`)."""


@dataclass(frozen=True)
class Context:
    """What every workload needs to know."""

    backend: str
    url: str | None
    """The PostgreSQL URL (any ``schema`` option is replaced per workload)."""
    sizes: Sizes
    scale: float
    tmpdir: str | None
    synchronous: str
    """SQLite's ``synchronous`` setting, for eventfold and the raw baseline alike."""


@dataclass
class Figures:
    """One workload's outcome, before it is turned into a JSON line."""

    events: int
    seconds: float
    value: float
    raw: float | None
    extra: dict[str, object] = field(default_factory=dict)


# -- fresh stores --------------------------------------------------------------------


@asynccontextmanager
async def fresh_location(ctx: Context) -> AsyncIterator[str]:
    """The URL of an empty store, removed afterwards."""
    if ctx.backend == "memory":
        yield "memory://"
    elif ctx.backend == "sqlite":
        folder, path = scratch_file("eventfold-bench-", ctx.tmpdir)
        try:
            yield f"sqlite:///{path}?synchronous={ctx.synchronous}"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    else:
        assert ctx.url is not None
        conninfo, _ = split_schema(ctx.url)
        schema = f"bench_{secrets.token_hex(6)}"
        try:
            yield with_schema(ctx.url, schema)
        finally:
            await drop_schema(conninfo, schema)


@asynccontextmanager
async def fresh_store(ctx: Context) -> AsyncIterator[eventfold.EventStore]:
    """An open, empty eventfold store, removed afterwards."""
    async with fresh_location(ctx) as url, eventfold.connect(url) as store:
        yield store


@asynccontextmanager
async def fresh_baseline(ctx: Context) -> AsyncIterator[RawStore | None]:
    """An empty raw baseline, or None for the memory backend (it has no raw driver)."""
    if ctx.backend == "memory":
        yield None
        return
    async with fresh_raw(ctx.backend, ctx.url, ctx.tmpdir, ctx.synchronous) as raw:
        yield raw


Work = Callable[[int], Awaitable[object]]
"""One timed run of something, given the run's number (to pick fresh stream ids)."""


async def interleave(runs: int, works: dict[str, Work | None]) -> dict[str, list[float]]:
    """Seconds of ``runs`` runs of each work (skipping None), taken in turns.

    eventfold and its raw baseline alternate run by run, so a burst of load from other
    processes on the machine hits both alike instead of one of them. A short pause before
    each run lets background work left by the one before (the SQLite backend's WAL
    checkpoints) finish instead of landing in the next, possibly the other side's, run.
    """
    times: dict[str, list[float]] = {name: [] for name, work in works.items() if work}
    for i in range(runs):
        for name, work in works.items():
            if work is not None:
                await asyncio.sleep(SETTLE)
                times[name].append(await timed(partial(work, i)))
    return times


def check(what: str, got: int, expected: int) -> None:
    if got != expected:
        raise AssertionError(f"{what} returned {got} events, expected {expected}")


def rate(events: int, seconds: float) -> float:
    return round(events / seconds, 1) if seconds > 0 else float(events)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def rate_figures(n: int, times: dict[str, list[float]], extra: dict[str, object]) -> Figures:
    median = statistics.median(times["eventfold"])
    raw = rate(n, statistics.median(times["raw"])) if "raw" in times else None
    return Figures(n, median, rate(n, median), raw, extra)
