"""What crypto-shredding costs: appends and reads of events with personal fields against
the same events without them.

::

    .venv/bin/python benchmarks/privacy.py                          # memory
    .venv/bin/python benchmarks/privacy.py --backend sqlite
    .venv/bin/python benchmarks/privacy.py --backend postgres --url postgresql://…

``events`` events (10,000 by default) over ``subjects`` data subjects (1,000), each
event with two personal fields of its subject, appended 1,000 per call to one stream per
subject, then read back with ``read_all``. The same events of a class without markers are
the baseline. Each run uses a fresh store; runs alternate (personal, plain, personal, …)
after a full garbage collection, and the figures are medians; the first run of each is a
warm-up.

- ``privacy_append``: the appends to a fresh store, so each subject's key is made on its
  first event (a lookup that finds none, then the key's write in that append's own
  transaction).
- ``privacy_append_known``: the same appends again to the same store, every key known and
  cached (the steady state of a running service).
- ``privacy_read_all``: ``read_all`` over the first appends, every event opened.
- ``privacy_snapshot_load``: ``CommandHandler.load`` of up to 500 streams from a
  snapshot at their last event (loads/s): sealed for the stream's subject against plain.

stdout carries one JSON line per figure (``rate``, ``plain_rate`` in events/s and
``ratio`` = personal / plain); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import tempfile
import time
import uuid
from typing import Annotated, Any

import msgspec

import eventfold
from eventfold import Personal
from eventfold.testing import settle


class Registered(eventfold.Event):
    __event_type__ = "privacybench.Registered"
    customer_id: str
    name: Annotated[str, Personal(subject="customer_id", replacement="<erased>")]
    email: Annotated[str, Personal(subject="customer_id")]
    plan: str


class PlainRegistered(eventfold.Event):
    __event_type__ = "privacybench.PlainRegistered"
    customer_id: str
    name: str
    email: str
    plan: str


class Names(msgspec.Struct):
    names: dict[str, str] = {}


def evolve(state: Names, event: Any) -> Names:
    return Names({**state.names, event.customer_id: event.name})


def decide(command: Any, state: Names) -> list[Any]:
    return [command]


NAMES: eventfold.Decider[Any, Names, Any] = eventfold.Decider(
    initial_state=Names(), evolve=evolve, decide=decide
)


def events(cls: type[Any], n: int, subjects: int) -> dict[str, list[Any]]:
    """``n`` events of ``cls``, by stream (one per subject)."""
    out: dict[str, list[Any]] = {}
    for i in range(n):
        who = f"c{i % subjects:06d}"
        event = cls(customer_id=who, name=f"Name {i}", email=f"user{i}@example.com", plan="pro")
        out.setdefault(f"customer-{who}", []).append(event)
    return out


async def run_once(
    url: str, streams: dict[str, list[Any]], personal: bool
) -> tuple[float, float, float, float]:
    """Seconds to append ``streams``, to read them all back, to append them again, and
    to load `LOADS` of them from their snapshots."""
    async with eventfold.connect(url) as store:
        if personal:
            await eventfold.privacy.enable(store).ready()
        batches = [
            (s, evs[i : i + 1000]) for s, evs in streams.items() for i in range(0, len(evs), 1000)
        ]
        await asyncio.sleep(0.05)
        gc.collect()
        start = time.perf_counter()
        for stream, batch in batches:
            await store.append(stream, batch, expected_version=eventfold.ANY)
        appended = time.perf_counter() - start
        head = await store.head()
        await settle(store, head)
        gc.collect()
        start = time.perf_counter()
        n = 0
        async for event in store.read_all():
            n += len(event.data.name)
        read = time.perf_counter() - start
        gc.collect()
        start = time.perf_counter()
        for stream, batch in batches:
            await store.append(stream, batch, expected_version=eventfold.ANY)
        again = time.perf_counter() - start
        handler = eventfold.CommandHandler(store, NAMES)
        loaded = list(streams)[:LOADS]
        for stream in loaded:
            await handler.snapshot(stream)
        gc.collect()
        start = time.perf_counter()
        for stream in loaded:
            await handler.load(stream)
        loads = (time.perf_counter() - start) * LOADS / len(loaded)
        return appended, read, again, loads


LOADS = 500


async def main(args: argparse.Namespace) -> int:
    tmp = tempfile.TemporaryDirectory(prefix="privacy-bench-")
    schemas: list[str] = []

    def new_url() -> str:
        if args.backend == "memory":
            return "memory://"
        if args.backend == "sqlite":
            return f"sqlite:///{tmp.name}/{uuid.uuid4().hex}.db"
        schema = f"privacy_bench_{uuid.uuid4().hex[:12]}"
        schemas.append(schema)
        sep = "&" if "?" in args.url else "?"
        return f"{args.url}{sep}schema={schema}"

    sealed = events(Registered, args.events, args.subjects)
    plain = events(PlainRegistered, args.events, args.subjects)
    times: dict[bool, list[tuple[float, float, float, float]]] = {True: [], False: []}
    try:
        for run in range(args.runs + 1):
            for personal in (True, False):
                took = await run_once(new_url(), sealed if personal else plain, personal)
                if run:  # the first run of each is a warm-up
                    times[personal].append(took)
                print(f"run {run} personal={personal}: {took}", file=sys.stderr)
    finally:
        if schemas:
            import psycopg

            with psycopg.connect(args.url, autocommit=True) as conn:
                for schema in schemas:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        tmp.cleanup()
    figures = ((0, "append"), (2, "append_known"), (1, "read_all"), (3, "snapshot_load"))
    for index, name in figures:
        with_ = statistics.median(t[index] for t in times[True])
        without = statistics.median(t[index] for t in times[False])
        count = LOADS if name == "snapshot_load" else args.events
        line = {
            "backend": args.backend,
            "workload": f"privacy_{name}",
            "events": args.events,
            "subjects": args.subjects,
            "runs": args.runs,
            "unit": "loads/s" if name == "snapshot_load" else "events/s",
            "rate": round(count / with_),
            "plain_rate": round(count / without),
            "ratio": round(without / with_, 3),
        }
        print(json.dumps(line), flush=True)
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backend", choices=["memory", "sqlite", "postgres"], default="memory")
    parser.add_argument("--url", default=None, help="the PostgreSQL server (postgres only)")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--subjects", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    if args.backend == "postgres" and not args.url:
        parser.error("--backend postgres needs --url")
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
