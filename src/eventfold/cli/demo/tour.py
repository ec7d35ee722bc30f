"""The demo's tour: one `Demo` context and the steps that run over it, in order."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import secrets
import shlex
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from rich.console import Console

from ..._events import Event, NewEvent, RecordedEvent, new_event_id
from ..._position import NO_STREAM, START, Position
from ...errors import DuplicateEventId, WrongExpectedVersion
from ...projections import (
    BuildProgress,
    DaemonOptions,
    DocumentProjection,
    DocumentView,
    ProjectionDaemon,
    ReadModelStore,
    attach_inline,
    detach_inline,
    live,
    read_models_for,
    rebuild,
)
from ...store import AppendResult, EventStore, backend_of, connect
from ...write import CommandHandler, CommandResult, HandlerOptions, every
from .. import render
from ..progress import format_progress
from .bank import Account, Deposit, Deposited, account
from .checks import check
from .hybrid import SETTLE_TIMEOUT, hybrid_write
from .orders import (
    CARRIERS,
    OrderCancelled,
    OrderPaid,
    OrderPlaced,
    OrderShipped,
    cancel,
    load,
    pay,
    place,
    ship,
)

__all__ = ["STEPS", "Demo", "Step", "default_demo_url", "run_demo"]


# -- the tour ------------------------------------------------------------------------------


@dataclass
class Demo:
    """What the steps share: the open store, where to print, and what was done so far."""

    store: EventStore
    console: Console
    url: str
    run_id: str
    tasks: int
    orders: int
    start: Position = START
    """The head before the demo's first append (the log may hold earlier runs)."""
    order_streams: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    """Events per type in the whole store, filled in by `store_contents`."""
    snapshotted: str | None = None
    """The account stream `snapshot_used` left a snapshot on."""
    projection: str | None = None
    """The projection `async_projection` built (and `blue_green` builds again)."""
    models: ReadModelStore | None = None
    """Where its documents live (on memory://, only this object has them)."""

    def stream(self, name: str) -> str:
        """A stream id of this run, in the ``order`` category."""
        return f"order-{self.run_id}-{name}"

    def account(self, name: str) -> str:
        """A stream id of this run, in the ``account`` category."""
        return f"account-{self.run_id}-{name}"

    def say(self, text: str) -> None:
        """Print a line of plain text (no rich markup)."""
        self.console.print(text, markup=False)

    def heading(self, title: str) -> None:
        """Start a step's section."""
        self.console.print()
        self.console.rule(title, align="left", characters="-")


async def concurrent_writers(demo: Demo) -> None:
    """(a) Many tasks each place an order, then pay and ship it at the version they read."""
    demo.heading(f"1. {demo.orders} orders from {demo.tasks} concurrent writers")
    store = demo.store
    appends = 0

    async def life_cycle(n: int) -> None:
        nonlocal appends
        stream = demo.stream(f"{n:04d}")
        await store.append(
            stream, [place(stream.removeprefix("order-"), n)], expected_version=NO_STREAM
        )
        appends += 1
        order, version = await load(store, stream)
        # Every tenth order is cancelled; the rest are paid, then shipped.
        actions = ["cancel"] if n % 10 == 9 else ["pay", "ship"]
        for action in actions:
            if action == "cancel":
                events = cancel(order, "payment declined")
            elif action == "pay":
                events = pay(order)
            else:
                events = ship(order, CARRIERS[n % len(CARRIERS)])
            # The exact version read: a concurrent change would fail this append.
            await store.append(stream, events, expected_version=version)
            appends += 1
            order, version = await load(store, stream)

    async def writer(k: int) -> None:
        for n in range(k, demo.orders, demo.tasks):
            await life_cycle(n)

    demo.order_streams = [demo.stream(f"{n:04d}") for n in range(demo.orders)]
    began = time.perf_counter()
    await asyncio.gather(*(writer(k) for k in range(min(demo.tasks, demo.orders))))
    elapsed = time.perf_counter() - began
    n = appends
    demo.console.print(
        f"{n} appends, each at the exact version read, in {elapsed:.2f} s: "
        f"{n / elapsed:,.0f} appends/s",
        markup=False,
    )


async def conflict(demo: Demo) -> None:
    """(b) Two writers decide on the same version; one wins, the other re-reads and retries."""
    demo.heading("2. Optimistic concurrency: a conflict, detected")
    store, out = demo.store, demo.console
    stream = demo.stream("race")
    await store.append(
        stream, [place(stream.removeprefix("order-"), 3)], expected_version=NO_STREAM
    )
    (order_a, read_a), (order_b, read_b) = await asyncio.gather(
        load(store, stream), load(store, stream)
    )
    out.print(f"payments and warehouse both read {stream} at version {read_a}", markup=False)
    writers = {
        "payments": (pay(order_a), read_a),
        "warehouse": (ship(order_b, "DHL"), read_b),
    }

    async def attempt(name: str) -> AppendResult:
        events, version = writers[name]
        return await store.append(stream, events, expected_version=version)

    # Both appends race for the same version; the store lets exactly one through.
    outcomes = await asyncio.gather(*(attempt(w) for w in writers), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, WrongExpectedVersion):
            raise outcome
    pairs = list(zip(writers, outcomes, strict=True))
    wins = [(w, r) for w, r in pairs if isinstance(r, AppendResult)]
    losses = [(w, r) for w, r in pairs if isinstance(r, WrongExpectedVersion)]
    check(
        len(wins) == 1 and len(losses) == 1,
        f"expected exactly one winner and one WrongExpectedVersion, got {pairs}",
    )
    (winner, won), (loser, error) = wins[0], losses[0]
    out.print(
        f"{winner} won: appended {writers[winner][0][0].__event_type__} "
        f"at version {won.version}, position {won.position}",
        markup=False,
    )
    out.print(f"conflict detected: {loser} got WrongExpectedVersion", markup=False)
    out.print(f"  {error}", markup=False)
    out.print(f"  expected version {error.expected}, actual {error.actual}", markup=False)

    # The loser does what the message says: reload, decide again, append.
    order, version = await load(store, stream)
    events = pay(order) if loser == "payments" else ship(order, "DHL")
    result = await store.append(stream, events, expected_version=version)
    out.print(
        f"{loser} re-read version {version} (order {order.status}), decided again and "
        f"appended {events[0].__event_type__} at version {result.version}: retry succeeded",
        markup=False,
    )
    check(result.version == 3, f"expected {stream} at version 3, got {result.version}")
    events_read = [e async for e in store.read_stream(stream)]
    out.print(render.events_table(events_read, title=f"stream {stream}", show_time=False))


async def idempotent_retry(demo: Demo) -> None:
    """(c) The same append with the same explicit event id, twice: one event stored."""
    demo.heading("3. Idempotent retry: the same event id appended twice")
    store, out = demo.store, demo.console
    stream = demo.stream("retry")
    event_id = new_event_id()
    event = NewEvent(place(stream.removeprefix("order-"), 5), event_id=event_id)
    first = await store.append(stream, [event], expected_version=NO_STREAM)
    out.print(
        f"first append of event {event_id}: version {first.version}, position {first.position}",
        markup=False,
    )
    # A client that timed out cannot know whether its append landed; it sends it again.
    again = await store.append(stream, [event], expected_version=NO_STREAM)
    out.print(
        f"retry with the same event id: version {again.version}, position {again.position}"
        + (" (the same result)" if again == first else ""),
        markup=False,
    )
    stored = [e async for e in store.read_stream(stream)]
    check(again == first, f"a retry returned {again}, the first append {first}")
    check(len(stored) == 1, f"a retry stored {len(stored)} events instead of 1")
    out.print(f"{stream} holds {len(stored)} event: nothing was duplicated", markup=False)
    other = NewEvent(place(stream.removeprefix("order-"), 6), event_id=event_id)
    try:
        await store.append(stream, [other], expected_version=1)
    except DuplicateEventId as exc:
        out.print(f"other content under the same id is refused: {exc}", markup=False)
    else:
        check(False, "other content under a stored event id was accepted")


async def store_contents(demo: Demo) -> None:
    """(d) What the store holds: stats, streams, one stream, the log, counts per type."""
    demo.heading("4. What the store holds")
    store, out = demo.store, demo.console
    stats = await store.stats()
    out.print(render.stats_table(stats, demo.url, title="stats"))

    first_streams = [
        i async for i in store.streams(category="order", after=demo.stream(""), limit=5)
    ]
    out.print(render.streams_table(first_streams, title="the first order streams"))

    one = demo.order_streams[0] if demo.order_streams else demo.stream("race")
    events = [e async for e in store.read_stream(one)]
    out.print(render.events_table(events, title=f"stream {one}", show_time=False))

    log = [e async for e in store.read_all(after=demo.start, limit=8)]
    out.print(
        render.events_table(
            log,
            title=f"the global log after position {demo.start}",
            show_stream=True,
            show_time=False,
        )
    )

    counts = collections.Counter[str]()
    last, deadline = START, asyncio.get_running_loop().time() + SETTLE_TIMEOUT
    while True:
        async for e in store.read_all(after=last):
            counts[e.type] += 1
            last = e.position
        # On PostgreSQL the log shows an event once every older write transaction in the
        # cluster has finished: on a busy server, wait for the demo's own last writes.
        if demo.start != START or counts.total() >= stats.events:
            break
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    demo.counts = dict(counts)
    out.print(render.counts_table(counts, title="events per type, counted with read_all"))
    total = sum(counts.values())
    out.print(f"the store holds {total:,} events in {stats.streams:,} streams", markup=False)
    if demo.start == START:
        # A fresh store: the log read after the stats must hold exactly what they counted.
        check(
            total == stats.events,
            f"read_all counted {total} events, stats {stats.events} "
            f"(after waiting up to {SETTLE_TIMEOUT:g} s for the demo's own writes)",
        )


async def command_retry(demo: Demo) -> None:
    """(e) Two command handlers deposit into one account at once; conflicts are retried."""
    demo.heading("5. Command retry: two handlers, one account, conflicts retried")
    stream = demo.account("shared")
    # Each handler caches the account, as a long-running service does: a cached state is
    # stale once the other handler appends, so a conflict is certain, not a scheduling fluke.
    options = HandlerOptions(cache_size=8, max_retries=20)
    handlers = {n: CommandHandler(demo.store, account, options=options) for n in ("api-1", "api-2")}
    for handler in handlers.values():
        await handler.handle(stream, Deposit(amount=5))
    plan = {"api-1": [10 * k for k in range(1, 11)], "api-2": list(range(1, 11))}

    async def deposits(name: str) -> list[tuple[int, CommandResult[Account, Event]]]:
        return [(a, await handlers[name].handle(stream, Deposit(amount=a))) for a in plan[name]]

    began = time.perf_counter()
    done = await asyncio.gather(*(deposits(name) for name in plan))
    elapsed = time.perf_counter() - began
    results = [pair for pairs in done for pair in pairs]
    retried = [(a, r) for a, r in results if r.retries]
    total = sum(r.retries for _, r in retried)
    demo.say(f"{len(results)} deposits from 2 handlers at once into {stream} in {elapsed:.2f} s")
    demo.say(
        f"commands retried after a conflict: {len(retried)} ({total} "
        f"{'retry' if total == 1 else 'retries'} in all); commands failed: none"
    )
    check(bool(retried), "two handlers with stale caches never conflicted")
    amount, first = retried[0]
    demo.say(
        f"e.g. a deposit of {amount}: WrongExpectedVersion {first.retries}x, then the handler "
        f"reloaded, decided again and appended at version {first.version} (result.retries = "
        f"{first.retries})"
    )
    final = await CommandHandler(demo.store, account).load(stream)
    expected = 10 + sum(a for a, _ in results)
    demo.say(
        f"balance {final.balance} after {final.deposits} deposits: their sum is {expected}, "
        "nothing lost or doubled"
    )
    check(final.balance == expected, f"balance {final.balance}, expected {expected}")
    check(final.deposits == len(results) + 2, f"{final.deposits} deposits stored")


async def snapshot_used(demo: Demo) -> None:
    """(f) A handler snapshots every 50 events; a later load starts from the snapshot."""
    demo.heading("6. Snapshots: a load folds only the events after the last snapshot")
    stream = demo.account("busy")
    handler = CommandHandler(demo.store, account, options=HandlerOptions(snapshots=every(50)))
    began = time.perf_counter()
    for n in range(1, 121):
        await handler.handle(stream, Deposit(amount=n))
    demo.say(
        f"120 deposits into {stream} in {time.perf_counter() - began:.2f} s through a handler "
        "with snapshots=every(50)"
    )
    loaded = await CommandHandler(demo.store, account).load_details(stream)
    demo.say(
        f"a fresh handler's load_details: version {loaded.version}, snapshot_version "
        f"{loaded.snapshot_version}, replayed {loaded.replayed} (not 120), "
        f"balance {loaded.state.balance}"
    )
    older = await handler.load_details(stream, at_version=70)
    demo.say(
        f"load_details(at_version=70): snapshot_version {older.snapshot_version}, "
        f"replayed {older.replayed}, balance {older.state.balance}"
    )
    folded = account.fold([e.data async for e in demo.store.read_stream(stream)])
    got = (loaded.snapshot_version, loaded.replayed, older.snapshot_version, older.replayed)
    check(got == (100, 20, 50, 20), f"expected snapshots 100 and 50, 20 replayed: {got}")
    check(loaded.state == folded, f"snapshot + tail gave {loaded.state}, all events {folded}")
    demo.say("the same state as folding all 120 events from the start")
    demo.snapshotted = stream


async def balance_in_the_past(demo: Demo) -> None:
    """(g) Note the time between two deposits; the balance as of then is the earlier one."""
    demo.heading("7. Time travel: the balance at a past time")
    stream = demo.account("history")
    handler = CommandHandler(demo.store, account)
    await handler.handle(stream, Deposit(amount=100))
    await asyncio.sleep(0.02)
    then = dt.datetime.now(dt.UTC)
    await asyncio.sleep(0.02)
    await handler.handle(stream, Deposit(amount=50))
    past, now = await handler.load(stream, as_of=then), await handler.load(stream)
    demo.say(f"deposited 100, noted the time {then:%H:%M:%S.%f} UTC, deposited 50")
    demo.say(f"load(as_of={then:%H:%M:%S.%f}): balance {past.balance}")
    demo.say(f"load():                    balance {now.balance}")
    # The store stamps events by its own clock (PostgreSQL: the server's), `then` is ours.
    check(past.balance == 100, f"the balance as of {then} is {past.balance}, not 100 (clocks?)")
    check(now.balance == 150, f"the balance now is {now.balance}, not 150")


# -- the read path: a document per order, kept by a projection ----------------------------


class OrderSummary(msgspec.Struct):
    """The read model's document for one order."""

    status: str = "new"
    events: int = 0
    carrier: str | None = None


def order_summaries(name: str, version: int) -> DocumentProjection[OrderSummary]:
    """A document per order stream; version 2 also records the carrier."""
    proj = DocumentProjection(name, document=OrderSummary, version=version, categories=["order"])

    def status(to: str) -> Callable[[OrderSummary, object], OrderSummary]:
        def step(doc: OrderSummary, event: object) -> OrderSummary:
            return replace_struct(doc, status=to, events=doc.events + 1)

        return step

    proj.on(OrderPlaced)(status("placed"))
    proj.on(OrderPaid)(status("paid"))
    proj.on(OrderCancelled)(status("cancelled"))

    @proj.on(OrderShipped)
    def shipped(doc: OrderSummary, event: RecordedEvent) -> OrderSummary:
        carrier = event.data.carrier if version >= 2 else None
        return replace_struct(doc, status="shipped", events=doc.events + 1, carrier=carrier)

    return proj


def replace_struct(doc: OrderSummary, **changes: object) -> OrderSummary:
    return msgspec.structs.replace(doc, **changes)


async def async_projection(demo: Demo) -> None:
    """(h) A daemon catches a document projection up, then serves read-your-writes."""
    demo.heading("8. An async projection catches up, then follows the tail")
    name = f"demo_orders_{demo.run_id}"
    v1 = order_summaries(name, 1)
    models = demo.models = read_models_for(demo.store)
    view = DocumentView(models, v1)
    began = time.perf_counter()
    async with ProjectionDaemon(demo.store, models, [v1]) as daemon:
        head = await demo.store.head()
        await daemon.wait_for(name, head, timeout=30)
        docs = await view.all()
        demo.say(
            f"projection {name} v1 built {len(docs)} order documents from the log in "
            f"{time.perf_counter() - began:.2f} s (a checkpoint committed with every batch)"
        )
        stream = demo.stream("late")
        result = await demo.store.append(stream, [place(stream, 1)], expected_version=NO_STREAM)
        await daemon.wait_for(name, result.position, timeout=10)
        doc = await view.get(stream)
        demo.say(f"placed a new order {stream}; wait_for(its position) returned at once and")
        demo.say(f"the read model already says: {doc}")
        check(doc is not None and doc.status == "placed", f"read-your-writes saw {doc}")
        expected = await live(demo.store, v1).all()
        check(await view.all() == expected, "the daemon's documents differ from a live fold")
        lag = (await daemon.status(name)).lag_events
        demo.say(f"lag behind the head: {lag} events")
        check(lag == 0, f"the projection is {lag} events behind after wait_for")
    demo.projection = name


async def blue_green(demo: Demo) -> None:
    """(i) Version 2 builds beside version 1; readers switch when it has caught up."""
    demo.heading("9. Blue/green: version 2 builds beside version 1, then readers switch")
    name = demo.projection or f"demo_orders_{demo.run_id}"
    v2 = order_summaries(name, 2)
    models = demo.models or read_models_for(demo.store)
    reader = DocumentView(models, v2)
    before = await reader.version()
    progress: list[BuildProgress] = []
    await rebuild(
        demo.store, models, v2, options=DaemonOptions(batch_size=100), progress=progress.append
    )
    after = await reader.version()
    demo.say(f"readers read v{before} while v2 was built; the pointer swapped to v{after}")
    if progress:
        demo.say(f"last progress report: {format_progress(progress[-1])}")
    shipped = [d for d in (await reader.all()).values() if d.status == "shipped"]
    demo.say(
        f"v2 records the carrier: {len(shipped)} shipped orders, e.g. "
        f"{shipped[0] if shipped else 'none'}"
    )
    check((before, after) == (1, 2), f"readers went from v{before} to v{after}, not 1 to 2")
    check(all(d.carrier for d in shipped), "a shipped order in v2 has no carrier")


class Totals(msgspec.Struct):
    """The inline read model's document for one account."""

    deposited: int = 0
    deposits: int = 0


async def inline_projection(demo: Demo) -> None:
    """(j) A projection written in the append's own transaction (SQLite, PostgreSQL)."""
    demo.heading("10. An inline projection: current the moment the append returns")
    backend = backend_of(demo.store)
    if backend is None or backend.inline is None:
        demo.say(f"inline projections run on SQLite and PostgreSQL, not {demo.store.backend}")
        return
    totals = DocumentProjection(
        f"demo_totals_{demo.run_id}", document=Totals, categories=["account"]
    )

    @totals.on(Deposited)
    def deposited(doc: Totals, event: RecordedEvent) -> Totals:
        return Totals(doc.deposited + event.data.amount, doc.deposits + 1)

    await attach_inline(demo.store, [totals])
    try:
        view = DocumentView(read_models_for(demo.store), totals)
        stream = demo.account("inline")
        handler = CommandHandler(demo.store, account)
        for amount in (10, 20, 30):
            await handler.handle(stream, Deposit(amount=amount))
            doc = await view.get(stream)
            demo.say(f"deposited {amount}: the read model says {doc} (no waiting, no daemon)")
        check(doc == Totals(60, 3), f"the inline read model says {doc}, not 60 in 3 deposits")
        demo.say("each document write committed with its event, in one transaction")
    finally:
        await detach_inline(demo.store)


Step = Callable[[Demo], Awaitable[None]]

STEPS: tuple[Step, ...] = (
    concurrent_writers,
    conflict,
    idempotent_retry,
    store_contents,
    command_retry,
    snapshot_used,
    balance_in_the_past,
    async_projection,
    blue_green,
    inline_projection,
    hybrid_write,
)
"""The tour, in order; each step prints its own section."""


def default_demo_url() -> str:
    """A fresh SQLite file in a new temporary directory, so every run starts clean."""
    directory = Path(tempfile.mkdtemp(prefix="eventfold-demo-"))
    return f"sqlite:///{directory / 'demo.db'}"


async def run_demo(
    console: Console,
    *,
    url: str | None = None,
    tasks: int = 16,
    orders: int = 50,
    steps: Sequence[Step] | None = None,
) -> Demo:
    """Run ``steps`` (default: `STEPS`) against the store at ``url`` (default: a fresh one)."""
    fresh = url is None
    url = url or default_demo_url()
    console.print("eventfold demo", style="bold")
    console.print(f"store: {render.redact_url(url)}", markup=False, soft_wrap=True)
    if fresh:
        console.print(
            "(a new SQLite file in a temporary directory; your eventfold.db is untouched)"
        )
    began = time.perf_counter()
    async with connect(url) as store:
        demo = Demo(
            store=store,
            console=console,
            url=url,
            run_id=secrets.token_hex(3),
            tasks=tasks,
            orders=orders,
            start=await store.head(),
        )
        for step in STEPS if steps is None else steps:
            await step(demo)
    console.print()
    console.print(f"done in {time.perf_counter() - began:.2f} s.", markup=False)
    if not url.startswith("memory:"):
        # Quoted: a PostgreSQL URL's ? and & mean something to the shell.
        shown = shlex.quote(render.redact_url(url))
        console.print(
            f"look around: eventfold --url {shown} read "
            f"{demo.order_streams[0] if demo.order_streams else demo.stream('race')}",
            markup=False,
            soft_wrap=True,
        )
        if demo.snapshotted is not None:
            console.print(
                f"             eventfold --url {shown} state {demo.snapshotted} "
                "--decider eventfold.cli.demo:account",
                markup=False,
                soft_wrap=True,
            )
    return demo
