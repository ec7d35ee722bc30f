"""The declared capability ports: what each backend declares, and asking for one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest
from bank import Deposit, Deposited, OpenAccount, account

import eventfold
from eventfold import CommandHandler, ConfigurationError, UnsupportedCapability
from eventfold.backends.memory import MemoryStore
from eventfold.backends.sqlite import SQLiteStore
from eventfold.store import (
    EventStore,
    SupportsCodec,
    SupportsCommitListeners,
    SupportsLoad,
    SupportsSnapshots,
    SupportsTransactionHooks,
    SupportsTransform,
    capability,
)

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
] = (_sqlite,) * 6

ALL = [
    SupportsCodec,
    SupportsLoad,
    SupportsSnapshots,
    SupportsCommitListeners,
    SupportsTransform,
    SupportsTransactionHooks,
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
