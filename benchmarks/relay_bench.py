"""The relay against NATS JetStream, beside raw nats-py (``pip install -e '.[nats]'``).

Two figures per backend, as JSON lines on stdout (progress on stderr):

- ``relay_throughput``: N events stored beforehand (in ``--streams`` streams, appended
  round-robin in small batches) relayed from the start of the log to a fresh JetStream
  stream until the checkpoint reaches the head, beside raw nats-py ``publish_async`` of the
  same subjects, payloads and headers (built before the clock starts, no store), to a
  fresh stream too; the runs alternate (raw, relay, raw, relay, ...) and the best of each
  is compared (``pair_ratio_median``: the median over the alternating pairs, steadier on a
  busy machine). Target: relay >= 0.6x raw.
- ``relay_latency``: the relay running at the tail while one writer appends one event at a
  time (``--rate`` appends/s, random streams); per event, the time from the append's
  return (its commit) to JetStream's ack of its message. Target: p99 <= 50 ms.

::

    .venv/bin/python benchmarks/relay_bench.py --backend sqlite
    .venv/bin/python benchmarks/relay_bench.py --backend postgres \\
        --url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable
from typing import Any

import nats
import psycopg

import eventfold
from eventfold.relay import Message, NatsJetStreamSink, Relay, RelayOptions


def say(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


async def drop_stream(url: str, name: str) -> None:
    nc = await nats.connect(url)
    try:
        with contextlib.suppress(Exception):  # already gone
            await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


class Location:
    """A fresh store URL for the backend (a SQLite file or a PostgreSQL schema)."""

    def __init__(self, backend: str, url: str | None) -> None:
        self.backend = backend
        self.base = url
        self.schema = f"bench_relay_{uuid.uuid4().hex[:10]}"
        self.dir = tempfile.mkdtemp(prefix="eventfold-relay-")

    @property
    def url(self) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{self.dir}/events.db"
        assert self.base is not None
        sep = "&" if "?" in self.base else "?"
        return f"{self.base}{sep}schema={self.schema}"

    def drop(self) -> None:
        if self.backend == "postgres" and self.base is not None:
            with psycopg.connect(self.base, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


async def fill(store: eventfold.EventStore, n: int, streams: int) -> None:
    per_append = 10
    k = 0
    while k < n:
        stream = f"order-{(k // per_append) % streams}"
        count = min(per_append, n - k)
        events = [
            eventfold.NewEvent({"order": stream, "amount": k + i, "note": "x" * 40}, type="Placed")
            for i in range(count)
        ]
        await store.append(stream, events, expected_version=eventfold.ANY)
        k += count


async def raw_run(url: str, messages: list[Message]) -> float:
    name = f"BENCH_RAW_{uuid.uuid4().hex[:8].upper()}"
    prefix = messages[0].subject.split(".")[0]
    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=4000)
    await js.add_stream(name=name, subjects=[f"{prefix}.>"])
    try:
        started = time.perf_counter()
        futures = [
            await js.publish_async(
                m.subject, m.payload, headers={**m.headers, "Nats-Msg-Id": m.message_id}
            )
            for m in messages
        ]
        await asyncio.gather(*futures)
        seconds = time.perf_counter() - started
        info = await js.stream_info(name)
        assert info.state.messages == len(messages), info.state.messages
    finally:
        await js.delete_stream(name)
        await nc.close()
    return seconds


async def relay_run(store: eventfold.EventStore, url: str, prefix: str, n: int) -> float:
    name = f"BENCH_RELAY_{uuid.uuid4().hex[:8].upper()}"
    destination = f"bench_{uuid.uuid4().hex[:8]}"
    sink = NatsJetStreamSink(url, stream=name, subjects=[f"{prefix}.>"])
    relay = Relay(
        store,
        sink,
        destination=destination,
        subject_prefix=prefix,
        options=RelayOptions(checkpoint_interval=0.05),
    )
    head = await store.head()
    try:
        started = time.perf_counter()
        async with relay:
            await relay.wait_for(head, timeout=600)
        seconds = time.perf_counter() - started
        nc = await nats.connect(url)
        try:
            info = await nc.jetstream().stream_info(name)
            assert info.state.messages == n, info.state.messages
        finally:
            await nc.close()
    finally:
        await drop_stream(url, name)
    return seconds


async def throughput(args: argparse.Namespace, location: Location) -> dict[str, Any]:
    n = args.events
    async with eventfold.connect(location.url) as store:
        say(f"[{args.backend}] storing {n:,} events in {args.streams} streams")
        await fill(store, n, args.streams)
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        shaper = Relay(
            store, eventfold.relay.InProcessSink(), destination="shape", subject_prefix=prefix
        )
        messages = [shaper.event_message(e) async for e in store.read_all()]
        times: dict[str, list[float]] = {"raw": [], "relay": []}
        for r in range(args.runs):
            t = await raw_run(args.nats, messages)
            times["raw"].append(t)
            say(f"[{args.backend}] run {r + 1}: raw nats-py {n / t:,.0f} msg/s")
            t = await relay_run(store, args.nats, prefix, n)
            times["relay"].append(t)
            say(f"[{args.backend}] run {r + 1}: relay      {n / t:,.0f} msg/s")
    raw, relay = n / min(times["raw"]), n / min(times["relay"])
    return {
        "backend": args.backend,
        "workload": "relay_throughput",
        "events": n,
        "streams": args.streams,
        "unit": "events/s",
        "eventfold": round(relay),
        "raw": round(raw),
        "ratio": round(relay / raw, 3),
        "target": 0.6,
        "meets_target": relay / raw >= 0.6,
        "pair_ratio_median": round(
            statistics.median(w / r for w, r in zip(times["raw"], times["relay"], strict=True)),
            3,
        ),
        "runs": {k: [round(n / t) for t in v] for k, v in times.items()},
        "load_1m": os.getloadavg()[0],
    }


class TimedSink(NatsJetStreamSink):
    """Records when JetStream acknowledged each message."""

    acked: dict[str, float]

    async def send(self, message: Message) -> Awaitable[None]:
        ack = await super().send(message)

        async def timed() -> None:
            await ack
            self.acked[message.message_id] = time.perf_counter()

        return timed()


async def latency(args: argparse.Namespace, location: Location) -> dict[str, Any]:
    name = f"BENCH_LAT_{uuid.uuid4().hex[:8].upper()}"
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    sink = TimedSink(args.nats, stream=name, subjects=[f"{prefix}.>"])
    sink.acked = {}
    committed: dict[str, float] = {}
    rng = random.Random(7)
    try:
        async with eventfold.connect(location.url) as store:
            relay = Relay(store, sink, destination="latency", subject_prefix=prefix)
            async with relay:
                await asyncio.sleep(1.0)  # connected and at the tail
                interval = 1.0 / args.rate
                next_at = time.perf_counter()
                for _ in range(args.appends):
                    event_id = uuid.uuid4()
                    stream = f"order-{rng.randrange(100)}"
                    event = eventfold.NewEvent({"x": 1}, type="Placed", event_id=event_id)
                    await store.append(stream, [event], expected_version=eventfold.ANY)
                    committed[str(event_id)] = time.perf_counter()
                    next_at += interval
                    await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                deadline = time.perf_counter() + 30
                while len(sink.acked) < len(committed):  # a bounded wait for the last acks
                    if time.perf_counter() > deadline:
                        break
                    await asyncio.sleep(0.01)
    finally:
        await drop_stream(args.nats, name)
    delays = sorted((sink.acked[k] - t) * 1000 for k, t in committed.items() if k in sink.acked)
    assert len(delays) == len(committed), f"{len(delays)} of {len(committed)} acked"
    p99 = delays[int(0.99 * (len(delays) - 1))]
    return {
        "backend": args.backend,
        "workload": "relay_latency",
        "events": len(delays),
        "rate": args.rate,
        "unit": "ms",
        "p50": round(statistics.median(delays), 2),
        "p99": round(p99, 2),
        "max": round(delays[-1], 2),
        "target": 50,
        "meets_target": p99 <= 50,
        "load_1m": os.getloadavg()[0],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], required=True)
    parser.add_argument(
        "--url",
        default=os.environ.get("EVENTFOLD_BENCH_POSTGRES_URL")
        or os.environ.get("EVENTFOLD_TEST_POSTGRES_URL"),
    )
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--streams", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--appends", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--workload", choices=["throughput", "latency"], nargs="*")
    args = parser.parse_args()
    for workload in args.workload or ["throughput", "latency"]:
        location = Location(args.backend, args.url)
        try:
            figures = await (throughput if workload == "throughput" else latency)(args, location)
        finally:
            location.drop()
        print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
