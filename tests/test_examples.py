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
