"""The live subscription (Server-Sent Events) over a real uvicorn server, on SQLite and
PostgreSQL: exact resumption with Last-Event-ID while appends go on, heartbeats, bounds."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
import pytest
import uvicorn

import eventfold
from eventfold.web import Limits, create_app
from web_client import TOKENS


@asynccontextmanager
async def uvicorn_serving(
    store: eventfold.EventStore, limits: Limits | None = None
) -> AsyncIterator[str]:
    """The app over ``store`` served by uvicorn on a free port; yields its base URL."""
    app = create_app(store, tokens=TOKENS, limits=limits)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers only the flag
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        await app.state.eventfold.close()


@dataclass
class Frame:
    id: str | None = None
    data: list[str] = field(default_factory=list)
    comment: str | None = None


async def frames(response: httpx.Response) -> AsyncGenerator[Frame, None]:
    """The SSE frames of a response, as they arrive."""
    frame = Frame()
    async for line in response.aiter_lines():
        if line == "":
            yield frame
            frame = Frame()
        elif line.startswith(":"):
            frame.comment = line[1:].strip()
        elif line.startswith("id: "):
            frame.id = line[4:]
        elif line.startswith("data: "):
            frame.data.append(line[6:])


@pytest.fixture
async def store(sql_url: str) -> AsyncIterator[eventfold.EventStore]:
    async with eventfold.connect(sql_url) as store:
        yield store


class LivePlaced(eventfold.Event):
    n: int


async def take(
    client: httpx.AsyncClient, count: int, headers: dict[str, str], params: dict[str, str]
) -> list[tuple[str, int]]:
    """``count`` events of one connection as (id, n); the connection is closed after."""
    got: list[tuple[str, int]] = []
    async with client.stream("GET", "/subscribe", headers=headers, params=params) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for frame in frames(response):
            if frame.id is None:
                continue
            event = json.loads("\n".join(frame.data))
            assert event["position"] == frame.id
            got.append((frame.id, event["data"]["n"]))
            if len(got) == count:
                break
    return got


async def test_last_event_id_resumes_exactly_while_appends_go_on(
    store: eventfold.EventStore,
) -> None:
    total = 120

    async def write() -> None:
        for n in range(total):
            await store.append(f"live-{n % 7}", [LivePlaced(n=n)], expected_version=eventfold.ANY)

    async with uvicorn_serving(store, Limits(sse_batch=8)) as base:
        writer = asyncio.create_task(write())
        async with asyncio.timeout(60), httpx.AsyncClient(base_url=base, timeout=30) as client:
            seen = await take(client, 25, {}, {"after": "0"})
            # Reconnects mid-stream, each from the last id it saw.
            for count in (30, 1, 40):
                seen += await take(client, count, {"Last-Event-ID": seen[-1][0]}, {})
            seen += await take(client, total - len(seen), {"Last-Event-ID": seen[-1][0]}, {})
        await writer
    assert [n for _, n in seen] == list(range(total))
    positions = [eventfold.Position.parse(i) for i, _ in seen]
    assert positions == sorted(set(positions))


async def test_a_subscription_starts_at_the_head_and_filters(store: eventfold.EventStore) -> None:
    await store.append("old-1", [LivePlaced(n=-1)], expected_version=0)
    async with (
        uvicorn_serving(store) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as client,
        asyncio.timeout(30),
        client.stream("GET", "/subscribe", params={"category": "keep"}) as response,
    ):
        received: list[int] = []
        async for frame in frames(response):
            if frame.id is None and frame.comment is None and not received:
                # The opening frame: the subscription is reading; append now.
                await store.append("drop-1", [LivePlaced(n=1)], expected_version=0)
                await store.append("keep-1", [LivePlaced(n=2)], expected_version=0)
                continue
            if frame.id is not None:
                received.append(json.loads(frame.data[0])["data"]["n"])
                break
    assert received == [2]


async def test_a_quiet_subscription_sends_heartbeats(store: eventfold.EventStore) -> None:
    async with (
        uvicorn_serving(store, Limits(heartbeat_seconds=0.05)) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as client,
        asyncio.timeout(30),
        client.stream("GET", "/subscribe") as response,
    ):
        beats = 0
        async for frame in frames(response):
            if frame.comment == "heartbeat":
                beats += 1
                if beats == 3:
                    break
    assert beats == 3


async def test_subscriptions_are_bounded_and_a_closed_one_frees_its_place(
    store: eventfold.EventStore,
) -> None:
    async with (
        uvicorn_serving(store, Limits(max_subscribers=1)) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as client,
        asyncio.timeout(30),
    ):
        async with client.stream("GET", "/subscribe") as first:
            # Held, not dropped: a dropped iterator's finaliser would close the connection.
            opened = frames(first)
            await anext(opened)  # the opening frame: this subscription counts now
            refused = await client.get("/subscribe")
            assert refused.status_code == 503
            assert refused.json()["error"] == "too_many_subscribers"
            await opened.aclose()
        while True:
            async with client.stream("GET", "/subscribe") as again:
                if again.status_code == 200:
                    break
            await asyncio.sleep(0.02)


async def test_a_bad_last_event_id_is_400(store: eventfold.EventStore) -> None:
    async with uvicorn_serving(store) as base, httpx.AsyncClient(base_url=base) as client:
        response = await client.get("/subscribe", headers={"Last-Event-ID": "soon"})
    assert response.status_code == 400
    assert response.json()["field"] == "Last-Event-ID"


async def test_an_event_that_does_not_decode_is_sent_as_stored(
    store: eventfold.EventStore,
) -> None:
    name = f"LiveShape{uuid.uuid4().hex[:8]}"
    raw = eventfold.NewEvent({"size": "large"}, type=name)
    await store.append("shape-1", [raw], expected_version=0)
    await store.append("shape-2", [LivePlaced(n=1)], expected_version=0)

    class LiveShape(eventfold.Event):  # the code now says size is an int
        __event_type__: ClassVar[str] = name
        size: int

    async with (
        uvicorn_serving(store) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as client,
        asyncio.timeout(30),
    ):
        got: list[dict[str, Any]] = []
        async with client.stream("GET", "/subscribe", params={"after": "0"}) as response:
            async for frame in frames(response):
                if frame.id is not None:
                    got.append(json.loads(frame.data[0]))
                    if len(got) == 2:
                        break
    assert got[0]["data"] is None
    assert "size" in got[0]["undecodable"]
    assert got[1]["data"] == {"n": 1}


async def test_an_event_readable_only_after_its_wake_up_arrives_before_the_next_poll() -> None:
    # On PostgreSQL an event can be woken for before it is readable (it waits for older
    # transactions). Here the store hides new events from reads until the subscription
    # has read once after the wake-up; with a 60 s poll, only a prompt re-read delivers
    # the event within the 10 s bound.
    async with eventfold.connect("memory://") as store:
        original = store.read_all
        hidden_reads = 0
        hiding = True

        async def read_all(*args: Any, **kwargs: Any) -> AsyncIterator[eventfold.RecordedEvent]:
            nonlocal hidden_reads
            async for e in original(*args, **kwargs):
                if hiding:
                    hidden_reads += 1
                    return
                yield e

        store.read_all = read_all  # type: ignore[method-assign]
        limits = Limits(poll_seconds=60.0, heartbeat_seconds=120.0)
        async with (
            uvicorn_serving(store, limits) as base,
            httpx.AsyncClient(base_url=base, timeout=30) as client,
            client.stream("GET", "/subscribe") as response,
        ):
            received = frames(response)
            first = await anext(received)
            assert first.id is None  # the retry hint: subscribed
            await store.append("late-1", [LivePlaced(n=1)], expected_version=eventfold.ANY)
            async with asyncio.timeout(10):
                while hidden_reads == 0:  # noqa: ASYNC110 - a test double's counter
                    await asyncio.sleep(0.005)
            hiding = False  # readable now, and no wake-up says so
            async with asyncio.timeout(10):
                frame = await anext(received)
            assert json.loads(frame.data[0])["data"] == {"n": 1}
