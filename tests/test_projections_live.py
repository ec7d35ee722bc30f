"""Live projections: folded on demand, equal to the stored model; inspection at a position."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest

import eventfold
from eventfold.projections import (
    DaemonOptions,
    DocumentProjection,
    DocumentView,
    MemoryReadModelStore,
    ProjectionDaemon,
    live,
    replay,
)
from eventfold.testing import settle


class LiveOpened(eventfold.Event):
    owner: str


class LiveDeposited(eventfold.Event):
    amount: int


class LiveClosed(eventfold.Event):
    pass


class Account(msgspec.Struct):
    owner: str = ""
    balance: int = 0
    history: tuple[int, ...] = ()


def accounts() -> DocumentProjection[Account]:
    p = DocumentProjection("accounts", document=Account, categories=["account"])

    @p.on(LiveOpened)
    def opened(doc: Account, e: eventfold.RecordedEvent) -> Account:
        return Account(owner=e.data.owner)

    @p.on(LiveDeposited)
    def deposited(doc: Account, e: eventfold.RecordedEvent) -> Account:
        return Account(doc.owner, doc.balance + e.data.amount, (*doc.history, e.data.amount))

    @p.on(LiveClosed)
    def closed(doc: Account, e: eventfold.RecordedEvent) -> Account | None:
        return None

    return p


def by_owner() -> DocumentProjection[dict[str, int]]:
    """Keyed by owner (or one shared document), not by stream: live reads fold the log."""
    p = DocumentProjection(
        "by_owner",
        document=dict,
        categories=["account"],
        id_of=lambda e: e.data.owner if isinstance(e.data, LiveOpened) else "deposits",
    )

    @p.on(LiveOpened, LiveDeposited)
    def count(doc: dict[str, int], e: eventfold.RecordedEvent) -> dict[str, int]:
        amount = e.data.amount if isinstance(e.data, LiveDeposited) else 0
        return {"events": doc.get("events", 0) + 1, "total": doc.get("total", 0) + amount}

    return p


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[eventfold.EventStore]:
    async with eventfold.connect(store_url) as store:
        await store.append("account-1", [LiveOpened(owner="ann")], expected_version=0)
        await store.append("account-2", [LiveOpened(owner="bob")], expected_version=0)
        for amount in (5, 7, 11):
            await store.append(
                "account-1", [LiveDeposited(amount=amount)], expected_version=eventfold.ANY
            )
        await store.append("account-2", [LiveDeposited(amount=3), LiveClosed()], expected_version=1)
        await store.append("account-3", [LiveOpened(owner="ann")], expected_version=0)
        last = await store.append("ledger-1", [LiveDeposited(amount=100)], expected_version=0)
        await settle(store, last.position)
        yield store


async def test_live_equals_the_stored_model(store: eventfold.EventStore) -> None:
    p = accounts()
    models = MemoryReadModelStore()
    options = DaemonOptions(batch_size=2, poll_interval=0.01)
    async with ProjectionDaemon(store, models, [p], options=options) as daemon:
        await daemon.catch_up(timeout=10)
    view = DocumentView(models, p)
    everything = await live(store, p).all()
    assert everything == await view.all()
    assert sorted(everything) == ["account-1", "account-3"]  # account-2 was closed
    for doc_id in ("account-1", "account-2", "account-3", "ledger-1", "account-404"):
        assert await live(store, p).get(doc_id) == await view.get(doc_id)
    assert everything["account-1"] == Account("ann", 23, (5, 7, 11))
    # Through the codec, like a stored document: the tuple is still a tuple.
    assert isinstance(everything["account-1"].history, tuple)


async def test_a_document_as_of_a_position(store: eventfold.EventStore) -> None:
    p = accounts()
    positions = [e.position async for e in store.read_stream("account-1")]
    view = live(store, p)
    assert await view.get("account-1", at=eventfold.START) is None
    seen = [await view.get("account-1", at=pos) for pos in positions]
    assert [d.balance if d else None for d in seen] == [0, 5, 12, 23]
    assert await view.get("account-1", at=str(positions[2])) == seen[2]
    closed_at = [e.position async for e in store.read_stream("account-2")]
    assert await view.get("account-2", at=closed_at[1]) == Account("bob", 3, (3,))
    assert await view.get("account-2", at=closed_at[2]) is None
    before = await view.all(at=positions[1])
    assert before == {"account-1": Account("ann", 5, (5,)), "account-2": Account("bob")}


async def test_documents_keyed_by_something_else_fold_the_log(
    store: eventfold.EventStore,
) -> None:
    p = by_owner()
    assert not p.per_stream
    assert await live(store, p).get("ann") == {"events": 2, "total": 0}
    assert await live(store, p).get("deposits") == {"events": 4, "total": 26}
    models = await replay(store, p)
    assert await DocumentView(models, p).all() == await live(store, p).all()


async def test_replay_up_to_a_position_equals_live_then(store: eventfold.EventStore) -> None:
    p = accounts()
    middle = [e.position async for e in store.read_all()][4]
    models = await replay(store, p, at=middle)
    assert await DocumentView(models, p).all() == await live(store, p).all(at=middle)
    (checkpoint,) = await models.checkpoints("accounts", 1)
    assert checkpoint.position == middle
