"""The read path's workloads: async catch-up into a document and a SQL projection, and
the live tail's latency from append commit to projection applied.

- ``catchup_document``: ``catchup_events`` orders over 1,000 streams, built from the start
  of the log into a document per stream (`DocumentProjection`), a checkpoint per batch
  committed with the batch's documents. Raw baseline: the same pages read with the bare
  driver, folded into a dict and written with one ``executemany`` upsert plus the
  checkpoint update per batch, in one transaction.
- ``catchup_sql``: the same log into a SQL table, one ``INSERT … ON CONFLICT DO UPDATE``
  per event queued by the projection's handler (``tx.write``: a batch's upserts reach
  PostgreSQL together). Raw baseline: the same statement per event with the bare driver's
  ``executemany``, one transaction per batch.
- ``live_tail``: a daemon at the tail; ``live_events`` single-event appends are made
  through a second store object (so the wake-up travels as it would from another
  process: ``PRAGMA data_version`` on SQLite, ``NOTIFY`` on PostgreSQL), and each one's
  time from the append's return to the projection's checkpoint passing it is taken.
- ``inline_append``: 32-task single-event appends with one inline document projection,
  beside the same appends to a store without one (SQLite and PostgreSQL only).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

import eventfold
from eventfold.projections import (
    DaemonOptions,
    DocumentProjection,
    Projection,
    ProjectionDaemon,
    attach_inline,
    read_models_for,
    rebuild,
)
from harness import Context, Figures, fresh_baseline, fresh_location, interleave, ms, rate
from raw import RawPostgres, RawSQLite, RawStore
from workloads import OrderPlaced, append_concurrently, make_orders, populate, stream_ids

__all__ = ["RUNNERS"]

STREAMS = 1_000
BATCH = 1_000
"""Events per batch (and per checkpoint), eventfold and raw alike."""


class Summary(msgspec.Struct):
    orders: int = 0
    units: int = 0


def document_projection(version: int) -> DocumentProjection[Summary]:
    proj = DocumentProjection("order_summary", document=Summary, version=version)

    @proj.on(OrderPlaced)
    def placed(doc: Summary, event: eventfold.RecordedEvent) -> Summary:
        return Summary(doc.orders + 1, doc.units + event.data.quantity)

    return proj


def sql_projection(version: int, backend: str) -> Projection:
    proj = Projection("order_totals", version=version)
    mark = "?" if backend == "sqlite" else "%s"
    if backend == "memory":
        # No SQL in memory: the handler writes a document per event instead.

        @proj.on(OrderPlaced)
        async def put(event: eventfold.RecordedEvent, tx: Any) -> None:
            doc = await tx.get(event.stream_id) or {"orders": 0, "units": 0}
            doc["orders"] += 1
            doc["units"] += event.data.quantity
            await tx.put(event.stream_id, doc)

        return proj

    @proj.on_setup
    async def setup(tx: Any) -> None:
        await tx.execute(
            f"CREATE TABLE IF NOT EXISTS {tx.table('order_totals')} "
            "(stream_id TEXT PRIMARY KEY, orders BIGINT NOT NULL, units BIGINT NOT NULL)"
        )

    @proj.on(OrderPlaced)
    async def placed(event: eventfold.RecordedEvent, tx: Any) -> None:
        table = tx.table("order_totals")
        await tx.write(
            f"INSERT INTO {table} VALUES ({mark}, 1, {mark}) ON CONFLICT (stream_id) DO UPDATE "
            f"SET orders = {table}.orders + 1, units = {table}.units + excluded.units",
            (event.stream_id, event.data.quantity),
        )

    return proj


async def _catchup(ctx: Context, kind: str) -> Figures:
    n, runs = ctx.sizes.catchup_events, ctx.sizes.catchup_runs
    options = DaemonOptions(batch_size=BATCH)
    async with (
        fresh_location(ctx) as url,
        eventfold.connect(url) as store,
        fresh_baseline(ctx) as raw,
    ):
        await populate(store, n, max(n // (STREAMS * 10), 1), streams=STREAMS)
        models = read_models_for(store)
        version = 0

        async def ours(_: int) -> None:
            nonlocal version
            version += 1
            proj = (
                document_projection(version)
                if kind == "document"
                else sql_projection(version, ctx.backend)
            )
            await rebuild(store, models, proj, options=options)

        works: dict[str, Callable[[int], Awaitable[object]] | None] = {"eventfold": ours}
        works["raw"] = None
        if raw is not None:
            await raw.populate(n, max(n // (STREAMS * 10), 1), streams=STREAMS)
            works["raw"] = lambda i: raw_catchup(raw, kind, i)
        await ours(0)  # warm: the tables exist, the caches are filled
        t = await interleave(runs, works)
    median = statistics.median(t["eventfold"])
    raw_rate = rate(n, statistics.median(t["raw"])) if "raw" in t else None
    extra: dict[str, object] = {"batch": BATCH, "streams": STREAMS, "runs": runs}
    return Figures(n, median, rate(n, median), raw_rate, extra)


async def catchup_document(ctx: Context) -> Figures:
    """Build a document projection over the whole log (checkpoint per batch)."""
    return await _catchup(ctx, "document")


async def catchup_sql(ctx: Context) -> Figures:
    """Build a SQL projection (one upsert per event) over the whole log."""
    return await _catchup(ctx, "sql")


# -- the raw baselines -----------------------------------------------------------------


async def raw_catchup(raw: RawStore, kind: str, run: int) -> int:
    if isinstance(raw, RawSQLite):
        return _sqlite_catchup(raw, kind, run)
    assert isinstance(raw, RawPostgres)
    return await _postgres_catchup(raw, kind, run)


def _sqlite_catchup(raw: RawSQLite, kind: str, run: int) -> int:
    conn, decode = raw.conn, msgspec.json.Decoder(OrderPlaced).decode
    table, checkpoints = f"raw_{kind}_{run}", f"raw_ck_{kind}_{run}"
    if kind == "document":
        conn.execute(f"CREATE TABLE {table} (id TEXT PRIMARY KEY, data BLOB NOT NULL)")
        upsert = (
            f"INSERT INTO {table} (id, data) VALUES (?, ?) "
            "ON CONFLICT (id) DO UPDATE SET data = excluded.data"
        )
    else:
        conn.execute(
            f"CREATE TABLE {table} (stream_id TEXT PRIMARY KEY, orders BIGINT, units BIGINT)"
        )
        upsert = (
            f"INSERT INTO {table} VALUES (?, 1, ?) ON CONFLICT (stream_id) DO UPDATE "
            f"SET orders = {table}.orders + 1, units = {table}.units + excluded.units"
        )
    conn.execute(f"CREATE TABLE {checkpoints} (name TEXT PRIMARY KEY, position INTEGER)")
    conn.execute(f"INSERT INTO {checkpoints} VALUES ('p', 0)")
    encode, docs_decode = msgspec.json.encode, msgspec.json.Decoder(Summary).decode
    position, n = 0, 0
    while True:
        rows = conn.execute(
            "SELECT stream_id, data, position FROM events WHERE position > ? "
            "ORDER BY position LIMIT ?",
            (position, BATCH),
        ).fetchall()
        if not rows:
            return n
        conn.execute("BEGIN IMMEDIATE")
        if kind == "document":
            ids = list({r[0] for r in rows})
            found = conn.execute(
                f"SELECT id, data FROM {table} WHERE id IN ({','.join('?' * len(ids))})", ids
            ).fetchall()
            docs = {i: docs_decode(d) for i, d in found}
            for stream_id, data, _ in rows:
                doc = docs.get(stream_id) or Summary()
                docs[stream_id] = Summary(doc.orders + 1, doc.units + decode(data).quantity)
            conn.executemany(upsert, [(i, encode(d)) for i, d in docs.items()])
        else:
            conn.executemany(upsert, [(r[0], decode(r[1]).quantity) for r in rows])
        position = rows[-1][2]
        conn.execute(f"UPDATE {checkpoints} SET position = ? WHERE name = 'p'", (position,))
        conn.execute("COMMIT")
        n += len(rows)


async def _postgres_catchup(raw: RawPostgres, kind: str, run: int) -> int:
    conn, decode = raw.conn, msgspec.json.Decoder(OrderPlaced).decode
    table, checkpoints = f"raw_{kind}_{run}", f"raw_ck_{kind}_{run}"
    if kind == "document":
        await conn.execute(f"CREATE TABLE {table} (id TEXT PRIMARY KEY, data jsonb NOT NULL)")
        upsert = (
            f"INSERT INTO {table} (id, data) VALUES (%s, %s::jsonb) "
            "ON CONFLICT (id) DO UPDATE SET data = excluded.data"
        )
    else:
        await conn.execute(
            f"CREATE TABLE {table} (stream_id TEXT PRIMARY KEY, orders BIGINT, units BIGINT)"
        )
        upsert = (
            f"INSERT INTO {table} VALUES (%s, 1, %s) ON CONFLICT (stream_id) DO UPDATE "
            f"SET orders = {table}.orders + 1, units = {table}.units + excluded.units"
        )
    await conn.execute(f"CREATE TABLE {checkpoints} (name TEXT PRIMARY KEY, tx text, seq bigint)")
    await conn.execute(f"INSERT INTO {checkpoints} VALUES ('p', '0', 0)")
    encode, docs_decode = msgspec.json.encode, msgspec.json.Decoder(Summary).decode
    tx, seq, n = "0", 0, 0
    while True:
        cur = await conn.execute(
            "SELECT stream_id, data, transaction_id::text, seq FROM events "
            "WHERE (transaction_id, seq) > (%s::xid8, %s) "
            "AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) "
            "ORDER BY transaction_id, seq LIMIT %s",
            (tx, seq, BATCH),
        )
        rows = await cur.fetchall()
        if not rows:
            return n
        async with conn.transaction():
            if kind == "document":
                ids = list({r[0] for r in rows})
                got = await conn.execute(
                    f"SELECT id, data::text FROM {table} WHERE id = ANY(%s)", (ids,)
                )
                docs = {i: docs_decode(d) for i, d in await got.fetchall()}
                for stream_id, data, _, _ in rows:
                    doc = docs.get(stream_id) or Summary()
                    docs[stream_id] = Summary(doc.orders + 1, doc.units + decode(data).quantity)
                async with conn.cursor() as c:
                    await c.executemany(upsert, [(i, encode(d).decode()) for i, d in docs.items()])
            else:
                async with conn.cursor() as c:
                    await c.executemany(upsert, [(r[0], decode(r[1]).quantity) for r in rows])
            tx, seq = rows[-1][2], rows[-1][3]
            await conn.execute(
                f"UPDATE {checkpoints} SET tx = %s, seq = %s WHERE name = 'p'", (tx, seq)
            )
        n += len(rows)


# -- the live tail ---------------------------------------------------------------------


async def live_tail(ctx: Context) -> Figures:
    """p99 seconds from an append's return to the projection's checkpoint passing it."""
    n = ctx.sizes.live_events
    async with (
        fresh_location(ctx) as url,
        eventfold.connect(url) as store,
        eventfold.connect(url) as other,
    ):
        # The memory backend has no second connection: its appends wake the daemon directly.
        writer = store if ctx.backend == "memory" else other
        models = read_models_for(store)
        proj = document_projection(1)
        daemon = ProjectionDaemon(store, models, [proj], options=DaemonOptions(batch_size=BATCH))
        samples: list[float] = []
        async with daemon:
            first = await writer.append("order-0", make_orders(1), expected_version=eventfold.ANY)
            await daemon.wait_for(proj.name, first.position, timeout=30)
            for i in range(n):
                await asyncio.sleep(0.005)
                result = await writer.append(
                    f"order-{i % 50}", make_orders(1, i), expected_version=eventfold.ANY
                )
                started = time.perf_counter()
                await daemon.wait_for(proj.name, result.position, timeout=30)
                samples.append(time.perf_counter() - started)
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    extra: dict[str, object] = {
        "p50_ms": ms(statistics.median(samples)),
        "max_ms": ms(samples[-1]),
        "appends": n,
        "wake_up": {"sqlite": "PRAGMA data_version", "postgres": "LISTEN/NOTIFY"}.get(
            ctx.backend, "in-process"
        ),
    }
    return Figures(n, sum(samples), ms(p99), None, extra)


async def inline_append(ctx: Context) -> Figures:
    """32-task single-event appends with one inline document projection, beside the same
    appends with none (the ``raw`` side of this line): the ratio is the inline cost."""
    n, tasks, runs = ctx.sizes.inline_appends, ctx.sizes.concurrent_tasks, ctx.sizes.inline_runs
    events = make_orders(n)
    async with (
        fresh_location(ctx) as url,
        eventfold.connect(url) as store,
        fresh_location(ctx) as plain_url,
        eventfold.connect(plain_url) as plain,
    ):
        await attach_inline(store, [document_projection(1)])
        works: dict[str, Callable[[int], Awaitable[object]] | None] = {
            "eventfold": lambda i: append_concurrently(
                store, stream_ids(n, f"o{i}"), events, tasks
            ),
            "raw": lambda i: append_concurrently(plain, stream_ids(n, f"o{i}"), events, tasks),
        }
        for work in works.values():
            assert work is not None
            await work(-1)
        t = await interleave(runs, works)
    median = statistics.median(t["eventfold"])
    extra: dict[str, object] = {
        "tasks": tasks,
        "runs": runs,
        "raw_baseline": "the same appends to a store with no inline projection",
    }
    return Figures(n, median, rate(n, median), rate(n, statistics.median(t["raw"])), extra)


INLINE_ONLY = ("sqlite", "postgres")
"""Backends that run inline projections (``inline_append`` runs on these only)."""

RUNNERS: dict[str, Callable[[Context], Awaitable[Figures]]] = {
    "catchup_document": catchup_document,
    "catchup_sql": catchup_sql,
    "live_tail": live_tail,
    "inline_append": inline_append,
}
