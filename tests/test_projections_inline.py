"""Inline projections on SQLite: written in the append's own transaction."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest
from bank import AccountOpened, Deposited

import eventfold
from eventfold.errors import ConfigurationError
from eventfold.position import ANY, NO_STREAM
from eventfold.projections import (
    DocumentProjection,
    DocumentView,
    HandlerFailed,
    InvalidProjection,
    Projection,
    attach_inline,
    live,
    read_models_for,
    wait_for,
)


class Balance(msgspec.Struct):
    balance: int = 0
    deposits: int = 0


def balances(version: int = 1) -> DocumentProjection[Balance]:
    proj = DocumentProjection("inline_balances", document=Balance, version=version)

    @proj.on(Deposited)
    def deposited(doc: Balance, event: eventfold.RecordedEvent) -> Balance:
        if event.data.amount == 13:
            raise ValueError("13 is refused")
        return Balance(doc.balance + event.data.amount, doc.deposits + 1)

    return proj


async def test_the_model_is_current_when_the_append_returns(tmp_path: Path) -> None:
    async with eventfold.connect(f"sqlite:///{tmp_path}/e.db") as store:
        # Events from before the projection existed are folded in when it is attached.
        await store.append("account-1", [AccountOpened(owner="a"), Deposited(amount=5)],
                           expected_version=NO_STREAM)  # fmt: skip
        proj = balances()
        await attach_inline(store, [proj])
        view = DocumentView(read_models_for(store), proj)
        assert await view.get("account-1") == Balance(5, 1)

        await store.append("account-1", [Deposited(amount=7)], expected_version=2)
        assert await view.get("account-1") == Balance(12, 2)  # no waiting

        # Many concurrent appends (one group commit): every one applied exactly once.
        await asyncio.gather(
            *(store.append(f"account-{i % 4}", [Deposited(amount=1)], expected_version=ANY)
              for i in range(40))
        )  # fmt: skip
        docs = await view.all()
        assert docs == await live(store, proj).all()
        assert docs["account-2"] == Balance(10, 10)
        # Its checkpoint follows the log, so wait_for and lag work as for async ones.
        head = await store.head()
        assert await wait_for(read_models_for(store), proj, head, timeout=1) == head


async def test_a_failing_projection_fails_its_append_only(tmp_path: Path) -> None:
    async with eventfold.connect(f"sqlite:///{tmp_path}/e.db") as store:
        proj = balances()
        await attach_inline(store, [proj])
        results = await asyncio.gather(
            store.append("account-1", [Deposited(amount=1)], expected_version=ANY),
            store.append("account-2", [Deposited(amount=13)], expected_version=ANY),
            store.append("account-3", [Deposited(amount=3)], expected_version=ANY),
            return_exceptions=True,
        )
        assert isinstance(results[1], HandlerFailed)
        assert "13 is refused" in str(results[1])
        assert not isinstance(results[0], BaseException)
        assert not isinstance(results[2], BaseException)
        # Nothing of the failed append is stored: no event, no document.
        assert await store.stream_version("account-2") == 0
        view = DocumentView(read_models_for(store), proj)
        assert await view.get("account-2") is None
        assert await view.get("account-1") == Balance(1, 1)
        assert await view.get("account-3") == Balance(3, 1)
        # A lone append fails the same way.
        with pytest.raises(HandlerFailed):
            await store.append("account-4", [Deposited(amount=13)], expected_version=ANY)
        assert await store.stream_version("account-4") == 0


async def test_handlers_may_only_await_their_transaction(tmp_path: Path) -> None:
    proj = Projection("sleepy")

    @proj.on(Deposited)
    async def slow(event: eventfold.RecordedEvent, tx: object) -> None:
        await asyncio.sleep(0.01)

    async with eventfold.connect(f"sqlite:///{tmp_path}/e.db") as store:
        await attach_inline(store, [proj])
        with pytest.raises(InvalidProjection, match="may only use tx"):
            await store.append("account-1", [Deposited(amount=1)], expected_version=ANY)
        assert await store.stream_version("account-1") == 0


async def test_inline_projections_need_sqlite() -> None:
    async with eventfold.connect("memory://") as store:
        with pytest.raises(ConfigurationError, match="ProjectionDaemon"):
            await attach_inline(store, [balances()])
