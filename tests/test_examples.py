"""examples/*.py run, and run again against the same store (examples/ is on sys.path)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import bank
import orders
import pytest

import eventfold

Main = Callable[[str], Coroutine[Any, Any, None]]


@pytest.mark.parametrize(
    ("main", "expected"),
    [
        (bank.main, ["refused: withdrawing 40 would overdraw", "balance now: -20"]),
        (orders.main, ["shipped, refunded 500 of 2500 cents", "cancelled", "refused: only"]),
    ],
    ids=["bank", "orders"],
)
def test_an_example_runs_twice_on_one_store(
    main: Main, expected: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/example.db"
    outputs = []
    for _ in range(2):
        asyncio.run(main(url))
        outputs.append(capsys.readouterr().out)
    for out in outputs:
        for fragment in expected:
            assert fragment in out, out
    assert outputs[0] != outputs[1]  # each run has its own streams

    async def streams() -> list[eventfold.StreamInfo]:
        async with eventfold.connect(url) as store:
            return [s async for s in store.streams()]

    assert len(asyncio.run(streams())) == 2 * (1 if main is bank.main else 2)


def test_the_flask_example_serves_the_blocking_api(store_url: str) -> None:
    import sync_flask

    app = sync_flask.create_app(store_url)
    try:
        client = app.test_client()

        def js(response: Any) -> Any:
            return response.json

        opened = client.post("/accounts/a1/open", json={"owner": "ann"})
        assert opened.status_code == 200, js(opened)
        assert js(opened) == {"version": 1, "balance": 0, "position": js(opened)["position"]}
        deposited = js(client.post("/accounts/a1/deposits", json={"amount": 100}))
        assert deposited["balance"] == 100
        refused = client.post("/accounts/a1/withdrawals", json={"amount": 500})
        assert refused.status_code == 422
        assert "overdraw" in js(refused)["error"]
        assert client.post("/accounts/a1/deposits", json={"amount": "x"}).status_code == 400
        assert client.post("/accounts/a1/deposits", json={}).status_code == 400
        assert js(client.get("/accounts/a1")) == {"owner": "ann", "balance": 100, "version": 2}
        assert [e["type"] for e in js(client.get("/accounts/a1/events"))] == [
            "bank.AccountOpened",
            "bank.Deposited",
        ]
        # Read-your-writes on the projection the app runs.
        after = deposited["position"]
        balance = client.get(f"/balances/a1?after={after}")
        assert js(balance) == {"owner": "ann", "balance": 100, "movements": 1}
        assert client.get("/balances/nobody").status_code == 404
        assert client.get("/accounts/nobody").status_code == 404
        key = {"Idempotency-Key": "deposit-7"}
        first = js(client.post("/accounts/a1/deposits", json={"amount": 5}, headers=key))
        again = js(client.post("/accounts/a1/deposits", json={"amount": 5}, headers=key))
        assert first == again
        assert js(client.get("/accounts/a1"))["balance"] == 105
    finally:
        sync_flask.close_app(app)
    store, _ = app.extensions["eventfold"]
    assert store.thread is None


def test_the_fastapi_example_serves_the_blocking_api(store_url: str) -> None:
    from fastapi.testclient import TestClient
    from sync_fastapi import create_app

    app = create_app(store_url)
    with TestClient(app) as client:
        assert client.post("/accounts/b1/open", json={"owner": "bob"}).json()["version"] == 1
        for _ in range(3):
            assert client.post("/accounts/b1/deposits", json={"amount": 10}).status_code == 200
        refused = client.post("/accounts/b1/withdrawals", json={"amount": 100})
        assert refused.status_code == 422
        assert "overdraw" in refused.json()["detail"]
        assert client.post("/accounts/b1/deposits", json={"amount": -1}).status_code == 422
        assert client.get("/accounts/b1").json() == {"owner": "bob", "balance": 30, "version": 4}
        assert client.get("/accounts/nobody").status_code == 404
        events = client.get("/accounts/b1/events").json()
        assert [e["data"] for e in events[1:]] == [{"amount": 10}] * 3
        assert app.state.store.thread is not None
    assert app.state.store.thread is None
