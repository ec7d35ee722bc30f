"""The declared capability ports: what each backend declares, and asking for one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from bank import Deposit, Deposited, OpenAccount, account

import eventfold
from eventfold import CommandHandler, ConfigurationError, UnsupportedCapability
from eventfold.backends.memory import MemoryStore
from eventfold.backends.postgres import _paging as pg_paging
from eventfold.backends.sqlite import SQLiteStore
from eventfold.store import (
    EventStore,
    SupportsCodec,
    SupportsCommitListeners,
    SupportsLoad,
    SupportsRowReads,
    SupportsSnapshots,
    SupportsTransactionHooks,
    SupportsTransform,
    capability,
)
from eventfold.store.kit import Row
from eventfold.testing import settle

# Checked by mypy: each backend class fits the ports it declares.
_memory_ports: tuple[SupportsCodec, SupportsSnapshots, SupportsCommitListeners, SupportsTransform]
_memory_ports = (MemoryStore(),) * 4
_sqlite: SQLiteStore = SQLiteStore("unused.db")
_sqlite_ports: tuple[
    SupportsCodec,
    SupportsLoad,
    SupportsSnapshots,
    SupportsCommitListeners,
    SupportsTransform,
    SupportsTransactionHooks,
    SupportsRowReads,
] = (_sqlite,) * 7

ALL = [
    SupportsCodec,
    SupportsLoad,
    SupportsSnapshots,
    SupportsCommitListeners,
    SupportsTransform,
    SupportsTransactionHooks,
    SupportsRowReads,
]
DECLARED = {
    "memory": [SupportsCodec, SupportsSnapshots, SupportsCommitListeners, SupportsTransform],
    "sqlite": ALL,
    "postgresql": ALL,
}


async def test_each_backend_declares_its_capabilities(store_url: str) -> None:
    async with eventfold.connect(store_url) as store:
        declared = DECLARED[store.backend]
        for port in ALL:
            assert isinstance(store, port) == (port in declared), port.__name__
            if port in declared:
                assert capability(store, port) is store


async def test_an_undeclared_capability_names_the_backend_and_the_port() -> None:
    async with eventfold.connect("memory://") as store:
        with pytest.raises(UnsupportedCapability) as info:
            capability(store, SupportsLoad)
    error = info.value
    assert (error.backend, error.capability) == ("memory", "SupportsLoad")
    assert str(error).startswith("the memory store does not support SupportsLoad; ")
    assert "eventfold.store.ports" in str(error)
    assert isinstance(error, ConfigurationError)
    assert eventfold.UnsupportedCapability is UnsupportedCapability

    with pytest.raises(UnsupportedCapability, match=r"does not support SupportsLoad; try x$"):
        capability(store, SupportsLoad, hint="try x")
    with pytest.raises(UnsupportedCapability, match="the object store does not support"):
        capability(object(), SupportsCodec)


class OnlyEventStore:
    """A store with nothing beyond `EventStore` (it passes those calls to another)."""

    NAMES = frozenset(
        ["backend", "open", "close", "append", "read_stream", "find_events",
         "stream_version", "stream_info", "read_all", "head", "streams", "stats"]
    )  # fmt: skip

    def __init__(self, inner: EventStore) -> None:
        self._inner = inner
        # Instance attributes, not __getattr__: from 3.12 a runtime Protocol check looks
        # members up statically.
        for name in self.NAMES:
            setattr(self, name, getattr(inner, name))

    async def __aenter__(self) -> OnlyEventStore:
        await self._inner.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._inner.close()


@pytest.fixture
async def plain(tmp_path: Path) -> AsyncIterator[EventStore]:
    async with OnlyEventStore(eventfold.connect(f"sqlite:///{tmp_path}/e.db")) as store:
        assert isinstance(store, EventStore)
        assert not any(isinstance(store, port) for port in ALL)
        yield cast(EventStore, store)


async def test_code_above_the_ports_falls_back_without_optional_capabilities(
    plain: EventStore,
) -> None:
    # No snapshots, no one-trip load: the handler reads the stream.
    handler = CommandHandler(plain, account)
    await handler.handle("account-1", OpenAccount(owner="ann"))
    await handler.handle("account-1", Deposit(amount=5))
    assert (await CommandHandler(plain, account).load("account-1")).balance == 5
    # No codec: the schema registry publishes with the default registry.
    assert [r.type for r in await eventfold.schema.publish(plain, [Deposited])] == [
        "bank.Deposited"
    ]
    assert (await eventfold.schema.load(plain)).types() == ["bank.Deposited"]


async def test_a_transformation_needs_the_transform_port(plain: EventStore) -> None:
    await plain.append("s-1", [Deposited(amount=1)], expected_version=eventfold.NO_STREAM)
    with pytest.raises(UnsupportedCapability, match="sqlite store does not support Supports"):
        await eventfold.transform(plain, "s-1", target=lambda s: s + "x", fn=lambda e: e)
    assert (await plain.stream_info("s-1")).replaced_by is None


async def test_row_reads_hand_out_the_rows_the_reads_decode(sql_url: str) -> None:
    async with eventfold.connect(sql_url) as store:
        rows_store = capability(store, SupportsRowReads)
        await store.append("acct-1", [Deposited(amount=n) for n in range(1, 8)],
                           expected_version=eventfold.NO_STREAM)  # fmt: skip
        raw = eventfold.NewEvent({"n": 1}, type="ports.Noted", correlation_id="c-1")
        last = await store.append("note-1", [raw], expected_version=eventfold.NO_STREAM)
        await settle(store, last.position)

        async def same(
            rows: AsyncIterator[list[Row]], events: AsyncIterator[eventfold.RecordedEvent]
        ) -> int:
            pages = [page async for page in rows]
            assert all(pages)
            decoded = [e for page in pages for e in rows_store.codec.decode_rows(page)]
            assert decoded == [e async for e in events]
            return len(decoded)

        stream_reads: list[tuple[dict[str, Any], int]] = [
            ({}, 7),
            ({"from_version": 3, "limit": 2}, 2),
            ({"backwards": True, "limit": 4}, 4),
        ]
        for options, count in stream_reads:
            rows = rows_store.read_stream_rows("acct-1", **options)
            assert await same(rows, store.read_stream("acct-1", **options)) == count
        assert await same(rows_store.read_stream_rows("none"), store.read_stream("none")) == 0
        second = [e async for e in store.read_all(limit=2)][1].position
        log_reads: list[tuple[dict[str, Any], int]] = [
            ({}, 8),
            ({"after": second, "limit": 3}, 3),
            ({"types": ["ports.Noted"]}, 1),
            ({"categories": ["acct"]}, 7),
        ]
        for query, count in log_reads:
            assert await same(rows_store.read_all_rows(**query), store.read_all(**query)) == count


async def test_a_stream_page_is_the_stream_version_and_its_rows(
    sql_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pages of up to 3 rows: a longer one takes the way of several round trips.
    monkeypatch.setattr(pg_paging, "PAGE", 3)
    async with eventfold.connect(sql_url) as store:
        rows_store = capability(store, SupportsRowReads)
        await store.append("acct-1", [Deposited(amount=n) for n in range(1, 8)],
                           expected_version=eventfold.NO_STREAM)  # fmt: skip

        async def check(stream_id: str, options: dict[str, Any], count: int) -> None:
            version, rows = await rows_store.read_stream_page(stream_id, **options)
            assert version == await store.stream_version(stream_id)
            pages = rows_store.read_stream_rows(stream_id, **options)
            assert rows == [row async for page in pages for row in page]
            assert len(rows) == count

        reads: list[tuple[dict[str, Any], int]] = [
            ({"limit": 3}, 3),
            ({"limit": 7}, 7),
            ({"limit": 100}, 7),
            ({"from_version": 3, "limit": 2}, 2),
            ({"backwards": True, "limit": 4}, 4),
            ({"backwards": True, "from_version": 5, "limit": 9}, 5),
            ({"limit": 0}, 0),
        ]
        for options, count in reads:
            await check("acct-1", options, count)
        assert await rows_store.read_stream_page("none", limit=5) == (0, [])
        # A replaced stream's page and version are its replacement's.
        await eventfold.transform(store, "acct-1", target=lambda s: s + "x", fn=lambda e: e)
        await store.append("acct-1x", [Deposited(amount=8)], expected_version=7)
        await check("acct-1", {"limit": 3}, 3)
        version, rows = await rows_store.read_stream_page("acct-1", backwards=True, limit=1)
        assert version == 8
        assert [row[1:3] for row in rows] == [("acct-1x", 8)]
        with pytest.raises(eventfold.InvalidInput):
            await rows_store.read_stream_page("acct-1", limit=-1)
