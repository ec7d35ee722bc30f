"""The relay against a real NATS JetStream server, on SQLite and PostgreSQL: order,
de-duplication, a server that rejects, a server that goes away, SIGKILLed relay
processes, and failover between two relay processes."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from conftest import JetStreamTarget
from eventfold import ANY, EventStore, NewEvent, Position, connect
from eventfold.projections import read_models_for
from eventfold.relay import (
    NatsJetStreamSink,
    Relay,
    RelayOptions,
    header_value,
    relay_parked,
    relay_status,
)
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
