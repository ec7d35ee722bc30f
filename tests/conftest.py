"""Fixtures shared by the test suite: store URLs for every backend.

PostgreSQL tests read their server from ``EVENTFOLD_TEST_POSTGRES_URL``. Without it they
are skipped on a developer's machine; under CI (``CI`` set) a missing or unreachable
server is a failure, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

POSTGRES_ENV = "EVENTFOLD_TEST_POSTGRES_URL"

examples_path = Path(__file__).resolve().parent.parent / "examples"
if str(examples_path) not in sys.path:
    sys.path.insert(0, str(examples_path))


def server_url(env: str, how: str) -> str:
    """A test server's URL from ``env``, or skip (locally) / fail (CI) when there is none."""
    url = os.environ.get(env)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {env} is not: {how}", pytrace=False)
        pytest.skip(f"set {env} to run these tests ({how})")
    return url


def postgres_base_url() -> str:
    """The test server's URL, or skip (locally) / fail (CI) when there is none."""
    return server_url(POSTGRES_ENV, "the PostgreSQL tests must run")


def with_schema(url: str, schema: str) -> str:
    """``url`` with eventfold's ``schema`` option added."""
    parts = urlsplit(url)
    query = f"{parts.query}&schema={schema}" if parts.query else f"schema={schema}"
    return urlunsplit(parts._replace(query=query))


def drop_schema(url: str, schema: str) -> None:
    """Drop a test schema (and everything in it)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL to a fresh, empty PostgreSQL schema, dropped after the test."""
    base = postgres_base_url()
    schema = f"test_{uuid.uuid4().hex[:12]}"
    yield with_schema(base, schema)
    drop_schema(base, schema)


@pytest.fixture
def sqlite_url(tmp_path: pytest.TempPathFactory) -> str:
    """A URL to a fresh SQLite file."""
    return f"sqlite:///{tmp_path}/events.db"


BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest) -> str:
    """A URL to a fresh store of each backend in turn."""
    if request.param == "memory":
        return "memory://"
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_url(request: pytest.FixtureRequest) -> str:
    """A URL to a fresh store of each SQL backend in turn."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


NATS_URL = "nats://127.0.0.1:4222"


def nats_url_or_skip() -> str:
    """The test NATS server's URL (JetStream on), or skip (locally) / fail (CI) when it is
    not listening."""
    import socket

    url = os.environ.get("EVENTFOLD_TEST_NATS_URL", NATS_URL)
    host, _, port = urlsplit(url).netloc.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError as exc:
        how = f"the relay tests need NATS JetStream at {url} ({exc})"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {how}", pytrace=False)
        pytest.skip(how)
    return url


class JetStreamTarget:
    """A fresh JetStream stream for one test: its name and the subject prefix it takes."""

    def __init__(self, url: str) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.url = url
        self.stream = f"TEST_{suffix.upper()}"
        self.prefix = f"test{suffix}"
        self.subjects = [f"{self.prefix}.>"]

    async def count(self) -> int:
        """How many messages the stream holds."""
        import nats

        nc = await nats.connect(self.url)
        try:
            info = await nc.jetstream().stream_info(self.stream)
            count: int = info.state.messages
            return count
        finally:
            await nc.close()

    async def messages(self) -> list[Any]:
        """Every message stored in the stream, in stream order."""
        import nats

        nc = await nats.connect(self.url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(self.stream)
            first, last = info.state.first_seq, info.state.last_seq
            out = []
            for seq in range(first, last + 1):
                out.append(await js.get_msg(self.stream, seq))
            return out
        finally:
            await nc.close()


@pytest.fixture
def jetstream() -> Iterator[JetStreamTarget]:
    """A fresh JetStream stream name and subject prefix (the sink creates the stream);
    deleted after the test."""
    import asyncio

    target = JetStreamTarget(nats_url_or_skip())
    yield target

    async def delete() -> None:
        import nats

        nc = await nats.connect(target.url)
        try:
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(target.stream)
        finally:
            await nc.close()

    asyncio.run(delete())
