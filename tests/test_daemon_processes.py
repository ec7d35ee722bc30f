"""The projection daemon as real processes (``eventfold run``): killed with SIGKILL in the
middle of a batch, two daemons sharing PostgreSQL with one owner per partition, and
stopped by SIGTERM at random moments (and while a handler blocks) within the bound.

The read model counts deposits per account, so "nothing lost, nothing applied twice" is
checked exactly: every account's document must hold the number and the sum of its
deposits in the log.
"""

from __future__ import annotations

import asyncio
import os
import random
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
from eventfold import ANY
from eventfold.backends.postgres import PostgresStore
from eventfold.projections import lease_key, read_models_for

APP = """
import os
import random
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

        # Only this test's own leases: other suites on the same server hold advisory
        # locks of their own.
        ours = [f"eventfold:{store.schema}:{lease_key('balances', 1, p, 4)}" for p in range(4)]

        async def holders() -> list[tuple[int, int]]:
            conn = await store.connect_direct()
            async with conn:
                cur = await conn.execute(
                    "SELECT pid, count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND (classid::bigint << 32 | objid::bigint) IN (SELECT"
                    " hashtextextended(k, 0) FROM unnest(%s::text[]) k)"
                    " GROUP BY pid",
                    (ours,),
                )
                return [(int(p), int(n)) for p, n in await cur.fetchall()]

        deposits = 0

        async def exact() -> bool:
            # Every deposit made so far, not only those the log shows yet: on a busy server
            # it shows an event once every older write in the cluster has finished.
            docs = await documents(store)
            return sum(d.deposits for d in docs.values()) == deposits and (
                docs == await expected_balances(store)
            )

        await deposit_rounds(store, 12, range(10), opened=False)
        deposits = 12 * 10
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
            deposits = 12 * 30

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


STOP_TIMEOUT = 1.5
EXIT_BOUND = 2 * STOP_TIMEOUT + 6.0
"""What `eventfold run` promises (twice --stop-timeout) plus generous room for a busy
machine; the hang this guards against lasted minutes."""


async def exit_time(proc: subprocess.Popen[bytes], seconds: float) -> float:
    """Seconds until ``proc`` exits, polling without blocking the loop (writers run)."""
    started = time.monotonic()
    while proc.poll() is None:
        if time.monotonic() - started > seconds:
            return float("inf")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@pytest.mark.parametrize(
    ("backend", "partitions"),
    [("sqlite", 1), pytest.param("postgres", 4, marks=pytest.mark.postgres)],
)
async def test_sigterm_at_random_moments_stops_run_in_time_with_nothing_lost(
    tmp_path: Path, backend: str, partitions: int, request: pytest.FixtureRequest
) -> None:
    url: str = request.getfixturevalue(f"{backend}_url")
    if backend == "postgres":
        url += "&pool_min_size=1&pool_max_size=2"  # workers wait for connections
    write_app(tmp_path, partitions=partitions)
    moments = random.Random()
    seed = moments.randrange(2**32)
    moments.seed(seed)
    async with eventfold.connect(url) as store:
        await deposit_rounds(store, 6, range(3), opened=False)
        writing = asyncio.create_task(deposit_rounds(store, 6, range(3, 60), opened=True))
        try:
            for attempt in range(6):
                proc = daemon(tmp_path, url, "--stop-timeout", str(STOP_TIMEOUT))
                try:
                    # From "still importing" to "at the tail": every stage gets hit.
                    await asyncio.sleep(moments.uniform(0.0, 2.5))
                    proc.send_signal(signal.SIGTERM)
                    took = await exit_time(proc, EXIT_BOUND)
                finally:
                    finish(proc)
                context = f"seed {seed}, attempt {attempt}: {log_of(tmp_path)}"
                assert took < EXIT_BOUND, context
                # 0: stopped cleanly; -SIGTERM: the signal came before the handler was up.
                assert proc.returncode in (0, -signal.SIGTERM), context
        finally:
            await writing

        async def all_visible() -> bool:
            # PostgreSQL shows commits once older transactions in the cluster end.
            found = await expected_balances(store)
            return sum(b.deposits for b in found.values()) == 6 * 60

        await wait_until(all_visible, 60, "every deposit to be readable")
        last = daemon(tmp_path, url, "--until-caught-up")
        try:
            assert await exit_time(last, 60) < 60, log_of(tmp_path)
        finally:
            finish(last)
        assert last.returncode == 0, log_of(tmp_path)
        assert await documents(store) == await expected_balances(store)


async def test_a_blocked_handler_cannot_keep_run_from_exiting(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    write_app(tmp_path)
    marker = tmp_path / "stalled"
    async with eventfold.connect(url) as store:
        await deposit_rounds(store, 2, range(3), opened=False)
    env = {"STALL_ON_AMOUNT": "102", "STALL_MARKER": str(marker)}
    for signals, status in ((1, 3), (2, 128 + signal.SIGTERM)):
        marker.unlink(missing_ok=True)
        proc = daemon(tmp_path, url, "--stop-timeout", str(STOP_TIMEOUT), **env)
        try:
            await wait_until(lambda: asyncio.sleep(0, marker.exists()), 30, "the stall")
            for _ in range(signals):
                proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)
            # One signal: the bound ends it; a second one ends it at once.
            assert await exit_time(proc, EXIT_BOUND) < EXIT_BOUND, log_of(tmp_path)
        finally:
            finish(proc)
        assert proc.returncode == status, log_of(tmp_path)
    log = log_of(tmp_path)
    assert "did not stop within 3 s (balances v1 p0 (building) still running)" in log
    assert "stopped at once by a second SIGTERM" in log
