"""The write path's workloads: commands through `eventfold.CommandHandler`, each beside
the raw driver doing the same reads and one-row insert transactions.

W1 is ``w1_accounts`` bank accounts, each opened and then given ``w1_rounds`` deposits,
round-robin (1,000 × 21 = 21,000 commands at scale 1). Every command is a full load with
no cache (the snapshot lookup, then the stream's events folded), a decision, and an
append of one event at the version read. The raw baseline does per command: one SELECT of
the stream's events, the same fold and decision, and one single-row insert transaction.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

import eventfold
from harness import Context, Figures, Work, check, fresh_baseline, fresh_store, interleave, ms, rate
from raw import RawPostgres, RawSQLite, RawStore
from workloads import append_batches

__all__ = [
    "ACCOUNT",
    "RUNNERS",
    "Account",
    "AccountOpened",
    "Deposit",
    "Deposited",
    "OpenAccount",
    "w1_commands",
]


# -- the decider -----------------------------------------------------------------------


class AccountOpened(eventfold.Event):
    __event_type__ = "bench.AccountOpened"

    account_id: str
    owner: str


class Deposited(eventfold.Event):
    __event_type__ = "bench.Deposited"

    amount: int


class OpenAccount(msgspec.Struct, frozen=True):
    account_id: str
    owner: str


class Deposit(msgspec.Struct, frozen=True):
    amount: int


Command = OpenAccount | Deposit
AccountEvent = AccountOpened | Deposited


class Account(msgspec.Struct, frozen=True):
    """An account's state: small, immutable, and what snapshots store."""

    opened: bool = False
    balance: int = 0
    deposits: int = 0


class AccountError(Exception):
    """A command the account refuses."""


def evolve(state: Account, event: AccountEvent) -> Account:
    if type(event) is Deposited:
        return Account(True, state.balance + event.amount, state.deposits + 1)
    if type(event) is AccountOpened:
        return Account(True, 0, 0)
    return state


def decide(command: Command, state: Account) -> list[AccountEvent]:
    if type(command) is Deposit:
        if not state.opened:
            raise AccountError("deposit to an account that is not open")
        if command.amount <= 0:
            raise AccountError("deposits must be positive")
        return [Deposited(amount=command.amount)]
    if type(command) is OpenAccount:
        if state.opened:
            raise AccountError("the account is already open")
        return [AccountOpened(account_id=command.account_id, owner=command.owner)]
    raise AccountError(f"unknown command {command!r}")


ACCOUNT: eventfold.Decider[Command, Account, AccountEvent] = eventfold.Decider(
    initial_state=Account(), evolve=evolve, decide=decide
)
_DECODERS: dict[str, Callable[[bytes], Any]] = {
    cls.__event_type__: msgspec.json.Decoder(cls).decode for cls in (AccountOpened, Deposited)
}
_ENCODE = msgspec.json.Encoder().encode
_EMPTY_META = b"{}"


def w1_commands(prefix: str, accounts: int, rounds: int) -> list[tuple[str, Command]]:
    """W1's commands in order: every account opened, then ``rounds`` deposits round-robin."""
    ids = [f"account-{prefix}{k}" for k in range(accounts)]
    work: list[tuple[str, Command]] = [
        (sid, OpenAccount(account_id=sid, owner=f"owner {k}")) for k, sid in enumerate(ids)
    ]
    for r in range(1, rounds + 1):
        work += [(sid, Deposit(amount=1 + (k * 7 + r) % 100)) for k, sid in enumerate(ids)]
    return work


def account_events(n: int) -> list[AccountEvent]:
    """One account's ``n`` events: opened, then ``n - 1`` deposits."""
    events: list[AccountEvent] = [AccountOpened(account_id="account-0", owner="owner 0")]
    return events + [Deposited(amount=1 + i % 100) for i in range(n - 1)]


# -- running commands ------------------------------------------------------------------

Handle = Callable[[str, Command], Awaitable[object]]
"""One command: eventfold's handler, or a raw baseline's load + decide + insert."""


async def run_sequentially(
    handle: Handle, work: Sequence[tuple[str, Command]], latencies: list[float] | None = None
) -> None:
    """Each command awaited before the next; with ``latencies``, note each one's seconds."""
    if latencies is None:
        for stream_id, command in work:
            await handle(stream_id, command)
        return
    clock = time.perf_counter
    for stream_id, command in work:
        start = clock()
        await handle(stream_id, command)
        latencies.append(clock() - start)


async def run_concurrently(handles: Sequence[Handle], work: Sequence[tuple[str, Command]]) -> None:
    """The commands from one task per handle, each stream's commands all in one task.

    Stream ``k`` (in order of first appearance) belongs to task ``k % len(handles)``, which
    runs its commands in the order given: a deposit never overtakes its account's opening,
    and tasks never race each other for a stream.
    """
    lane_of: dict[str, int] = {}
    lanes: list[list[tuple[str, Command]]] = [[] for _ in handles]
    for item in work:
        lane = lane_of.setdefault(item[0], len(lane_of) % len(handles))
        lanes[lane].append(item)
    runs = [run_sequentially(h, lane) for h, lane in zip(handles, lanes, strict=True)]
    await asyncio.gather(*runs)


def eventfold_handle(store: eventfold.EventStore) -> Handle:
    handler = eventfold.CommandHandler(store, ACCOUNT)

    async def handle(stream_id: str, command: Command) -> object:
        return await handler.handle(stream_id, command)

    return handle


# -- the raw baselines -----------------------------------------------------------------

_SQLITE_LOAD = "SELECT version, type, data FROM events WHERE stream_id = ? ORDER BY version"
_SQLITE_LOAD_PAGE = (
    "SELECT version, type, data FROM events WHERE stream_id = ? AND version > ? "
    "ORDER BY version LIMIT ?"
)
_SQLITE_INSERT = (
    "INSERT INTO events (event_id, stream_id, version, type, schema_version, data, "
    "metadata, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQLITE_SNAPSHOTS = """CREATE TABLE IF NOT EXISTS snapshots (
    stream_id TEXT NOT NULL, state_type TEXT NOT NULL, version INTEGER NOT NULL,
    schema_version INTEGER NOT NULL, data BLOB NOT NULL, event_id BLOB NOT NULL,
    recorded_at INTEGER NOT NULL, taken_at INTEGER NOT NULL,
    PRIMARY KEY (stream_id, state_type, version)) WITHOUT ROWID"""
_SQLITE_SNAPSHOT = (
    "SELECT version, data FROM snapshots WHERE stream_id = ? AND state_type = ? "
    "ORDER BY version DESC LIMIT 1"
)
_PG_LOAD = "SELECT version, type, data FROM events WHERE stream_id = %s ORDER BY version"
_PG_LOAD_PAGE = (
    "SELECT version, type, data FROM events WHERE stream_id = %s AND version > %s "
    "ORDER BY version LIMIT %s"
)
_PG_INSERT = (
    "INSERT INTO events (event_id, stream_id, version, type, schema_version, data, metadata) "
    "VALUES (%s, %s, %s, %s, %s, %b, %b)"
)
_PG_SNAPSHOTS = """CREATE TABLE IF NOT EXISTS snapshots (
    stream_id text COLLATE "C" NOT NULL, state_type text NOT NULL, version bigint NOT NULL,
    schema_version int NOT NULL, data bytea NOT NULL, event_id bytea NOT NULL,
    recorded_us bigint NOT NULL, taken_us bigint NOT NULL,
    PRIMARY KEY (stream_id, state_type, version))"""
_PG_SNAPSHOT = (
    "SELECT version, data FROM snapshots WHERE stream_id = %s AND state_type = %s "
    "ORDER BY version DESC LIMIT 1"
)
_SNAPSHOT_DECODE = msgspec.json.Decoder(Account).decode


def _fold(rows: Any, state: Account, version: int) -> tuple[Account, int]:
    for version, typ, data in rows:  # noqa: B007 (the last version is the result)
        state = evolve(state, _DECODERS[typ](data))
    return state, version


def _one(events: Sequence[AccountEvent]) -> AccountEvent:
    if len(events) != 1:
        raise AssertionError(f"W1 commands decide one event, got {len(events)}")
    return events[0]


def raw_sqlite_handle(raw: RawSQLite) -> Handle:
    """Per command: one SELECT, the fold, the decision, one BEGIN IMMEDIATE/INSERT/COMMIT."""
    conn = raw.conn

    async def handle(stream_id: str, command: Command) -> object:
        state, version = _fold(conn.execute(_SQLITE_LOAD, (stream_id,)), Account(), 0)
        event = _one(decide(command, state))
        row = (
            os.urandom(16), stream_id, version + 1, event.__event_type__, 1, _ENCODE(event),
            _EMPTY_META, time.time_ns() // 1000,
        )  # fmt: skip
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_SQLITE_INSERT, row)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return None

    return handle


async def raw_sqlite_group(raw: RawSQLite, work: Sequence[tuple[str, Command]], group: int) -> None:
    """The group-commit ideal: ``group`` commands loaded and decided, then inserted in one
    transaction (what a single writer batching concurrent commands can at best do)."""
    conn = raw.conn
    for at in range(0, len(work), group):
        rows = []
        now = time.time_ns() // 1000
        for stream_id, command in work[at : at + group]:
            state, version = _fold(conn.execute(_SQLITE_LOAD, (stream_id,)), Account(), 0)
            event = _one(decide(command, state))
            rows.append(
                (os.urandom(16), stream_id, version + 1, event.__event_type__, 1, _ENCODE(event),
                 _EMPTY_META, now)
            )  # fmt: skip
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_SQLITE_INSERT, rows)
        conn.execute("COMMIT")


def raw_postgres_handle(conn: Any) -> Handle:
    """Per command: one SELECT, the fold, the decision, one autocommit INSERT; a command
    that lost a race for its version (the unique key says so) is loaded and decided again."""
    from psycopg.errors import UniqueViolation

    async def handle(stream_id: str, command: Command) -> object:
        while True:
            cur = await conn.execute(_PG_LOAD, (stream_id,), binary=True)
            state, version = _fold(await cur.fetchall(), Account(), 0)
            event = _one(decide(command, state))
            row = (
                uuid.uuid4(), stream_id, version + 1, event.__event_type__, 1, _ENCODE(event),
                _EMPTY_META,
            )  # fmt: skip
            try:
                await conn.execute(_PG_INSERT, row)
            except UniqueViolation:
                continue
            return None

    return handle


async def raw_insert(
    raw: RawStore, stream_id: str, events: Sequence[AccountEvent], start_version: int
) -> None:
    """Insert ``events`` as versions ``start_version + 1 …`` in one transaction."""
    rows = [
        (os.urandom(16), stream_id, start_version + i, e.__event_type__, 1, _ENCODE(e),
         _EMPTY_META)
        for i, e in enumerate(events, 1)
    ]  # fmt: skip
    if isinstance(raw, RawSQLite):
        now = time.time_ns() // 1000
        raw.conn.execute("BEGIN IMMEDIATE")
        raw.conn.executemany(_SQLITE_INSERT, [(*r, now) for r in rows])
        raw.conn.execute("COMMIT")
    elif isinstance(raw, RawPostgres):
        pg_rows = [(uuid.UUID(bytes=r[0]), *r[1:]) for r in rows]
        async with raw.conn.transaction(), raw.conn.cursor() as cur:
            await cur.executemany(_PG_INSERT, pg_rows)


async def raw_save_snapshot(raw: RawStore, stream_id: str, version: int, state: Account) -> None:
    row = (stream_id, "Account", version, 1, _ENCODE(state), os.urandom(16), 0, 0)
    if isinstance(raw, RawSQLite):
        raw.conn.execute(_SQLITE_SNAPSHOTS)
        raw.conn.execute("INSERT INTO snapshots VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
    elif isinstance(raw, RawPostgres):
        await raw.conn.execute(_PG_SNAPSHOTS)
        await raw.conn.execute("INSERT INTO snapshots VALUES (%s, %s, %s, %s, %b, %b, %s, %s)", row)


async def raw_load(raw: RawStore, stream_id: str, page: int | None, snapshot: bool) -> Account:
    """Fold a stream with the raw driver: from its newest snapshot when ``snapshot``, in
    keyset pages of ``page`` rows (None: one query)."""
    state, version = Account(), 0
    if isinstance(raw, RawSQLite):
        conn = raw.conn
        if snapshot:
            version, data = conn.execute(_SQLITE_SNAPSHOT, (stream_id, "Account")).fetchone()
            state = _SNAPSHOT_DECODE(data)
        if page is None:
            return _fold(conn.execute(_SQLITE_LOAD_PAGE, (stream_id, version, -1)), state, 0)[0]
        while True:
            rows = conn.execute(_SQLITE_LOAD_PAGE, (stream_id, version, page)).fetchall()
            state, version = _fold(rows, state, version)
            if len(rows) < page:
                return state
    assert isinstance(raw, RawPostgres)
    async with raw.conn.cursor(binary=True) as cur:
        if snapshot:
            await cur.execute(_PG_SNAPSHOT, (stream_id, "Account"))
            found = await cur.fetchone()
            assert found is not None
            version, state = found[0], _SNAPSHOT_DECODE(found[1])
        if page is None:
            await cur.execute(_PG_LOAD_PAGE, (stream_id, version, None))
            return _fold(await cur.fetchall(), state, 0)[0]
        while True:
            await cur.execute(_PG_LOAD_PAGE, (stream_id, version, page))
            rows = await cur.fetchall()
            state, version = _fold(rows, state, version)
            if len(rows) < page:
                return state


# -- the workloads ---------------------------------------------------------------------


def _raw_handles(raw: RawStore | None, tasks: int) -> list[Handle]:
    if isinstance(raw, RawSQLite):
        return [raw_sqlite_handle(raw)]
    if isinstance(raw, RawPostgres):
        return [raw_postgres_handle(c) for c in ([raw.conn] if tasks == 1 else raw.workers)]
    return []


def _warm_work(ctx: Context) -> list[tuple[str, Command]]:
    return w1_commands("warm", min(20, ctx.sizes.w1_accounts), 2)


async def w1_sequential(ctx: Context) -> Figures:
    """W1, each command awaited before the next."""
    return await _w1_sequential(ctx, latency=False)


async def w1_latency(ctx: Context) -> Figures:
    """W1 sequentially, timing every command: the headline is the p99 latency."""
    return await _w1_sequential(ctx, latency=True)


def _quantiles(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=1000, method="inclusive")
    return {
        "p50_ms": ms(cuts[499]),
        "p90_ms": ms(cuts[899]),
        "p99_ms": ms(cuts[989]),
        "p999_ms": ms(cuts[998]),
        "max_ms": ms(max(samples)),
    }


async def _w1_sequential(ctx: Context, *, latency: bool) -> Figures:
    s = ctx.sizes
    n = s.w1_accounts * (s.w1_rounds + 1)
    lat: dict[str, list[dict[str, float]]] = {"eventfold": [], "raw": []}

    def work(name: str, handle: Handle) -> Work:
        async def run(i: int) -> None:
            samples: list[float] = []
            commands = w1_commands(f"r{i}-", s.w1_accounts, s.w1_rounds)
            await run_sequentially(handle, commands, samples)
            lat[name].append(_quantiles(samples))

        return run

    async with fresh_store(ctx) as store, fresh_baseline(ctx) as raw:
        ours = eventfold_handle(store)
        await run_sequentially(ours, _warm_work(ctx))
        works: dict[str, Work | None] = {"eventfold": work("eventfold", ours), "raw": None}
        for theirs in _raw_handles(raw, 1):
            await run_sequentially(theirs, _warm_work(ctx))
            works["raw"] = work("raw", theirs)
        t = await interleave(s.w1_runs, works)
    median = statistics.median(t["eventfold"])
    ours_q = {k: statistics.median(q[k] for q in lat["eventfold"]) for k in lat["eventfold"][0]}
    raw_q = (
        {k: statistics.median(q[k] for q in lat["raw"]) for k in lat["raw"][0]}
        if lat["raw"]
        else None
    )
    extra: dict[str, object] = {"accounts": s.w1_accounts, "rounds": s.w1_rounds, "runs": s.w1_runs}
    if latency:
        extra["commands_per_s"] = rate(n, median)
        extra.update({k: v for k, v in ours_q.items() if k != "p99_ms"})
        if raw_q is not None:
            extra.update({f"raw_{k}": v for k, v in raw_q.items() if k != "p99_ms"})
        return Figures(n, median, ours_q["p99_ms"], raw_q["p99_ms"] if raw_q else None, extra)
    extra["best_rate"] = rate(n, min(t["eventfold"]))
    extra.update(ours_q)
    raw_rate = rate(n, statistics.median(t["raw"])) if "raw" in t else None
    return Figures(n, median, rate(n, median), raw_rate, extra)


async def w1_concurrent(ctx: Context) -> Figures:
    """W1 from ``w1_tasks`` asyncio tasks sharing one queue of commands."""
    s = ctx.sizes
    n, tasks = s.w1_accounts * (s.w1_rounds + 1), s.w1_tasks
    extra: dict[str, object] = {
        "accounts": s.w1_accounts, "rounds": s.w1_rounds, "tasks": tasks, "runs": s.w1_runs
    }  # fmt: skip
    async with fresh_store(ctx) as store, fresh_baseline(ctx) as raw:
        ours = [eventfold_handle(store)] * tasks
        await run_concurrently(ours, _warm_work(ctx))
        works: dict[str, Work | None] = {
            "eventfold": lambda i: run_concurrently(
                ours, w1_commands(f"r{i}-", s.w1_accounts, s.w1_rounds)
            ),
            "raw": None,
            "group": None,
        }
        if raw is not None:
            await raw.open_workers(tasks)
            theirs = _raw_handles(raw, tasks)
            await run_concurrently(theirs, _warm_work(ctx))
            works["raw"] = lambda i: run_concurrently(
                theirs, w1_commands(f"r{i}-", s.w1_accounts, s.w1_rounds)
            )
            extra["raw_baseline"] = f"{tasks} connections, one autocommit INSERT per command"
        if isinstance(raw, RawSQLite):
            works["group"] = lambda i: raw_sqlite_group(
                raw, w1_commands(f"g{i}-", s.w1_accounts, s.w1_rounds), tasks
            )
            extra["raw_baseline"] = "one connection, one BEGIN IMMEDIATE transaction per command"
            extra["raw_group_size"] = tasks
        t = await interleave(s.w1_runs, works)
    median = statistics.median(t["eventfold"])
    extra["best_rate"] = rate(n, min(t["eventfold"]))
    if "group" in t:
        extra["raw_group_commit_rate"] = rate(n, statistics.median(t["group"]))
    raw_rate = rate(n, statistics.median(t["raw"])) if "raw" in t else None
    return Figures(n, median, rate(n, median), raw_rate, extra)


async def load_stream(ctx: Context) -> Figures:
    """`CommandHandler.load` of one ``load_events``-event stream with no snapshot."""
    return await _load(ctx, tail=None)


async def load_snapshot(ctx: Context) -> Figures:
    """`CommandHandler.load` of the same stream from a snapshot ``snapshot_tail`` events
    before its end; ``snapshot_loads`` loads per timed run, the figure is per load."""
    return await _load(ctx, tail=ctx.sizes.snapshot_tail)


async def _load(ctx: Context, tail: int | None) -> Figures:
    s = ctx.sizes
    n, batch, sid = s.load_events, ctx.sizes.populate_batch, "account-0"
    events = account_events(n)
    head = n if tail is None else n - tail
    repeat = 1 if tail is None else s.snapshot_loads
    runs = s.load_runs

    def repeated(load: Callable[[], Awaitable[object]]) -> Work:
        async def run(i: int) -> None:
            for _ in range(repeat):
                await load()

        return run

    async with fresh_store(ctx) as store, fresh_baseline(ctx) as raw:
        handler = eventfold.CommandHandler(store, ACCOUNT)
        await append_batches(store, sid, events[:head], batch)
        if tail is not None:
            snap = await handler.snapshot(sid)
            assert snap is not None
            check("snapshot version", snap.version, head)
            await append_batches(store, sid, events[head:], batch, head)
        loaded = await handler.load_details(sid)
        check("handler.load", loaded.state.deposits + 1, n)
        check("handler.load (replayed)", loaded.replayed, tail or n)
        works: dict[str, Work | None] = {
            "eventfold": repeated(lambda: handler.load(sid)),
            "raw": None,
            "one_query": None,
        }
        if raw is not None:
            for at in range(0, head, batch):
                await raw_insert(raw, sid, events[at : min(at + batch, head)], at)
            if tail is not None:
                await raw_save_snapshot(raw, sid, head, ACCOUNT.fold(events[:head]))
                await raw_insert(raw, sid, events[head:], head)
            for page in (raw.page_size, None):
                state = await raw_load(raw, sid, page, tail is not None)
                check(f"raw load (page {page})", state.deposits + 1, n)
            snapshot = tail is not None
            works["raw"] = repeated(lambda: raw_load(raw, sid, raw.page_size, snapshot))
            works["one_query"] = repeated(lambda: raw_load(raw, sid, None, snapshot))
        t = await interleave(runs, works)
    per_load = {name: [x / repeat for x in times] for name, times in t.items()}
    median = statistics.median(per_load["eventfold"])
    extra: dict[str, object] = {"runs": runs, "best_ms": ms(min(per_load["eventfold"]))}
    if tail is not None:
        extra.update({"stream_events": n, "snapshot_version": head, "loads_per_run": repeat})
    raw_ms = None
    if "raw" in per_load:
        raw_ms = ms(statistics.median(per_load["raw"]))
        extra["raw_best_ms"] = ms(min(per_load["raw"]))
        extra["raw_one_query_ms"] = ms(statistics.median(per_load["one_query"]))
    return Figures(tail or n, median, ms(median), raw_ms, extra)


RUNNERS: dict[str, Callable[[Context], Awaitable[Figures]]] = {
    "w1_sequential": w1_sequential,
    "w1_concurrent": w1_concurrent,
    "w1_latency": w1_latency,
    "load_stream": load_stream,
    "load_snapshot": load_snapshot,
}
