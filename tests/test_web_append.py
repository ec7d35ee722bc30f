"""An append answers the same whichever way the app takes it: answered directly (an app
with nothing around its routes), through Starlette's middleware and routing (an app with
CORS), or mounted inside another app."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount

import eventfold
from eventfold.web import Limits, Tokens, create_app, hash_token
from web_client import READ, TOKENS, WRITE, bearer

LIMITS = Limits(max_body_bytes=4096, max_append_events=5)
EVENT_ID = str(uuid.uuid4())


def body(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


ONE = body({"type": "Placed", "data": {"n": 1}})
JSON = {"Content-Type": "application/json"}
W = {**bearer(WRITE), **JSON}


async def chunked() -> AsyncIterator[bytes]:
    yield b'{"events": [{"type": "Placed", '
    yield b'"data": {"n": 2}}]}'


# (path, query, headers, content): sent in this order to each app.
REQUESTS: list[tuple[str, str, dict[str, str], Any]] = [
    ("a-1", "", {**W, "If-Match": 'W/"0"'}, ONE),
    ("a-1", "", {**W, "If-Match": 'W/"0"'}, ONE),  # stale: 412
    ("a-1", "", W, ONE),  # no If-Match: 428
    ("a-1", "", {**W, "If-Match": '"1"'}, chunked),
    ("a-2", "?expected_version=no_stream", W, ONE),
    ("a-2", "?expected_version=later", W, ONE),
    ("a-2", "?expected_version=any", {**W, "If-Match": "*"}, ONE),  # both: 400
    ("a-3", "", {"If-Match": "*", **JSON}, ONE),  # no token: 401
    ("a-3", "", {**bearer("not-a-token"), "If-Match": "*", **JSON}, ONE),
    ("a-3", "", {"Authorization": "Basic dXNlcjpwYXNz", "If-Match": "*"}, ONE),
    ("a-3", "", {**bearer(READ), "If-Match": "*", **JSON}, ONE),  # 403
    ("a-3", "", {**bearer(WRITE), "If-Match": "*", "Content-Type": "text/plain"}, ONE),
    ("a-3", "", {**W, "If-Match": "*"}, body({"type": "P", "data": {"x": "y" * 5000}})),
    ("a-3", "", {**W, "If-Match": "*"}, body(*[{"type": "P", "data": {}}] * 6)),
    ("a-3", "", {**W, "If-Match": "*"}, b""),
    ("a-3", "", {**W, "If-Match": "*"}, b"{not json"),
    ("a-3", "", {**W, "If-Match": "*"}, body({"type": "$P", "data": {}})),
    ("$audit", "", {**W, "If-Match": "*"}, ONE),
    ("a-4", "", {**W, "If-Match": "*"}, body({"type": "P", "data": {}, "event_id": EVENT_ID})),
    ("a-4", "", {**W, "If-Match": "*"}, body({"type": "P", "data": {}, "event_id": EVENT_ID})),
]


async def answers(app: Any, prefix: str) -> list[tuple[int, Any, str | None, str]]:
    found = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        for stream, query, headers, content in REQUESTS:
            sent = content() if callable(content) else content
            response = await http.post(
                f"{prefix}/streams/{stream}/events{query}", content=sent, headers=headers
            )
            found.append(
                (
                    response.status_code,
                    response.json(),
                    response.headers.get("etag"),
                    response.headers["content-type"],
                )
            )
    return found


async def test_an_append_answers_the_same_directly_through_middleware_and_mounted() -> None:
    async with AsyncExitStack() as stack:
        stores = [await stack.enter_async_context(eventfold.connect("memory://")) for _ in "abc"]
        direct = create_app(stores[0], tokens=TOKENS, limits=LIMITS)
        routed = create_app(
            stores[1], tokens=TOKENS, limits=LIMITS, cors_origins=["https://admin.example"]
        )
        host = Starlette(
            routes=[Mount("/api", create_app(stores[2], tokens=TOKENS, limits=LIMITS))]
        )
        expected = await answers(routed, "")
        assert [status for status, *_ in expected] == [
            201, 412, 428, 201, 201, 400, 400, 401, 401, 401, 403, 415, 413, 413, 400, 400,
            400, 400, 201, 200,
        ]  # fmt: skip
        assert await answers(direct, "") == expected
        assert await answers(host, "/api") == expected
        for store in stores:
            assert [e.version async for e in store.read_stream("a-1")] == [1, 2]


class Seen(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers["X-Seen"] = "yes"
        return response


async def test_a_host_s_middleware_sees_appends() -> None:
    async with eventfold.connect("memory://") as store:
        app = create_app(store, tokens=TOKENS)
        app.add_middleware(Seen)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            response = await http.post(
                "/streams/a-1/events", content=ONE, headers={**W, "If-Match": "*"}
            )
        assert response.status_code == 201, response.text
        assert (response.headers["etag"], response.headers["x-seen"]) == ('W/"1"', "yes")


def test_a_token_is_known_by_its_hash_and_the_first_line_of_a_hash_wins() -> None:
    tokens = Tokens.from_lines(
        [f"read {hash_token('t-1')}", f"admin {hash_token('t-1')}", f"write {hash_token('t-2')}"]
    )
    assert len(tokens) == 3
    assert tokens.role_of("t-1") == ("read", hash_token("t-1")[7:19])
    assert tokens.role_of("t-2") == ("write", hash_token("t-2")[7:19])
    assert tokens.role_of("t-3") is None
    assert tokens.role_of("") is None
