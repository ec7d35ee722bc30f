"""The projection daemon as real processes (``eventfold run``): killed with SIGKILL in the
middle of a batch, and two daemons sharing PostgreSQL with one owner per partition.

The read model counts deposits per account, so "nothing lost, nothing applied twice" is
checked exactly: every account's document must hold the number and the sum of its
deposits in the log.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from bank import AccountOpened, Deposited

import eventfold
from eventfold.position import ANY
from eventfold.projections import read_models_for
from eventfold.store.postgres import PostgresStore

APP = """
import os
import time
from pathlib import Path

import msgspec
from eventfold.projections import DocumentProjection
import bank


class Balance(msgspec.Struct):
    balance: int = 0
    deposits: int = 0


balances = DocumentProjection(
    "balances", document=Balance, partitions={partitions}
)


@balances.on(bank.Deposited)
def deposited(doc, event):
    stall = os.environ.get("STALL_ON_AMOUNT")
    if stall and event.data.amount == int(stall):
        # Mid-batch: earlier events of this batch are applied in memory, none committed.
        Path(os.environ["STALL_MARKER"]).write_text("stalled")
        time.sleep(60)
    return Balance(doc.balance + event.data.amount, doc.deposits + 1)
"""

ROOT = Path(__file__).resolve().parent.parent


class Balance(msgspec.Struct):
    balance: int = 0
    deposits: int = 0


def write_app(tmp_path: Path, partitions: int = 1) -> None:
    (tmp_path / "balances_proc.py").write_text(textwrap.dedent(APP).format(partitions=partitions))


def daemon(tmp_path: Path, url: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT / "examples")]),
        **env,
    }
    environ.pop("EVENTFOLD_URL", None)
    code = "from eventfold.cli import main; main()"
    with (tmp_path / "daemon.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-c", code, "--url", url, "run", "--app", "balances_proc", *args],
            cwd=tmp_path,
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


async def deposit_rounds(
    store: eventfold.EventStore, accounts: int, rounds: range, opened: bool
) -> None:
    if not opened:
        for a in range(accounts):
            await store.append(f"account-{a}", [AccountOpened(owner="x")], expected_version=ANY)
    for r in rounds:
        await asyncio.gather(
            *(
                store.append(
                    f"account-{a}", [Deposited(amount=r * 100 + a + 1)], expected_version=ANY
                )
                for a in range(accounts)
            )
        )


async def expected_balances(store: eventfold.EventStore) -> dict[str, Balance]:
    found: dict[str, Balance] = {}
    async for event in store.read_all(types=[Deposited]):
        doc = found.setdefault(event.stream_id, Balance())
        doc.balance += event.data.amount
        doc.deposits += 1
    return found


async def documents(store: eventfold.EventStore) -> dict[str, Balance]:
    models = read_models_for(store)
    return {
        doc_id: msgspec.json.decode(data, type=Balance)
        async for doc_id, data in models.iter_documents("balances", 1)
    }


async def wait_until(check: Callable[[], object], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if await check():  # type: ignore[misc]
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def log_of(tmp_path: Path) -> str:
    return (tmp_path / "daemon.log").read_text(errors="replace")


def finish(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    if proc.stderr is not None:
        proc.stderr.close()


async def test_a_daemon_killed_mid_batch_resumes_exactly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    write_app(tmp_path)
    marker = tmp_path / "stalled"
    async with eventfold.connect(url) as store:
        await deposit_rounds(store, 10, range(30), opened=False)
        # Stall on a deposit half-way through the log, inside a batch of 100.
        proc = daemon(
            tmp_path,
            url,
            "--batch-size",
            "100",
            STALL_ON_AMOUNT=str(15 * 100 + 3),
            STALL_MARKER=str(marker),
        )
        try:
            for _ in range(300):
                if marker.exists() or proc.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            assert marker.exists(), log_of(tmp_path)
            partial = await documents(store)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            finish(proc)
        # Some batches committed before the kill; the stalled one did not.
        expected = await expected_balances(store)
        assert partial != expected
        assert sum(d.deposits for d in partial.values()) < 300

        # More events while it was down, then a clean restart.
        await deposit_rounds(store, 10, range(30, 35), opened=True)
        again = daemon(tmp_path, url, "--batch-size", "100", "--until-caught-up")
        try:
            again.wait(60)
            assert again.returncode == 0, log_of(tmp_path)
        finally:
            finish(again)
        assert await documents(store) == await expected_balances(store)


@pytest.mark.postgres
async def test_two_daemons_share_postgres_with_one_owner_per_partition(
    tmp_path: Path, postgres_url: str
) -> None:
    write_app(tmp_path, partitions=4)
    async with eventfold.connect(postgres_url) as store:
        assert isinstance(store, PostgresStore)

        async def holders() -> list[tuple[int, int]]:
            conn = await store.connect_direct()
            async with conn:
                cur = await conn.execute(
                    "SELECT pid, count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND pid IN (SELECT pid FROM pg_stat_activity WHERE datname ="
                    " current_database()) GROUP BY pid"
                )
                return [(int(p), int(n)) for p, n in await cur.fetchall()]

        async def exact() -> bool:
            return await documents(store) == await expected_balances(store)

        await deposit_rounds(store, 12, range(10), opened=False)
        first = daemon(tmp_path, postgres_url)
        second: subprocess.Popen[bytes] | None = None
        try:
            await wait_until(exact, 30, "the first daemon to catch up")
            held = await holders()
            assert [n for _, n in held] == [4], held  # one session holds all four partitions
            second = daemon(tmp_path, postgres_url)
            await asyncio.sleep(1.5)  # the second one tries, finds every lease taken
            assert [n for _, n in await holders()] == [4]
            assert second.poll() is None

            await deposit_rounds(store, 12, range(10, 20), opened=True)
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
            await deposit_rounds(store, 12, range(20, 30), opened=True)

            # The survivor takes every partition over and the model is exact again.
            await wait_until(exact, 60, "the second daemon to take over")
            after = await holders()
            assert [n for _, n in after] == [4], after
            assert after[0][0] != held[0][0]
            docs = await documents(store)
            assert sum(d.deposits for d in docs.values()) == 12 * 30
        finally:
            finish(first)
            if second is not None:
                finish(second)
