"""``eventfold demo`` runs end to end, shows what it promises, and leaves the user's store alone."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import shlex
import sqlite3
import sys
import tempfile
import threading
from pathlib import Path

import nats
import nats.js.errors
import psycopg
import pytest
from click.testing import CliRunner, Result
from rich.console import Console

import eventfold
from conftest import nats_url_or_skip, postgres_base_url
from eventfold.cli import cli
from eventfold.cli.demo import (
    Account,
    Demo,
    Deposit,
    Deposited,
    Order,
    OrderCancelled,
    OrderPaid,
    OrderPlaced,
    OrderShipped,
    account,
    checks,
    evolve,
    hybrid,
    run_demo,
    tour,
)
from eventfold.cli.render import redact_url


def run(*args: str, env: dict[str, str | None] | None = None) -> Result:
    environ: dict[str, str | None] = {"COLUMNS": "200", "EVENTFOLD_URL": None, **(env or {})}
    return CliRunner().invoke(cli, list(args), env=environ, catch_exceptions=False)


def counts(output: str) -> dict[str, int]:
    """The 'events per type' table, read back from the output."""
    found = re.findall(r"^\s+(demo\.Order\w+)\s+([\d,]+)\s*$", output, flags=re.M)
    return {name: int(n.replace(",", "")) for name, n in found}


# 50 orders, every tenth cancelled, plus the conflict's order (placed, paid, shipped) and
# the retry's order (placed once). The store holds 149 events in 52 streams after step 4;
# steps 5-7 add three accounts with 22, 120 and 2 deposits.
EXPECTED = {
    "demo.OrderPlaced": 52,
    "demo.OrderPaid": 46,
    "demo.OrderShipped": 46,
    "demo.OrderCancelled": 5,
}


def test_demo_on_sqlite_shows_the_conflict_the_retry_and_the_counts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/demo.db"
    result = run("demo", "--url", url, "--tasks", "8")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"store: {url}" in out
    assert "50 orders from 8 concurrent writers" in out
    assert re.search(
        r"145 appends, each at the exact version read, in [\d.]+ s: [\d,]+ appends/s", out
    )

    assert "conflict detected:" in out
    assert "got WrongExpectedVersion" in out
    assert re.search(r"is at version 2, expected 1; reload the stream", out)
    assert "expected version 1, actual 2" in out
    assert "retry succeeded" in out

    assert re.search(
        r"retry with the same event id: version 1, position \d+ \(the same result\)", out
    )
    assert "nothing was duplicated" in out
    assert "other content under the same id is refused" in out

    assert counts(out) == EXPECTED
    assert "the store holds 149 events in 52 streams" in out
    assert f"look around: eventfold --url {url} read order-" in out


def test_demo_shows_the_command_handler(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/demo.db"
    result = run("demo", "--url", url)
    assert result.exit_code == 0, result.output
    out = result.stdout

    assert "5. Command retry" in out
    assert re.search(r"20 deposits from 2 handlers at once into account-\w+-shared", out)
    retried = re.search(r"commands retried after a conflict: (\d+) \((\d+) retr", out)
    assert retried is not None, out
    assert int(retried[1]) >= 1
    assert int(retried[2]) >= int(retried[1])
    assert re.search(r"WrongExpectedVersion \d+x, then the handler reloaded", out)
    assert "commands failed: none" in out
    balance = re.search(r"balance (\d+) after 22 deposits: their sum is (\d+)", out)
    assert balance is not None, out
    assert balance[1] == balance[2] == str(10 + 550 + 55)

    assert "6. Snapshots" in out
    assert "snapshots=every(50)" in out
    assert re.search(
        r"load_details: version 120, snapshot_version 100, replayed 20 \(not 120\)", out
    )
    assert "load_details(at_version=70): snapshot_version 50, replayed 20" in out
    assert "the same state as folding all 120 events" in out

    assert "7. Time travel" in out
    assert re.search(r"load\(as_of=[\d:.]+\): balance 100\n", out)
    assert re.search(r"load\(\): +balance 150\n", out)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_demo_shows_the_read_path(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path}/demo.db"
    if backend == "postgres":
        url = request.getfixturevalue("postgres_url")
    result = run("demo", "--url", url)
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())  # rich wraps long lines

    assert "8. An async projection catches up" in out
    built = re.search(r"projection (demo_orders_\w+) v1 built (\d+) order documents", out)
    assert built is not None, out
    assert int(built[2]) == 52  # the 52 orders placed in step 1
    assert "the read model already says: OrderSummary(status='placed', events=1" in out
    assert "lag behind the head: 0 events" in out

    assert "9. Blue/green" in out
    assert "readers read v1 while v2 was built; the pointer swapped to v2" in out
    assert re.search(rf"{built[1]} v2 p0: 100% \(", out)
    assert re.search(r"v2 records the carrier: \d+ shipped orders, e.g. .*carrier='\w+'", out)

    assert "10. An inline projection" in out
    assert "deposited 30: the read model says Totals(deposited=60, deposits=3)" in out
    # Quoted for the shell: a PostgreSQL URL's ?schema= is a glob to zsh.
    hint = f"look around: eventfold --url {shlex.quote(redact_url(url))} read "
    assert hint in result.stdout
    if backend == "postgres":
        assert "'postgresql://" in hint


def test_demo_state_hint_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # --decider may add the working directory
    url = f"sqlite:///{tmp_path}/demo.db"
    out = run("demo", "--url", url).stdout
    hint = re.search(r"eventfold --url \S+ state (account-\w+-busy) --decider (\S+)", out)
    assert hint is not None, out
    shown = run("--url", url, "state", hint[1], "--decider", hint[2], "--json")
    assert shown.exit_code == 0, shown.output
    record = json.loads(shown.stdout)
    assert (record["version"], record["snapshot_version"], record["replayed"]) == (120, 100, 20)
    assert record["state"] == {"balance": 120 * 121 // 2, "deposits": 120}


def test_demo_stores_what_it_reports(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/demo.db"
    assert run("demo", "--url", url).exit_code == 0
    info = run("--url", url, "info", "--json")
    # With the read path's late order and deposits, and the hybrid write's two streams.
    assert '"events":299' in info.stdout
    assert '"streams":59' in info.stdout


def test_demo_runs_again_on_the_same_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/demo.db"
    assert run("demo", "--url", url).exit_code == 0
    again = run("demo", "--url", url, "--orders", "10", "--tasks", "32")
    assert again.exit_code == 0, again.output
    assert "the store holds 332 events in 71 streams" in again.stdout


def test_demo_default_is_a_fresh_file_in_a_temporary_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp, cwd = tmp_path / "temp", tmp_path / "cwd"
    temp.mkdir()
    cwd.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.chdir(cwd)
    # Neither the environment's store nor the working directory is touched.
    result = run("demo", env={"EVENTFOLD_URL": f"sqlite:///{cwd}/mine.db"})
    assert result.exit_code == 0, result.output
    assert list(cwd.iterdir()) == []
    (made,) = temp.glob("eventfold-demo-*/demo.db")
    assert f"store: sqlite:///{made}" in result.stdout
    assert "your eventfold.db is untouched" in result.stdout


def test_demo_honours_the_group_url_given_on_the_command_line() -> None:
    result = run("--url", "memory://", "demo", "--orders", "5")
    assert result.exit_code == 0, result.output
    assert "store: memory://" in result.stdout
    assert "look around" not in result.stdout


def test_a_failed_check_exits_1_with_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(demo: Demo) -> None:
        checks.check(False, "two winners")

    monkeypatch.setattr(tour, "STEPS", (broken,))
    result = run("demo", "--url", "memory://")
    assert result.exit_code == 1
    assert "the demo caught the store misbehaving: two winners" in result.stderr


async def test_steps_compose() -> None:
    seen: list[int] = []

    async def count_streams(demo: Demo) -> None:
        seen.append((await demo.store.stats()).streams)

    out = io.StringIO()
    done = await run_demo(
        Console(file=out, width=100),
        url="memory://",
        orders=4,
        tasks=2,
        steps=(tour.concurrent_writers, count_streams, tour.store_contents),
    )
    assert seen == [4]
    assert "the store holds 12 events in 4 streams" in out.getvalue()
    assert done.counts == {"demo.OrderPlaced": 4, "demo.OrderPaid": 4, "demo.OrderShipped": 4}


def test_evolve_folds_an_order() -> None:
    events: list[eventfold.Event] = [
        OrderPlaced(order_id="o", sku="x", quantity=3, unit_price_cents=250, currency="EUR"),
        OrderPaid(order_id="o", amount_cents=750, currency="EUR"),
        OrderShipped(order_id="o", carrier="UPS"),
    ]
    order = Order()
    for e in events:
        order = evolve(order, e)
    assert (order.total_cents, order.status) == (750, "shipped")
    cancelled = evolve(evolve(Order(), events[0]), OrderCancelled(order_id="o", reason="r"))
    assert cancelled.status == "cancelled"


def test_demo_event_types_have_their_own_names() -> None:
    names = [eventfold.event_type_name(c) for c in (OrderPlaced, OrderPaid, OrderShipped)]
    assert names == ["demo.OrderPlaced", "demo.OrderPaid", "demo.OrderShipped"]


def test_the_account_decider() -> None:
    events = account.decide(Deposit(amount=7), account.initial_state)
    assert events == [Deposited(amount=7)]
    assert account.fold([*events, Deposited(amount=3)]) == Account(balance=10, deposits=2)
    with pytest.raises(checks.DemoCheckFailed, match="cannot deposit 0"):
        account.decide(Deposit(amount=0), Account())
    assert eventfold.event_type_name(Deposited) == "demo.Deposited"


HYBRID = re.compile(
    r"one unit of work committed: a demo_customers row '(ann-\w+)', (customer-\w+-ann) v1, "
    r"(cart-\w+-ann) v1 and a message for 'demo' \(id ([0-9a-f-]{36})\)"
)


def hybrid_section(output: str) -> tuple[str, re.Match[str]]:
    out = " ".join(output.split())  # rich wraps long lines
    assert "11. A hybrid write" in out, out
    committed = HYBRID.search(out)
    assert committed is not None, out
    assert re.search(
        r"a second unit \(row 'bob-\w+', an event, a message, then a stale append\) failed: "
        rf"WrongExpectedVersion: stream '{committed[2]}' is at version 1, expected NO_STREAM",
        out,
    )
    assert re.search(
        r"rolled back: 0 rows for 'bob-\w+', 0 events, no new message \(log and outbox", out
    )
    return out, committed


def delivered_ids(out: str, prefix: str) -> dict[str, str]:
    """Subject -> Nats-Msg-Id, as the demo prints them."""
    found = re.findall(rf"({re.escape(prefix)}\.\S+) Nats-Msg-Id ([0-9a-f-]{{36}})", out)
    return dict(found)


def demo_rows(sqlite_file: Path) -> list[tuple[str, str, int]]:
    with contextlib.closing(sqlite3.connect(sqlite_file)) as db:
        return list(db.execute("SELECT id, name, orders FROM demo_customers ORDER BY id"))


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_the_hybrid_write_reaches_jetstream(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    nats_url = nats_url_or_skip()
    url = f"sqlite:///{tmp_path}/demo.db"
    if backend == "postgres":
        url = request.getfixturevalue("postgres_url")
    result = run("demo", "--url", url, "--orders", "5", env={"EVENTFOLD_NATS_URL": nats_url})
    assert result.exit_code == 0, result.output
    out, committed = hybrid_section(result.stdout)
    run_id = committed[1].removeprefix("ann-")
    stream = f"EVENTFOLD_DEMO_{run_id.upper()}"
    assert f"relay: NATS JetStream at {nats_url}, stream {stream} (deleted after the demo)" in out
    ids = delivered_ids(out, f"eventfold_demo_{run_id}")
    prefix = f"eventfold_demo_{run_id}"
    assert sorted(ids) == [
        f"{prefix}.cart.demo%2EOrderPlaced",
        f"{prefix}.customer.demo%2ECustomerRegistered",
        f"{prefix}.outbox",
    ]
    assert ids[f"{prefix}.outbox"] == committed[4]  # Nats-Msg-Id = the message's id
    assert "delivered 2 events and 1 message" in out
    if backend == "sqlite":
        assert demo_rows(tmp_path / "demo.db") == [(committed[1], "Ann", 1)]

    async def stream_gone() -> bool:
        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().stream_info(stream)
        except nats.js.errors.NotFoundError:
            return True
        finally:
            await nc.close()
        return False

    assert asyncio.run(stream_gone())


def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_without_a_nats_server_the_demo_delivers_in_process_and_says_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/demo.db"
    nowhere = f"nats://127.0.0.1:{unused_port()}"
    result = run("demo", "--url", url, "--orders", "5", env={"EVENTFOLD_NATS_URL": nowhere})
    assert result.exit_code == 0, result.output
    out, committed = hybrid_section(result.stdout)
    assert f"relay: no NATS JetStream reachable at {nowhere} within 1 s" in out
    assert "so the relay delivers to the in-process sink (run nats-server -js" in out
    ids = delivered_ids(out, f"eventfold_demo_{committed[1].removeprefix('ann-')}")
    assert len(ids) == 3
    assert committed[4] in ids.values()
    assert "delivered 2 events and 1 message" in out
    assert demo_rows(tmp_path / "demo.db") == [(committed[1], "Ann", 1)]
    assert "Traceback" not in result.output


def test_without_nats_py_the_demo_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "nats", None)  # import nats raises ImportError
    result = run("demo", "--url", f"sqlite:///{tmp_path}/demo.db", "--orders", "5")
    assert result.exit_code == 0, result.output
    out, committed = hybrid_section(result.stdout)
    ids = delivered_ids(out, f"eventfold_demo_{committed[1].removeprefix('ann-')}")
    assert committed[4] in ids.values()
    assert "nats-py is not installed, so the relay delivers to the in-process sink" in out
    assert "pip install 'eventfold[nats]'" in out
    assert "delivered 2 events and 1 message" in out


def test_the_hybrid_write_on_memory_says_where_it_runs() -> None:
    result = run("--url", "memory://", "demo", "--orders", "5")
    assert result.exit_code == 0, result.output
    assert "units of work with SQL run on SQLite and PostgreSQL, not memory" in result.stdout


class _Held(io.StringIO):
    """The demo's output; while step 11 runs, a write transaction elsewhere in the cluster
    stays open (PostgreSQL hides later commits from read_all and the heads meanwhile). It
    ends when the demo reports the failed unit, or a second after the step began."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.conn = psycopg.connect(url)
        self.lock = threading.Lock()
        self.xid: str | None = None
        self.timer = threading.Timer(1.0, self.release)

    def write(self, s: str) -> int:
        if "11. A hybrid write" in s and self.xid is None:
            with self.lock:
                self.xid = str(self.conn.execute("SELECT pg_current_xact_id()").fetchone())
            self.timer.start()
        if "a second unit" in s:
            self.release()
        return super().write(s)

    def release(self) -> None:
        with self.lock:
            self.conn.commit()


@pytest.mark.postgres
async def test_the_hybrid_write_waits_for_its_own_commit_behind_an_older_transaction(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTFOLD_NATS_URL", nats_url_or_skip())
    out = _Held(postgres_base_url())
    try:
        await run_demo(Console(file=out, width=200), url=postgres_url, steps=(hybrid.hybrid_write,))
    finally:
        out.timer.cancel()
        out.release()
        out.conn.close()
    assert out.xid is not None
    text = " ".join(out.getvalue().split())
    assert re.search(r"rolled back: 0 rows for 'bob-\w+', 0 events, no new message", text), text
    assert "delivered 2 events and 1 message" in text, text
