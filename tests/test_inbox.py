"""The inbox: a JetStream consumer's effects happen once per message id, on SQLite and
PostgreSQL, against the real JetStream server (``EVENTFOLD_TEST_NATS_URL``, by default
nats://127.0.0.1:4222; under CI a missing server is a failure, never a skip)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import nats
import nats.errors
import psycopg
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError

from conftest import nats_url_or_skip
from eventfold import ConfigurationError, InvalidInput
from eventfold.inbox import Inbox, InboxSession, consume, message_id_of

# --- fixtures -------------------------------------------------------------------------


@pytest.fixture
async def nc() -> AsyncIterator[Client]:
    """A connection to the test JetStream server, or skip (locally) / fail (CI) when it is
    not listening."""
    url = nats_url_or_skip()
    client = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    yield client
    await client.close()


@dataclass
class Stream:
    js: JetStreamContext
    name: str
    subject: str

    async def publish(self, body: bytes, message_id: str | None) -> int:
        headers = {"Nats-Msg-Id": message_id} if message_id is not None else None
        ack = await self.js.publish(self.subject, body, headers=headers)
        assert not ack.duplicate
        return ack.seq


@pytest.fixture
async def stream(nc: Client) -> AsyncIterator[Stream]:
    """A fresh stream with a 0.5 s duplicate window, deleted after the test."""
    js = nc.jetstream()
    token = uuid.uuid4().hex[:12]
    name = f"TEST_INBOX_{token}"
    await js.add_stream(name=name, subjects=[f"inboxtest.{token}.>"], duplicate_window=0.5)
    yield Stream(js, name, f"inboxtest.{token}.deposit")
    await js.delete_stream(name)


@dataclass
class Consumer:
    """The consumer's database: the inbox's URL and how to read its effects."""

    url: str
    placeholder: str
    count: Callable[[], Awaitable[list[str]]]


def _sqlite_bodies(path: str) -> Callable[[], Awaitable[list[str]]]:
    async def bodies() -> list[str]:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return [r[0] for r in conn.execute("SELECT body FROM applied ORDER BY rowid")]

    return bodies


def _postgres_bodies(url: str, schema: str) -> Callable[[], Awaitable[list[str]]]:
    async def bodies() -> list[str]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            cursor = await conn.execute(f'SELECT body FROM "{schema}".applied ORDER BY id')
            return [r[0] for r in await cursor.fetchall()]

    return bodies


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def consumer_db(request: pytest.FixtureRequest, tmp_path: Path) -> Consumer:
    """The consumer's own database, of each SQL backend in turn."""
    if request.param == "sqlite":
        path = f"{tmp_path}/consumer.db"
        return Consumer(f"sqlite:///{path}", "?", _sqlite_bodies(path))
    url: str = request.getfixturevalue("postgres_url")
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    schema = query.pop("schema")
    base = urlunsplit(parts._replace(query="&".join(f"{k}={v}" for k, v in query.items())))
    return Consumer(url, "%s", _postgres_bodies(base, schema))


@pytest.fixture
async def inbox(consumer_db: Consumer) -> AsyncIterator[Inbox]:
    inbox = await Inbox.open(consumer_db.url, consumer="billing")
    ddl = (
        "CREATE TABLE applied (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL)"
        if consumer_db.placeholder == "?"
        else "CREATE TABLE applied (id bigserial PRIMARY KEY, body text NOT NULL)"
    )
    async with Inbox(consumer_db.url, consumer="setup") as setup, setup.receive_id("ddl") as tx:
        assert tx is not None
        await tx.execute(ddl)
    yield inbox
    await inbox.close()


def apply_with(consumer_db: Consumer) -> Callable[[Msg, InboxSession], Awaitable[None]]:
    """A handler whose one effect is a row holding the message's body."""

    async def handler(msg: Msg, tx: InboxSession) -> None:
        sql = f"INSERT INTO applied (body) VALUES ({consumer_db.placeholder})"
        await tx.execute(sql, (msg.data.decode(),))

    return handler


async def wait_until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    limit = 20.0
    deadline = time.monotonic() + limit
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {limit} s waiting until {what}")
        await asyncio.sleep(0.05)


async def all_acked(stream: Stream, durable: str, deliveries: int) -> bool:
    """Whether ``durable`` made at least ``deliveries`` deliveries and none awaits an ack."""
    try:
        info = await stream.js.consumer_info(stream.name, durable)
    except NotFoundError:  # consume has not created it yet
        return False
    return (
        info.delivered is not None
        and (info.delivered.consumer_seq or 0) >= deliveries
        and info.num_ack_pending == 0
        and info.num_pending == 0
    )


@pytest.fixture
async def running(
    stream: Stream, inbox: Inbox, consumer_db: Consumer
) -> AsyncIterator[Callable[..., asyncio.Task[None]]]:
    """Start `consume` on the stream (one task at a time); stopped after the test."""
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    def start(**options: Any) -> asyncio.Task[None]:
        options.setdefault("handler", apply_with(consumer_db))
        handler = options.pop("handler")
        task = asyncio.create_task(
            consume(
                stream.js,
                stream.name,
                "billing",
                inbox,
                handler,
                fetch_timeout=0.2,
                stop=stop,
                **options,
            )
        )
        tasks.append(task)
        return task

    yield start
    stop.set()
    for task in tasks:
        if not task.cancelled():
            await asyncio.wait_for(task, 10)


async def make_consumer(
    stream: Stream, ack_wait: float = 30.0
) -> JetStreamContext.PullSubscription:
    await stream.js.add_consumer(
        stream.name,
        ConsumerConfig(durable_name="billing", ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait),
    )
    return await stream.js.pull_subscribe_bind(durable="billing", stream=stream.name)


# --- delivery ---------------------------------------------------------------------------


async def test_same_content_with_two_ids_is_applied_twice(
    stream: Stream, consumer_db: Consumer, running: Callable[..., asyncio.Task[None]]
) -> None:
    await stream.publish(b"deposit 10", str(uuid.uuid4()))
    await stream.publish(b"deposit 10", str(uuid.uuid4()))
    running()
    await wait_until(lambda: all_acked(stream, "billing", 2), "both messages are acked")
    assert await consumer_db.count() == ["deposit 10", "deposit 10"]


async def test_a_redelivered_message_is_applied_once(
    stream: Stream, inbox: Inbox, consumer_db: Consumer
) -> None:
    message_id = str(uuid.uuid4())
    await stream.publish(b"deposit 10", message_id)
    subscription = await make_consumer(stream)
    handler = apply_with(consumer_db)

    [first] = await subscription.fetch(1, timeout=5)
    async with inbox.receive(first) as tx:
        assert tx is not None
        await handler(first, tx)
    await first.nak()  # as if the ack were lost: JetStream delivers it again

    [second] = await subscription.fetch(1, timeout=5)
    assert second.metadata.num_delivered == 2
    assert message_id_of(second) == message_id
    async with inbox.receive(second) as tx:
        assert tx is None
    await second.ack()
    assert await consumer_db.count() == ["deposit 10"]
    assert await inbox.processed(message_id)


async def test_a_message_republished_after_the_window_is_applied_once(
    stream: Stream,
    inbox: Inbox,
    consumer_db: Consumer,
    running: Callable[..., asyncio.Task[None]],
) -> None:
    message_id = str(uuid.uuid4())
    await stream.publish(b"deposit 10", message_id)
    running()
    await wait_until(lambda: all_acked(stream, "billing", 1), "the message is acked")

    async def stored_again() -> bool:
        # Inside the window the server drops it (duplicate); after it, it is stored anew.
        ack = await stream.js.publish(
            stream.subject, b"deposit 10", headers={"Nats-Msg-Id": message_id}
        )
        return not ack.duplicate

    await wait_until(stored_again, "the duplicate window has passed")
    await wait_until(lambda: all_acked(stream, "billing", 2), "the re-published one is acked")
    info = await stream.js.stream_info(stream.name)
    assert info.state.messages == 2  # JetStream holds it twice ...
    assert await consumer_db.count() == ["deposit 10"]  # ... its effect happened once


async def test_an_exception_between_commit_and_ack_is_not_applied_again(
    stream: Stream,
    inbox: Inbox,
    consumer_db: Consumer,
    running: Callable[..., asyncio.Task[None]],
) -> None:
    await stream.publish(b"deposit 10", str(uuid.uuid4()))
    subscription = await make_consumer(stream, ack_wait=1.0)
    [msg] = await subscription.fetch(1, timeout=5)

    async def process_then_lose_the_connection() -> None:
        async with inbox.receive(msg) as tx:
            assert tx is not None
            await apply_with(consumer_db)(msg, tx)
        raise ConnectionResetError("lost before the ack")

    with pytest.raises(ConnectionResetError):
        await process_then_lose_the_connection()
    await subscription.unsubscribe()
    assert await consumer_db.count() == ["deposit 10"]

    running()  # gets it again once ack_wait has passed
    await wait_until(lambda: all_acked(stream, "billing", 2), "the redelivery is acked")
    assert await consumer_db.count() == ["deposit 10"]


CRASHING_CONSUMER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    import nats
    from eventfold.inbox import Inbox

    async def main(nats_url, stream, inbox_url, placeholder):
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        subscription = await js.pull_subscribe_bind(durable="billing", stream=stream)
        [msg] = await subscription.fetch(1, timeout=5)
        inbox = await Inbox.open(inbox_url, consumer="billing")
        async with inbox.receive(msg) as tx:
            sql = f"INSERT INTO applied (body) VALUES ({placeholder})"
            await tx.execute(sql, (msg.data.decode(),))
        os.kill(os.getpid(), signal.SIGKILL)  # committed, never acked

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def test_a_consumer_killed_between_commit_and_ack_is_not_applied_again(
    stream: Stream,
    inbox: Inbox,
    consumer_db: Consumer,
    running: Callable[..., asyncio.Task[None]],
) -> None:
    await stream.publish(b"deposit 10", str(uuid.uuid4()))
    await make_consumer(stream, ack_wait=1.0)
    nats_url = nats_url_or_skip()
    args = [nats_url, stream.name, consumer_db.url, consumer_db.placeholder]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_CONSUMER, *args, stderr=subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == -signal.SIGKILL, stderr.decode()
    assert await consumer_db.count() == ["deposit 10"]

    running()
    await wait_until(lambda: all_acked(stream, "billing", 2), "the redelivery is acked")
    assert await consumer_db.count() == ["deposit 10"]


# --- failures ---------------------------------------------------------------------------


async def test_a_failing_handler_rolls_back_its_effects_and_the_id(
    inbox: Inbox, consumer_db: Consumer
) -> None:
    sql = f"INSERT INTO applied (body) VALUES ({consumer_db.placeholder})"

    async def fail_after_the_effect() -> None:
        async with inbox.receive_id("m-1") as tx:
            assert tx is not None
            await tx.execute(sql, ("deposit 10",))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await fail_after_the_effect()
    assert await consumer_db.count() == []
    assert not await inbox.processed("m-1")

    async with inbox.receive_id("m-1") as tx:  # the retry applies it
        assert tx is not None
        await tx.execute(sql, ("deposit 10",))
    assert await consumer_db.count() == ["deposit 10"]
    assert await inbox.processed("m-1")


async def test_consume_retries_a_failing_handler_then_applies_once(
    stream: Stream, consumer_db: Consumer, running: Callable[..., asyncio.Task[None]]
) -> None:
    calls = 0
    apply = apply_with(consumer_db)

    async def flaky(msg: Msg, tx: InboxSession) -> None:
        nonlocal calls
        calls += 1
        await apply(msg, tx)  # the effect is written, then rolled back
        if calls < 3:
            raise RuntimeError("downstream not ready")

    await stream.publish(b"deposit 10", str(uuid.uuid4()))
    running(handler=flaky, retry_delay=0.05)
    await wait_until(lambda: all_acked(stream, "billing", 3), "the third attempt is acked")
    assert calls == 3
    assert await consumer_db.count() == ["deposit 10"]


async def test_consume_parks_a_message_whose_handler_keeps_failing(
    stream: Stream,
    inbox: Inbox,
    consumer_db: Consumer,
    running: Callable[..., asyncio.Task[None]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    apply = apply_with(consumer_db)

    async def handler(msg: Msg, tx: InboxSession) -> None:
        await apply(msg, tx)
        if msg.data == b"poison":
            raise ValueError("cannot parse the amount")

    poison_id = str(uuid.uuid4())
    await stream.publish(b"poison", poison_id)
    await stream.publish(b"deposit 10", str(uuid.uuid4()))
    caplog.set_level(logging.WARNING, logger="eventfold.inbox")
    running(handler=handler, retry_delay=0.05, max_attempts=3)
    await wait_until(lambda: all_acked(stream, "billing", 4), "the poison message is parked")
    assert await consumer_db.count() == ["deposit 10"]
    assert not await inbox.processed(poison_id)
    parked = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(parked) == 1
    assert poison_id in parked[0].getMessage()
    assert "after 3 attempts" in parked[0].getMessage()
    assert "cannot parse the amount" in parked[0].getMessage()


async def test_a_cancelled_consume_rolls_back_the_message_in_hand(
    stream: Stream,
    inbox: Inbox,
    consumer_db: Consumer,
    running: Callable[..., asyncio.Task[None]],
) -> None:
    apply = apply_with(consumer_db)
    applying = asyncio.Event()

    async def stuck(msg: Msg, tx: InboxSession) -> None:
        await apply(msg, tx)
        applying.set()
        await asyncio.Event().wait()

    message_id = str(uuid.uuid4())
    await stream.publish(b"deposit 10", message_id)
    task = running(handler=stuck)
    await asyncio.wait_for(applying.wait(), 20)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await consumer_db.count() == []
    assert not await inbox.processed(message_id)


async def test_consume_terminates_a_message_without_an_id_and_goes_on(
    stream: Stream,
    consumer_db: Consumer,
    running: Callable[..., asyncio.Task[None]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    await stream.publish(b"anonymous", None)
    await stream.publish(b"deposit 10", str(uuid.uuid4()))
    caplog.set_level(logging.WARNING, logger="eventfold.inbox")
    running()
    await wait_until(lambda: all_acked(stream, "billing", 2), "both are settled")
    assert await consumer_db.count() == ["deposit 10"]
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "has no Nats-Msg-Id header" in record.getMessage()


async def test_a_concurrent_delivery_of_the_same_id_waits_and_is_skipped(
    consumer_db: Consumer, inbox: Inbox
) -> None:
    other = await Inbox.open(consumer_db.url, consumer="billing")
    sql = f"INSERT INTO applied (body) VALUES ({consumer_db.placeholder})"
    entered = asyncio.Event()
    release = asyncio.Event()

    async def first() -> bool:
        async with inbox.receive_id("m-1") as tx:
            assert tx is not None
            await tx.execute(sql, ("deposit 10",))
            entered.set()
            await release.wait()
        return True

    async def second() -> bool:
        await entered.wait()
        async with other.receive_id("m-1") as tx:
            if tx is not None:
                await tx.execute(sql, ("deposit 10",))
            return tx is not None

    try:
        a = asyncio.create_task(first())
        b = asyncio.create_task(second())
        await entered.wait()
        done, _ = await asyncio.wait([b], timeout=0.3)
        assert not done, "the second delivery did not wait for the first transaction"
        release.set()
        assert await asyncio.wait_for(a, 30)
        assert not await asyncio.wait_for(b, 30)
    finally:
        await other.close()
    assert await consumer_db.count() == ["deposit 10"]


# --- retention --------------------------------------------------------------------------


async def test_prune_forgets_ids_older_than_the_retention(
    consumer_db: Consumer, inbox: Inbox
) -> None:
    for message_id in ("m-1", "m-2"):
        async with inbox.receive_id(message_id) as tx:
            assert tx is not None
    assert await inbox.prune() == 0  # younger than the default week
    other = await Inbox.open(consumer_db.url, consumer="shipping")
    try:
        async with other.receive_id("m-1") as tx:  # consumers are kept apart
            assert tx is not None
        assert await inbox.prune(older_than=timedelta(0)) == 2
        assert not await inbox.processed("m-1")
        assert await other.processed("m-1")
    finally:
        await other.close()
    async with inbox.receive_id("m-1") as tx:  # forgotten: it would apply again
        assert tx is not None


# --- bad input --------------------------------------------------------------------------


class _Headers:
    def __init__(self, headers: dict[str, str] | None) -> None:
        self.headers = headers
        self.subject = "payments.deposit"


@pytest.mark.parametrize("headers", [None, {}, {"Nats-Msg-Id": ""}, {"Other": "x"}])
async def test_a_message_without_an_id_is_refused(
    inbox: Inbox, consumer_db: Consumer, headers: dict[str, str] | None
) -> None:
    with pytest.raises(
        InvalidInput,
        match=r"'payments\.deposit' has no Nats-Msg-Id header",
    ):
        async with inbox.receive(_Headers(headers)):
            pass
    assert await consumer_db.count() == []


async def test_an_overlong_id_is_refused(inbox: Inbox) -> None:
    with pytest.raises(InvalidInput, match="at most 1024"):
        async with inbox.receive(_Headers({"Nats-Msg-Id": "x" * 1025})):
            pass


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("mysql://root@localhost/test", "unknown scheme 'mysql'"),
        ("billing.db", "unknown scheme ''"),
        ("memory://", "memory backend keeps no inbox"),
        ("sqlite://", "names no file"),
    ],
)
async def test_a_url_it_cannot_use_is_refused(url: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        await Inbox.open(url, consumer="billing")


async def test_bad_options_are_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/consumer.db"
    with pytest.raises(InvalidInput, match="consumer=''"):
        await Inbox.open(url, consumer="")
    with pytest.raises(ConfigurationError, match="table='inbox; drop'"):
        await Inbox.open(url, consumer="billing", table="inbox; drop")
    with pytest.raises(InvalidInput, match="retention"):
        await Inbox.open(url, consumer="billing", retention=timedelta(0))
    assert not (tmp_path / "consumer.db").exists()


async def test_a_bad_statement_says_so_and_rolls_back(inbox: Inbox, consumer_db: Consumer) -> None:

    async def bad_statement() -> None:
        async with inbox.receive_id("m-1") as tx:
            assert tx is not None
            await tx.execute("INSERT INTO no_such_table VALUES (1)")

    with pytest.raises(InvalidInput, match="SQL statement failed"):
        await bad_statement()
    assert not await inbox.processed("m-1")


@pytest.mark.parametrize(
    ("option", "value"),
    [("batch", 0), ("max_attempts", 0), ("retry_delay", -1.0), ("ack_wait", 0), ("batch", True)],
)
async def test_bad_consume_options_are_refused(
    stream: Stream, inbox: Inbox, option: str, value: object
) -> None:
    async def handler(msg: Msg, tx: InboxSession) -> None:
        raise AssertionError("not called")

    with pytest.raises(InvalidInput, match=f"{option}="):
        await consume(stream.js, stream.name, "billing", inbox, handler, **{option: value})  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):  # nothing was created
        await stream.js.consumer_info(stream.name, "billing")


async def test_consume_without_nats_py_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "nats.js.api", None)

    async def handler(msg: Msg, tx: InboxSession) -> None:
        raise AssertionError("not called")

    async with Inbox(f"sqlite:///{tmp_path}/consumer.db", consumer="billing") as inbox:
        with pytest.raises(ConfigurationError, match=r"pip install 'eventfold\[nats\]'"):
            await consume(object(), "EVENTS", "billing", inbox, handler)  # type: ignore[arg-type]
