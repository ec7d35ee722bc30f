"""Inline projections on SQLite and PostgreSQL: written in the append's own transaction."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
from bank import AccountOpened, Deposited

import eventfold
from eventfold import ANY, NO_STREAM
from eventfold.errors import ConfigurationError, WrongExpectedVersion
from eventfold.projections import (
    DocumentProjection,
    DocumentView,
    HandlerFailed,
    InvalidProjection,
    Projection,
    attach_inline,
    detach_inline,
    live,
    read_models_for,
    wait_for,
)
from eventfold.testing.conformance import settle


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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def inline_url(request: pytest.FixtureRequest) -> str:
    """A fresh store of each backend that runs inline projections."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


async def test_the_model_is_current_when_the_append_returns(inline_url: str) -> None:
    async with eventfold.connect(inline_url) as store:
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
        results = await asyncio.gather(
            *(store.append(f"account-{i % 4}", [Deposited(amount=1)], expected_version=ANY)
              for i in range(40))
        )  # fmt: skip
        docs = await view.all()
        # A live projection reads the global log: wait until PostgreSQL shows all of it.
        await settle(store, max(r.position for r in results))
        assert docs == await live(store, proj).all()
        assert docs["account-2"] == Balance(10, 10)
        # Its checkpoint follows the log, so wait_for and lag work as for async ones.
        head = await store.head()
        assert await wait_for(read_models_for(store), proj, head, timeout=1) == head


async def test_a_failing_projection_fails_its_append_only(inline_url: str) -> None:
    async with eventfold.connect(inline_url) as store:
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


async def test_sqlite_handlers_may_only_await_their_transaction(tmp_path: Path) -> None:
    proj = Projection("sleepy")

    @proj.on(Deposited)
    async def slow(event: eventfold.RecordedEvent, tx: object) -> None:
        await asyncio.sleep(0.01)

    async with eventfold.connect(f"sqlite:///{tmp_path}/e.db") as store:
        await attach_inline(store, [proj])
        with pytest.raises(InvalidProjection, match="may only use tx"):
            await store.append("account-1", [Deposited(amount=1)], expected_version=ANY)
        assert await store.stream_version("account-1") == 0


async def test_inline_projections_need_a_sql_store() -> None:
    async with eventfold.connect("memory://") as store:
        with pytest.raises(ConfigurationError, match="ProjectionDaemon"):
            await attach_inline(store, [balances()])


def sql_totals(backend: str) -> Projection:
    """A SQL projection: one row per account, upserted by each deposit."""
    proj = Projection("inline_totals")
    mark = "?" if backend == "sqlite" else "%s"

    @proj.on_setup
    async def setup(tx: Any) -> None:
        await tx.execute(
            f"CREATE TABLE {tx.table('totals')} (account TEXT PRIMARY KEY, total BIGINT NOT NULL)"
        )

    @proj.on(Deposited)
    async def deposited(event: eventfold.RecordedEvent, tx: Any) -> None:
        table = tx.table("totals")
        await tx.write(
            f"INSERT INTO {table} VALUES ({mark}, {mark}) ON CONFLICT (account) DO UPDATE "
            f"SET total = {table}.total + excluded.total",
            (event.stream_id, event.data.amount),
        )

    return proj


async def test_a_sql_projection_commits_with_the_append(inline_url: str) -> None:
    async with eventfold.connect(inline_url) as store:
        proj = sql_totals(store.backend)
        await attach_inline(store, [proj, balances()])
        await asyncio.gather(
            *(store.append(f"account-{i % 3}", [Deposited(amount=100 + i)], expected_version=ANY)
              for i in range(30))
        )  # fmt: skip
        with pytest.raises(HandlerFailed):  # the other projection refuses 13
            await store.append("account-9", [Deposited(amount=13)], expected_version=ANY)
        async with read_models_for(store).transaction() as tx:
            rows = await tx.execute("SELECT account, total FROM totals_v1")
        assert dict(rows) == {f"account-{k}": sum(range(100 + k, 130, 3)) for k in range(3)}


async def test_an_inline_handler_reads_what_it_wrote_in_the_append(inline_url: str) -> None:
    """``tx.execute`` returns rows inside the append's transaction, on either backend."""
    async with eventfold.connect(inline_url) as store:
        proj = Projection("running")
        mark = "?" if store.backend == "sqlite" else "%s"
        seen: list[int] = []

        @proj.on_setup
        async def setup(tx: Any) -> None:
            await tx.execute(f"CREATE TABLE {tx.table('sums')} (total BIGINT NOT NULL)")

        @proj.on(Deposited)
        async def deposited(event: eventfold.RecordedEvent, tx: Any) -> None:
            table = tx.table("sums")
            rows = await tx.execute(f"SELECT coalesce(sum(total), 0) FROM {table}")
            seen.append(int(rows[0][0]))
            await tx.write(f"INSERT INTO {table} VALUES ({mark})", (event.data.amount,))

        await attach_inline(store, [proj])
        for amount in (1, 2, 4):
            await store.append("account-1", [Deposited(amount=amount)], expected_version=ANY)
        assert seen == [0, 1, 3]


async def test_a_conflict_and_a_retry_apply_nothing_twice(inline_url: str) -> None:
    async with eventfold.connect(inline_url) as store:
        proj = balances()
        await attach_inline(store, [proj])
        first = Deposited(amount=2)
        again = eventfold.NewEvent(first, event_id=uuid.uuid4())  # an explicit id
        done = await store.append("account-1", [again], expected_version=NO_STREAM)
        # A client retry of the same event returns the first result, applies nothing.
        assert await store.append("account-1", [again], expected_version=NO_STREAM) == done
        results = await asyncio.gather(
            store.append("account-1", [Deposited(amount=5)], expected_version=1),
            store.append("account-1", [Deposited(amount=7)], expected_version=1),
            return_exceptions=True,
        )
        assert sum(isinstance(r, WrongExpectedVersion) for r in results) == 1
        [appended] = [r for r in results if isinstance(r, eventfold.AppendResult)]
        await settle(store, appended.position)  # the live fold reads the global log
        view = DocumentView(read_models_for(store), proj)
        assert await view.all() == await live(store, proj).all()
        assert (await view.get("account-1")).deposits == 2  # type: ignore[union-attr]


@pytest.mark.postgres
async def test_postgres_processes_sharing_a_projection_stay_exact(postgres_url: str) -> None:
    """Two store objects (as two processes would) append with the same inline projection,
    the second attaching while the first appends: every event is applied exactly once."""
    async with eventfold.connect(postgres_url) as a, eventfold.connect(postgres_url) as b:
        await a.append("account-0", [Deposited(amount=1)], expected_version=NO_STREAM)
        await attach_inline(a, [balances()])
        stop = asyncio.Event()

        async def keep_appending(store: eventfold.EventStore, name: str) -> eventfold.Position:
            last = eventfold.START
            while not stop.is_set():
                results = await asyncio.gather(
                    *(store.append(f"account-{name}{k}", [Deposited(amount=1)],
                                   expected_version=ANY) for k in range(4))
                )  # fmt: skip
                last = max(last, *(r.position for r in results))
            return last

        runner = asyncio.create_task(keep_appending(a, "a"))
        await asyncio.sleep(0.1)
        await attach_inline(b, [balances()])  # its catch-up takes turns with a's appends
        other = asyncio.create_task(keep_appending(b, "b"))
        await asyncio.sleep(0.3)
        stop.set()
        # The log shows an event once every older write in the cluster has finished.
        await settle(a, max(await asyncio.gather(runner, other)))
        proj = balances()
        docs = await DocumentView(read_models_for(a), proj).all()
        assert docs == await live(a, proj).all()
        assert sum(d.deposits for d in docs.values()) == await _count(a)
        head = await a.head()
        assert await wait_for(read_models_for(b), proj, head, timeout=1) == head


async def _last_stored(store: eventfold.EventStore) -> eventfold.Position:
    """The position of the newest committed event, visible in the log or not yet."""
    newest = eventfold.START
    async for info in store.streams():
        async for e in store.read_stream(info.stream_id, backwards=True, limit=1):
            newest = max(newest, e.position)
    return newest


async def _count(store: eventfold.EventStore) -> int:
    return sum([1 async for _ in store.read_all(types=[Deposited])])


@pytest.mark.postgres
async def test_postgres_handlers_may_do_their_own_io(postgres_url: str) -> None:
    proj = Projection("sleepy")
    seen: list[str] = []

    @proj.on(Deposited)
    async def slow(event: eventfold.RecordedEvent, tx: object) -> None:
        await asyncio.sleep(0.001)
        seen.append(event.stream_id)

    async with eventfold.connect(postgres_url) as store:
        await attach_inline(store, [proj])
        await store.append("account-1", [Deposited(amount=1)], expected_version=ANY)
        assert seen == ["account-1"]
        await detach_inline(store)
        await store.append("account-1", [Deposited(amount=1)], expected_version=ANY)
        assert seen == ["account-1"]


async def test_status_says_inline_and_a_daemon_refuses_it(inline_url: str) -> None:
    from eventfold.projections import (
        DaemonOptions,
        ProjectionDaemon,
        ProjectionState,
        ProjectionStopped,
        WorkerState,
        projection_status,
    )

    async with eventfold.connect(inline_url) as store:
        proj = balances()
        await attach_inline(store, [proj])  # an empty log: the mark is there all the same
        models = read_models_for(store)
        assert (await projection_status(store, models, proj)).state is ProjectionState.INLINE
        await store.append("account-1", [Deposited(amount=4)], expected_version=NO_STREAM)
        status = await projection_status(store, models, proj)
        assert (status.state, status.lag_events) == (ProjectionState.INLINE, 0)
        options = DaemonOptions(poll_interval=0.01, lease_retry=0.02)
        async with ProjectionDaemon(store, models, [balances()], options=options) as daemon:
            # catch_up alone could return first: the inline checkpoint is at the head.
            async with asyncio.timeout(5):
                while (info := daemon.workers()[0]).state is not WorkerState.FAILED:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            assert "runs inline" in str(info.error)
            await store.append("account-1", [Deposited(amount=1)], expected_version=1)
            with pytest.raises(ProjectionStopped, match="runs inline"):
                await daemon.catch_up(timeout=5)
        # Both deposits applied once, inline; the daemon applied nothing.
        assert await DocumentView(models, proj).get("account-1") == Balance(5, 2)


EXAMPLES = str(Path(__file__).resolve().parent.parent / "examples")

APPENDER = """
import asyncio, os, sys
import msgspec
import eventfold
from eventfold import ANY
from eventfold.projections import DocumentProjection, attach_inline
from bank import Deposited


class Balance(msgspec.Struct):
    balance: int = 0
    deposits: int = 0


proj = DocumentProjection("inline_balances", document=Balance)


@proj.on(Deposited)
def deposited(doc, event):
    return Balance(doc.balance + event.data.amount, doc.deposits + 1)


async def main(url, name, n):
    async with eventfold.connect(url) as store:
        await attach_inline(store, [proj])
        print("attached", flush=True)
        queue = list(range(n))

        async def worker():
            while queue:
                k = queue.pop()
                await store.append(f"account-{k % 4}", [Deposited(amount=2 * k + 2)],
                                   expected_version=ANY)

        await asyncio.gather(*(worker() for _ in range(8)))


asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


@pytest.mark.postgres
async def test_postgres_inline_across_processes_survives_a_kill(postgres_url: str) -> None:
    """Two processes append with the same inline projection; one is SIGKILLed mid-way.
    Whatever committed is in the model exactly once, and nothing else is."""
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": EXAMPLES}

    def start(name: str, n: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", APPENDER, postgres_url, name, str(n)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )

    steady, doomed = start("a", 400), start("b", 100_000)
    try:
        for proc in (steady, doomed):
            assert proc.stdout is not None
            assert await asyncio.to_thread(proc.stdout.readline) == "attached\n"
        await asyncio.sleep(0.5)  # both appending now
        doomed.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(steady.wait, 60) == 0
        await asyncio.to_thread(doomed.wait, 10)
    finally:
        for proc in (steady, doomed):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
    async with eventfold.connect(postgres_url) as store:
        # The log shows an event once every older write in the cluster has finished (the
        # killed process's last transaction included): wait until it shows every row.
        await settle(store, await _last_stored(store))
        proj = balances()
        docs = await DocumentView(read_models_for(store), proj).all()
        assert docs == await live(store, proj).all()
        deposits = [e async for e in store.read_all(types=[Deposited])]
        assert sum(d.deposits for d in docs.values()) == len(deposits) > 400
        assert sum(d.balance for d in docs.values()) == sum(e.data.amount for e in deposits)


@pytest.mark.parametrize("on_writer_thread", [False, True])
async def test_an_awaiting_sqlite_handler_fails_the_same_way_on_either_thread(
    on_writer_thread: bool,
) -> None:
    """Whichever thread runs the group, awaiting real I/O is refused with one error."""
    from eventfold.backends.sqlite import _inline as inline

    proj = Projection("sleepy")
    loop = asyncio.get_running_loop()

    async def handler() -> None:
        await asyncio.sleep(0.01)

    def run_it() -> BaseException | None:
        try:
            inline._run(proj, handler())
        except BaseException as exc:
            return exc
        return None

    error = await asyncio.to_thread(run_it) if on_writer_thread else run_it()
    assert isinstance(error, InvalidProjection)
    assert "may only use tx" in str(error)
    assert asyncio.get_running_loop() is loop  # the real loop is back in place
