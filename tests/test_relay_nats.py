"""The relay against a real NATS JetStream server, on SQLite and PostgreSQL: order,
de-duplication, a server that rejects, a server that goes away, SIGKILLed relay
processes, and failover between two relay processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from conftest import JetStreamTarget, drop_schema, server_url, with_schema
from eventfold import ANY, START, EventStore, NewEvent, Position, connect
from eventfold.inbox import DEFAULT_TABLE, Inbox, InboxSession, consume
from eventfold.projections import read_models_for
from eventfold.relay import (
    OUTBOX,
    NatsJetStreamSink,
    Relay,
    RelayOptions,
    header_value,
    relay_parked,
    relay_status,
)
from eventfold.store import SupportsOutbox, SupportsUnitOfWork, capability
from eventfold.testing.conformance import settle

FAST = RelayOptions(
    checkpoint_interval=0.01,
    poll_interval=0.02,
    retry_delay=0.01,
    max_backoff=0.2,
    lease_retry=0.1,
    parked_refresh=0.05,
)


async def until(check: Any, timeout: float = 30.0) -> None:  # noqa: ASYNC109
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)


@pytest.fixture
async def store(sql_url: str) -> AsyncIterator[EventStore]:
    async with connect(sql_url) as s:
        yield s


def sink_for(target: JetStreamTarget, url: str | None = None, **kw: Any) -> NatsJetStreamSink:
    return NatsJetStreamSink(
        url or target.url, stream=target.stream, subjects=target.subjects, **kw
    )


async def append(store: EventStore, stream: str, n: int, size: int = 10) -> Position:
    result = await store.append(
        stream,
        [NewEvent({"i": i, "pad": "x" * size}, type="Happened") for i in range(n)],
        expected_version=ANY,
    )
    await settle(store, result.position)
    return result.position


def per_stream(messages: list[Any]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for m in messages:
        h = m.headers or {}
        stream = header_value(h, "Eventfold-Stream-Id")
        assert stream is not None
        out.setdefault(stream, []).append(int(h["Eventfold-Stream-Version"]))
    return out


async def test_events_reach_jetstream_in_order_and_a_resend_is_dropped(
    store: EventStore, jetstream: JetStreamTarget
) -> None:
    for k in range(10):
        await append(store, f"order-{k}", 20)
    head = await append(store, "order-0", 5)
    relay = Relay(
        store,
        sink_for(jetstream),
        destination="orders",
        subject_prefix=jetstream.prefix,
        options=FAST,
    )
    async with relay:
        await relay.wait_for(head, timeout=30)
    messages = await jetstream.messages()
    assert len(messages) == 205
    versions = per_stream(messages)
    assert versions["order-0"] == list(range(1, 26))
    assert all(versions[f"order-{k}"] == list(range(1, 21)) for k in range(1, 10))
    first = next(m for m in messages if m.headers["Eventfold-Stream-Id"] == "order-3")
    event = await anext(aiter(store.read_stream("order-3")))
    assert first.headers["Nats-Msg-Id"] == str(event.event_id)
    assert first.subject == f"{jetstream.prefix}.order.Happened"
    # A relay that starts over (its checkpoint lost) sends everything again: the server
    # drops each copy inside its duplicate window.
    again = Relay(
        store,
        sink_for(jetstream),
        destination="again",
        subject_prefix=jetstream.prefix,
        options=FAST,
    )
    async with again:
        await again.wait_for(head, timeout=30)
    assert len(await jetstream.messages()) == 205


async def test_a_stream_the_server_rejects_parks_and_the_others_flow(
    store: EventStore, jetstream: JetStreamTarget
) -> None:
    nc = await nats.connect(jetstream.url)
    try:
        await nc.jetstream().add_stream(
            name=jetstream.stream, subjects=jetstream.subjects, max_msg_size=2048
        )
    finally:
        await nc.close()
    await append(store, "good-1", 5)
    await append(store, "big-1", 2, size=4096)
    head = await append(store, "good-2", 5)
    relay = Relay(
        store,
        sink_for(jetstream),
        destination="orders",
        subject_prefix=jetstream.prefix,
        options=FAST,
    )
    async with relay:
        await relay.wait_for(head, timeout=30)
        parked = await relay_parked(relay)
        status = await relay_status(relay)
    assert [p.stream_id for p in parked] == ["big-1", "big-1"]
    assert "maximum" in parked[0].error
    assert status.parked == 2
    assert status.events.lag_events == 0
    assert sorted(per_stream(await jetstream.messages())) == ["good-1", "good-2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PrivateNats:
    """A nats-server of this test's own (JetStream on, its own store dir), stopped and
    started at will."""

    def __init__(self, tmp: Path) -> None:
        binary = shutil.which("nats-server")
        if binary is None:
            if os.environ.get("CI"):
                pytest.fail("CI is set but nats-server is not on PATH", pytrace=False)
            pytest.skip("nats-server is not on PATH")
        self.binary = binary
        self.port = free_port()
        self.dir = tmp / "nats"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[PrivateNats]:
    server = PrivateNats(tmp_path)
    yield server
    server.stop()


async def test_jetstream_down_then_back_loses_nothing_and_shows_the_lag(
    store: EventStore, jetstream: JetStreamTarget, private_nats: PrivateNats
) -> None:
    sink = sink_for(jetstream, private_nats.url, ack_timeout=0.5, connect_timeout=0.3)
    first = await append(store, "order-1", 5)
    relay = Relay(store, sink, destination="orders", subject_prefix=jetstream.prefix, options=FAST)
    async with relay:
        # Nothing listens yet: the relay waits, saying why, and the lag shows.
        await until(lambda: relay.error is not None)
        assert "cannot connect to NATS" in (relay.error or "")
        status = await relay_status(relay)
        assert status.events.lag_events == 5
        private_nats.start()
        await relay.wait_for(first, timeout=30)
        # The server goes away while the relay runs, and comes back.
        private_nats.stop()
        second = await append(store, "order-1", 5)
        await until(lambda: relay.error is not None)
        await until(lambda: _lag(relay, 5))
        private_nats.start()
        await relay.wait_for(second, timeout=60)
    nc = await nats.connect(private_nats.url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(jetstream.stream)
        got = [await js.get_msg(jetstream.stream, s) for s in range(1, info.state.last_seq + 1)]
    finally:
        await nc.close()
    assert per_stream(got) == {"order-1": list(range(1, 11))}


async def _lag(relay: Relay, n: int) -> bool:
    return (await relay_status(relay)).events.lag_events == n


APP = textwrap.dedent(
    """
    import os
    from eventfold.relay import NatsJetStreamSink, Relay, RelayOptions

    def relays(store):
        sink = NatsJetStreamSink(
            os.environ["RELAY_NATS"], stream=os.environ["RELAY_STREAM"],
            subjects=[os.environ["RELAY_PREFIX"] + ".>"],
            duplicate_window=600.0,  # longer than the test: every re-send is dropped
        )
        every = float(os.environ.get("RELAY_CHECKPOINT", "0.02"))
        options = RelayOptions(checkpoint_interval=every, poll_interval=0.02, lease_retry=0.1)
        return Relay(store, sink, destination="orders",
                     subject_prefix=os.environ["RELAY_PREFIX"], options=options)
    """
)


def relay_process(
    url: str,
    cwd: Path,
    target: JetStreamTarget,
    *args: str,
    capture: bool = False,
    checkpoint_every: float = 0.02,
) -> subprocess.Popen[str]:
    env = dict(
        os.environ,
        RELAY_NATS=target.url,
        RELAY_STREAM=target.stream,
        RELAY_PREFIX=target.prefix,
        RELAY_CHECKPOINT=str(checkpoint_every),
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from eventfold.cli import main; main()",
            "--url",
            url,
            "relay",
            "--app",
            "relayapp",
            *args,
        ],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        stderr=subprocess.PIPE if capture else subprocess.DEVNULL,
        text=True,
    )


def check_delivered(messages: list[Any], expected: dict[str, int]) -> None:
    """Every committed event is in JetStream once, each stream's in order."""
    ids = [m.headers["Nats-Msg-Id"] for m in messages]
    assert len(set(ids)) == sum(expected.values()), "every committed event reached JetStream"
    assert len(ids) == len(set(ids)), "inside the duplicate window the server drops copies"
    assert per_stream(messages) == {s: list(range(1, n + 1)) for s, n in expected.items()}


@pytest.mark.slow
async def test_sigkilled_relay_processes_lose_nothing_and_keep_order(
    sql_url: str, jetstream: JetStreamTarget, tmp_path: Path
) -> None:
    (tmp_path / "relayapp.py").write_text(APP)
    rng = random.Random(os.environ.get("RELAY_SEED", uuid.uuid4().hex))
    written: dict[str, int] = {}
    async with connect(sql_url) as store:
        stop = asyncio.Event()

        async def writer(w: int) -> None:
            while not stop.is_set():
                stream = f"order-{w}-{rng.randrange(8)}"
                n = rng.randrange(1, 4)
                await store.append(
                    stream,
                    [NewEvent({"w": w}, type="Happened") for _ in range(n)],
                    expected_version=ANY,
                )
                written[stream] = written.get(stream, 0) + n
                await asyncio.sleep(rng.uniform(0.0, 0.01))

        writers = [asyncio.create_task(writer(w)) for w in range(3)]
        try:
            for life in range(8):
                if life % 2:
                    # Killed between publish and checkpoint: it checkpoints only every
                    # 30 s, so what it publishes is past its checkpoint when it dies.
                    before = await _distinct(jetstream)
                    proc = relay_process(sql_url, tmp_path, jetstream, checkpoint_every=30)
                    await until(lambda n=before: _more_than(jetstream, n), timeout=60)
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    covered = await _covered(store, read_models_for(store))
                    assert await _distinct(jetstream) > covered
                else:
                    proc = relay_process(sql_url, tmp_path, jetstream)
                    await asyncio.sleep(rng.uniform(0.4, 1.6))
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
        finally:
            stop.set()
            await asyncio.gather(*writers)
        await settle(store, await store.head())
    final = relay_process(sql_url, tmp_path, jetstream, "--until-caught-up", capture=True)
    _out, err = await asyncio.to_thread(final.communicate, timeout=120)
    assert final.returncode == 0, err
    check_delivered(await jetstream.messages(), written)


@pytest.mark.postgres
async def test_a_standby_relay_process_takes_over_when_the_holder_dies(
    postgres_url: str, jetstream: JetStreamTarget, tmp_path: Path
) -> None:
    (tmp_path / "relayapp.py").write_text(APP)
    async with connect(postgres_url) as store:
        await append(store, "order-1", 5)
        holder = relay_process(postgres_url, tmp_path, jetstream)
        try:
            await until(lambda: _count(jetstream, 5), timeout=60)
            standby = relay_process(postgres_url, tmp_path, jetstream)
            try:
                await asyncio.sleep(0.5)  # let it find the lease taken
                holder.send_signal(signal.SIGKILL)
                holder.wait()
                await append(store, "order-1", 5)
                await append(store, "order-2", 3)
                await until(lambda: _count(jetstream, 13), timeout=60)
            finally:
                standby.send_signal(signal.SIGTERM)
                standby.wait(timeout=30)
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()
    check_delivered(await jetstream.messages(), {"order-1": 10, "order-2": 3})


async def _distinct(target: JetStreamTarget) -> int:
    """Messages stored (the server drops copies inside its window, so each is distinct;
    the final check counts ids)."""
    try:
        return await target.count()
    except Exception:  # the stream does not exist yet
        return 0


async def _more_than(target: JetStreamTarget, n: int) -> bool:
    return await _distinct(target) > n


async def _covered(store: EventStore, models: Any) -> int:
    """How many events the relay's committed checkpoint covers."""
    rows = await models.checkpoints("relay_orders", 1)
    checkpoint = next((c.position for c in rows if c.partition == 0), None)
    if checkpoint is None:
        return 0
    n = 0
    async for event in store.read_all():
        if event.position > checkpoint:
            break
        n += 1
    return n


async def _count(target: JetStreamTarget, n: int) -> bool:
    return await _distinct(target) >= n


async def test_stream_ids_nats_forbids_in_subjects_still_arrive(
    store: EventStore, jetstream: JetStreamTarget
) -> None:
    odd = ["a b-1", "x.y-2", "star*-3", "gt>-4", "ünï code-5"]
    for stream in odd:
        result = await store.append(
            stream, [NewEvent({"s": stream}, type="Odd Type.v1")], expected_version=ANY
        )
    await settle(store, result.position)
    relay = Relay(
        store,
        sink_for(jetstream),
        destination="odd",
        subject_prefix=jetstream.prefix,
        options=FAST,
    )
    async with relay:
        await relay.wait_for(result.position, timeout=30)
    messages = await jetstream.messages()
    assert sorted(per_stream(messages)) == sorted(odd)
    subjects = {m.subject for m in messages}
    assert f"{jetstream.prefix}.a%20b.Odd%20Type%2Ev1" in subjects
    assert all(len(s.split(".")) == 3 for s in subjects)


# -- the consuming side: exactly-once effects through the inbox ------------------------------


class CounterDb:
    """The consumer's own database: a counter per stream and the order of application,
    beside the inbox (a SQLite file, or a fresh schema on the second PostgreSQL server)."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.schema = f"test_consumer_{uuid.uuid4().hex[:10]}"
        if kind == "sqlite":
            self.path = tmp / "consumer.db"
            self.url = f"sqlite:///{self.path}"
            self.p = "?"
            serial = "INTEGER PRIMARY KEY AUTOINCREMENT"
        else:
            self.base = server_url(
                "EVENTFOLD_TEST_POSTGRES_URL_2", "the consumer's database is the second server"
            )
            self.url = with_schema(self.base, self.schema)
            self.p = "%s"
            serial = "BIGSERIAL PRIMARY KEY"
        self.ddl = [
            "CREATE TABLE counters (stream TEXT PRIMARY KEY, n INTEGER NOT NULL)",
            f"CREATE TABLE applied (id {serial}, stream TEXT NOT NULL, version INTEGER NOT NULL)",
        ]

    def create(self) -> None:
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.path)) as lite, lite:
                for statement in self.ddl:
                    lite.execute(statement)
            return
        import psycopg

        with psycopg.connect(self.base, autocommit=True) as db:
            db.execute(f'CREATE SCHEMA "{self.schema}"')
            db.execute(f'SET search_path TO "{self.schema}"')
            for statement in self.ddl:
                db.execute(statement)

    def drop(self) -> None:
        if self.kind == "postgres":
            drop_schema(self.base, self.schema)

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.path)) as lite:
                return list(lite.execute(query))
        import psycopg

        with psycopg.connect(self.base, autocommit=True) as db:
            db.execute(f'SET search_path TO "{self.schema}"')
            return list(db.execute(query).fetchall())

    def counts(self) -> dict[str, int]:
        return dict(self.rows("SELECT stream, n FROM counters"))

    def applied(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for stream, version in self.rows("SELECT stream, version FROM applied ORDER BY id"):
            out.setdefault(stream, []).append(version)
        return out


@pytest.fixture
def counter_db(sql_url: str, tmp_path: Path) -> Iterator[CounterDb]:
    db = CounterDb("sqlite" if sql_url.startswith("sqlite") else "postgres", tmp_path)
    db.create()
    yield db
    db.drop()


@pytest.mark.slow
async def test_a_consumer_with_the_inbox_applies_each_event_once_across_relay_crashes(
    sql_url: str, jetstream: JetStreamTarget, counter_db: CounterDb, tmp_path: Path
) -> None:
    (tmp_path / "relayapp.py").write_text(APP)
    seed = os.environ.get("RELAY_SEED", uuid.uuid4().hex)
    rng = random.Random(seed)
    nc = await nats.connect(jetstream.url)
    js = nc.jetstream()
    # A duplicate window shorter than a relay's restart: every re-send after a crash is
    # stored again, so the consumer sees the copies and only its inbox stops them.
    await js.add_stream(name=jetstream.stream, subjects=jetstream.subjects, duplicate_window=0.1)
    p = counter_db.p

    async def apply(msg: Any, tx: InboxSession) -> None:
        stream = header_value(msg.headers, "Eventfold-Stream-Id")
        version = int(msg.headers["Eventfold-Stream-Version"])
        await tx.execute(
            f"INSERT INTO counters (stream, n) VALUES ({p}, 1) "
            "ON CONFLICT (stream) DO UPDATE SET n = counters.n + 1",
            (stream,),
        )
        await tx.execute(
            f"INSERT INTO applied (stream, version) VALUES ({p}, {p})", (stream, version)
        )

    written: dict[str, int] = {}
    stop_consumer = asyncio.Event()
    async with await Inbox.open(counter_db.url, consumer="counter") as inbox:
        consumer = asyncio.create_task(
            consume(
                js, jetstream.stream, "counter", inbox, apply, stop=stop_consumer, fetch_timeout=0.2
            )
        )
        try:
            async with connect(sql_url) as store:
                stop = asyncio.Event()

                async def writer(w: int) -> None:
                    while not stop.is_set():
                        stream = f"order-{w}-{rng.randrange(6)}"
                        n = rng.randrange(1, 4)
                        await store.append(
                            stream,
                            [NewEvent({"w": w}, type="Happened") for _ in range(n)],
                            expected_version=ANY,
                        )
                        written[stream] = written.get(stream, 0) + n
                        await asyncio.sleep(rng.uniform(0.0, 0.02))

                writers = [asyncio.create_task(writer(w)) for w in range(3)]
                try:
                    for life in range(4):
                        if life % 2 == 0:
                            # Killed between publish and checkpoint (it checkpoints every
                            # 30 s): the next life sends what it published again.
                            before = await _distinct(jetstream)
                            proc = relay_process(sql_url, tmp_path, jetstream, checkpoint_every=30)
                            await until(lambda n=before: _more_than(jetstream, n), timeout=30)
                        else:
                            proc = relay_process(sql_url, tmp_path, jetstream)
                            await asyncio.sleep(rng.uniform(0.3, 1.2))
                        proc.send_signal(signal.SIGKILL)
                        proc.wait()
                finally:
                    stop.set()
                    await asyncio.gather(*writers)
                await settle(store, await store.head())
            final = relay_process(sql_url, tmp_path, jetstream, "--until-caught-up", capture=True)
            _out, err = await asyncio.to_thread(final.communicate, timeout=60)
            assert final.returncode == 0, err

            total = sum(written.values())

            async def consumed() -> bool:
                info = await js.consumer_info(jetstream.stream, "counter")
                stored = await jetstream.count()
                return bool(
                    info.delivered.stream_seq >= stored
                    and info.num_pending == 0
                    and info.num_ack_pending == 0
                )

            await until(consumed, timeout=30)
        finally:
            stop_consumer.set()
            await asyncio.wait_for(consumer, timeout=10)
            await nc.close()

    messages = await jetstream.messages()
    ids = [m.headers["Nats-Msg-Id"] for m in messages]
    assert len(set(ids)) == total, f"seed {seed}: every committed event reached JetStream"
    assert len(ids) > len(set(ids)), f"seed {seed}: the relay's re-sends were stored again"
    assert counter_db.counts() == written, f"seed {seed}: each event applied exactly once"
    assert counter_db.applied() == {s: list(range(1, n + 1)) for s, n in written.items()}
    processed = counter_db.rows(f"SELECT count(*) FROM {DEFAULT_TABLE}")
    assert processed == [(total,)]


# -- units of work through the relay ----------------------------------------------------------


@pytest.mark.slow
async def test_units_of_work_reach_jetstream_once_across_a_relay_crash(
    sql_url: str, jetstream: JetStreamTarget, tmp_path: Path
) -> None:
    (tmp_path / "relayapp.py").write_text(APP)
    sent: dict[str, list[str]] = {}  # key -> message ids, in commit order
    async with connect(sql_url) as store:
        units = capability(store, SupportsUnitOfWork)
        outbox_port = capability(store, SupportsOutbox)
        units.declare_destination("orders")
        for n in range(30):
            key = f"customer-{n % 3}"
            async with units.unit_of_work(correlation_id=f"signup-{n}") as uow:
                p = "?" if uow.paramstyle == "qmark" else "%s"
                await uow.execute("CREATE TABLE IF NOT EXISTS customers (id TEXT PRIMARY KEY)")
                await uow.execute(f"INSERT INTO customers (id) VALUES ({p})", (f"c{n}",))
                await uow.append(
                    f"order-{n}", [NewEvent({"n": n}, type="Placed")], expected_version=ANY
                )
                message_id = uow.publish("orders", {"n": n}, key=key)
            sent.setdefault(key, []).append(str(message_id))
        await settle(store, await store.head())
        outbox_head = await outbox_port.outbox_head("orders")

        # The first relay publishes everything, then dies before its first checkpoint.
        first = relay_process(sql_url, tmp_path, jetstream, checkpoint_every=30)
        try:
            await until(lambda: _count(jetstream, 60), timeout=30)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        models = read_models_for(store)
        rows = await models.checkpoints("relay_orders", 1)
        outbox_checkpoint = next((c.position for c in rows if c.partition == OUTBOX), None)
        assert outbox_checkpoint is None or outbox_checkpoint < outbox_head
        assert len(await outbox_port.read_outbox(START, 100, destination="orders")) == 30

    # The next one sends them all again: inside the window the server drops every copy.
    again = relay_process(sql_url, tmp_path, jetstream, "--until-caught-up", capture=True)
    _out, err = await asyncio.to_thread(again.communicate, timeout=60)
    assert again.returncode == 0, err
    messages = await jetstream.messages()
    assert len(messages) == 60
    outbox = [m for m in messages if m.subject == f"{jetstream.prefix}.outbox"]
    by_key: dict[str, list[str]] = {}
    for m in outbox:
        assert m.headers["Eventfold-Destination"] == "orders"
        by_key.setdefault(m.headers["Eventfold-Key"], []).append(m.headers["Nats-Msg-Id"])
    assert by_key == sent  # Nats-Msg-Id = the message id, each key in commit order
    assert {json.loads(m.data)["n"] for m in outbox} == set(range(30))
    correlations = {json.loads(m.data)["n"]: m.headers["correlation_id"] for m in outbox}
    assert correlations == {n: f"signup-{n}" for n in range(30)}
    assert per_stream([m for m in messages if m not in outbox]) == {
        f"order-{n}": [1] for n in range(30)
    }
