"""eventfold.sync: the blocking API gives the async API's results and errors, from any
thread, a thread running an event loop included."""

from __future__ import annotations

import _thread
import asyncio
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from typing import Any

import msgspec
import pytest

import eventfold
import eventfold.sync
from eventfold.projections import DocumentProjection
from eventfold.sync._bridge import Runner
from eventfold.testing.conformance import settle


class Counted(eventfold.Event):
    __event_type__ = "sync.Counted"
    n: int


class Tally(msgspec.Struct):
    count: int = 0
    total: int = 0


class Add(msgspec.Struct, frozen=True):
    n: int


class Refused(Exception):
    """The decider's own error."""


def decide(command: Add, state: Tally) -> Sequence[eventfold.Event]:
    if command.n < 0:
        raise Refused(f"cannot add {command.n}")
    return [Counted(n=command.n)]


def evolve(state: Tally, event: eventfold.Event) -> Tally:
    if isinstance(event, Counted):
        return Tally(state.count + 1, state.total + event.n)
    return state


tally = eventfold.Decider(initial_state=Tally(), evolve=evolve, decide=decide)


def tallies() -> DocumentProjection[Tally]:
    p = DocumentProjection("sync_tallies", document=Tally, categories=["tally"])

    @p.on(Counted)
    def counted(doc: Tally, e: eventfold.RecordedEvent) -> Tally:
        return Tally(doc.count + 1, doc.total + e.data.n)

    return p


@pytest.fixture
def store(store_url: str) -> Iterator[eventfold.sync.EventStore]:
    with eventfold.sync.connect(store_url) as store:
        yield store


def settled(store: eventfold.sync.EventStore, position: eventfold.Position) -> None:
    store.run(settle(store.async_store, position))


async def collect(items: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in items]


# -- the store -----------------------------------------------------------------------


def test_the_store_answers_as_the_async_store_does(store: eventfold.sync.EventStore) -> None:
    ids = [uuid.uuid4() for _ in range(3)]
    first = store.append(
        "tally-a",
        [eventfold.NewEvent(Counted(n=i), event_id=ids[i]) for i in range(3)],
        expected_version=eventfold.NO_STREAM,
    )
    assert (first.version, first.retry) == (3, False)
    again = store.append(
        "tally-a",
        [eventfold.NewEvent(Counted(n=i), event_id=ids[i]) for i in range(3)],
        expected_version=eventfold.NO_STREAM,
    )
    assert again == first
    assert again.retry
    last = store.append("tally-b", [Counted(n=10)], expected_version=0)
    settled(store, last.position)
    a = store.async_store

    assert [e.data for e in store.read_stream("tally-a")] == [Counted(n=i) for i in range(3)]
    assert list(store.read_stream("tally-a", backwards=True, limit=2)) == store.run(
        collect(a.read_stream("tally-a", backwards=True, limit=2))
    )
    assert list(store.read_all()) == store.run(collect(a.read_all()))
    assert len(list(store.read_all(categories=["tally"], limit=3))) == 3
    assert list(store.streams()) == store.run(collect(a.streams()))
    assert [s.stream_id for s in store.streams(after="tally-a")] == ["tally-b"]
    assert store.stream_version("tally-a") == 3
    assert store.stream_info("tally-b") == eventfold.StreamInfo("tally-b", 1)
    assert [e.event_id for e in store.find_events("tally-a", ids[1:])] == ids[1:]
    assert store.head() == last.position == store.run(a.head())
    assert store.stats() == store.run(a.stats())
    assert store.stats().events == 4


def test_connect_takes_and_refuses_what_the_async_connect_does(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for url in ("nope://x", "sqlite-but-no-scheme"):
        with pytest.raises(eventfold.ConfigurationError) as caught:
            eventfold.sync.connect(url)
        with pytest.raises(eventfold.ConfigurationError) as async_caught:
            eventfold.connect(url)
        assert str(caught.value) == str(async_caught.value)
    missing = eventfold.sync.connect(f"sqlite:///{tmp_path}/none.db", read_only=True)
    with pytest.raises(eventfold.StoreNotFound):
        missing.open()
    assert missing.thread is None  # a failed open leaves no thread behind
    monkeypatch.setenv("EVENTFOLD_PRODUCER_VERSION", "shop 1.2")
    with eventfold.sync.connect("memory://") as store:
        store.append("tally-a", [Counted(n=1)], expected_version=0)
        (event,) = store.read_stream("tally-a")
    assert event.metadata["producer_version"] == "shop 1.2"


def test_a_conflict_is_the_async_error(store: eventfold.sync.EventStore) -> None:
    store.append("tally-a", [Counted(n=1), Counted(n=2)], expected_version=0)
    with pytest.raises(eventfold.WrongExpectedVersion) as caught:
        store.append("tally-a", [Counted(n=3)], expected_version=1)
    assert type(caught.value) is eventfold.WrongExpectedVersion
    assert (caught.value.stream_id, caught.value.expected, caught.value.actual) == (
        "tally-a",
        1,
        2,
    )
    with pytest.raises(eventfold.WrongExpectedVersion) as async_caught:
        store.run(store.async_store.append("tally-a", [Counted(n=3)], expected_version=1))
    assert str(caught.value) == str(async_caught.value)
    assert store.stream_version("tally-a") == 2


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s: s.append("", [Counted(n=1)], expected_version=0), eventfold.InvalidStreamId),
        (
            lambda s: s.append("tally-a", [Counted(n=1)], expected_version=-5),
            eventfold.InvalidExpectedVersion,
        ),
        (
            lambda s: s.append("tally-a", ["not an event"], expected_version=0),
            eventfold.InvalidEvent,
        ),
        (lambda s: list(s.read_stream("tally-a", limit=-1)), eventfold.InvalidInput),
        (lambda s: list(s.read_all(after="not a position")), eventfold.InvalidPosition),
    ],
    ids=["stream id", "expected version", "event", "limit", "position"],
)
def test_bad_input_is_refused_with_the_async_error(
    store: eventfold.sync.EventStore, call: Any, error: type[Exception]
) -> None:
    with pytest.raises(error) as caught:
        call(store)
    assert type(caught.value) is not eventfold.EventfoldError
    assert store.stream_version("tally-a") == 0
    assert store.stats().events == 0


def test_threads_share_one_store(store: eventfold.sync.EventStore) -> None:
    threads, appends = 8, 20
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(appends):
                store.append(f"tally-{k}", [Counted(n=i)], expected_version=i)
                store.append("tally-shared", [Counted(n=k)], expected_version=eventfold.ANY)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not errors
    assert [store.stream_version(f"tally-{k}") for k in range(threads)] == [appends] * threads
    shared = list(store.read_stream("tally-shared"))
    assert [e.version for e in shared] == list(range(1, threads * appends + 1))
    settled(store, store.read_stream("tally-shared", backwards=True, limit=1).__next__().position)
    settled(store, max(e.position for e in store.read_stream("tally-0", backwards=True, limit=1)))
    everything = list(store.read_all())
    assert len(everything) == 2 * threads * appends
    assert [e.position for e in everything] == sorted(e.position for e in everything)


def test_a_long_log_is_read_page_by_page(store: eventfold.sync.EventStore) -> None:
    total = 2500
    for start in range(0, total, 500):
        last = store.append(
            "tally-long", [Counted(n=i) for i in range(start, start + 500)], expected_version=start
        )
    settled(store, last.position)
    seen = 0
    for seen, event in enumerate(store.read_all(), start=1):
        assert event.data == Counted(n=seen - 1)
    assert seen == total
    # Leaving early closes the reader on the store's loop; the store goes on serving.
    for event in store.read_stream("tally-long"):
        if event.version == 10:
            break
    assert store.stream_version("tally-long") == total


def test_iteration_pulls_one_page_at_a_time() -> None:
    pulled = 0
    closed = threading.Event()

    async def endless() -> AsyncIterator[int]:
        nonlocal pulled
        try:
            while True:
                pulled += 1
                yield pulled
        finally:
            closed.set()

    runner = Runner("test-sync-pages", "test runner")
    try:
        items = runner.iterate(endless(), page_size=100)
        assert isinstance(items, Generator)
        assert next(items) == 1
        assert pulled == 100
        assert [next(items) for _ in range(150)] == list(range(2, 152))
        assert pulled == 200
        items.close()
        assert closed.is_set()
    finally:
        runner.stop()


def test_an_error_mid_page_comes_after_the_items_before_it() -> None:
    async def breaks() -> AsyncIterator[int]:
        for i in range(3):
            yield i
        raise eventfold.InvalidInput("broken at 3")

    runner = Runner("test-sync-errors", "test runner")
    try:
        items = runner.iterate(breaks(), page_size=10)
        assert [next(items) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(eventfold.InvalidInput, match="broken at 3"):
            next(items)
    finally:
        runner.stop()


def test_a_thread_running_an_event_loop_may_call(store: eventfold.sync.EventStore) -> None:
    async def notebook_cell() -> tuple[int, list[int]]:
        store.append("tally-a", [Counted(n=1), Counted(n=2)], expected_version=0)
        return store.stream_version("tally-a"), [e.data.n for e in store.read_stream("tally-a")]

    assert asyncio.run(notebook_cell()) == (2, [1, 2])


def test_a_call_from_the_stores_own_loop_is_refused(store: eventfold.sync.EventStore) -> None:
    async def inside() -> None:
        store.head()

    with pytest.raises(eventfold.ConfigurationError, match="await the async API"):
        store.run(inside())
    assert store.head() == eventfold.START  # still serving


def test_close_releases_the_thread(store_url: str) -> None:
    store = eventfold.sync.connect(store_url)
    with pytest.raises(eventfold.StoreClosed):
        store.head()
    assert store.thread is None
    with store:
        thread = store.thread
        assert thread is not None
        assert thread.is_alive()
        with store:  # opens nest
            store.append("tally-a", [Counted(n=1)], expected_version=0)
        assert thread.is_alive()
        assert store.stream_version("tally-a") == 1
    assert not thread.is_alive()
    assert store.thread is None
    with pytest.raises(eventfold.StoreClosed, match=r"store\.open"):
        store.stream_version("tally-a")
    with pytest.raises(eventfold.StoreClosed):
        store.read_all()
    store.close()  # closing a closed store does nothing
    if store_url != "memory://":
        with store:  # a closed store opens again, on a new thread
            assert store.thread is not thread
            assert store.stream_version("tally-a") == 1


def test_a_store_left_open_lets_the_process_exit_cleanly(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/left-open.db"
    script = (
        "import eventfold, eventfold.sync\n"
        "class Left(eventfold.Event):\n"
        "    n: int\n"
        f"store = eventfold.sync.connect({url!r})\n"
        "store.open()\n"
        "store.append('left-1', [Left(n=1)], expected_version=0)\n"
        "print(store.thread.daemon)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["True"]
    assert out.stderr == ""
    with eventfold.sync.connect(url) as store:
        assert store.stream_version("left-1") == 1


def test_ctrl_c_cancels_the_call_underneath(store: eventfold.sync.EventStore) -> None:
    started, cancelled = threading.Event(), threading.Event()

    async def waits_forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def press_ctrl_c() -> None:
        if started.wait(10):
            _thread.interrupt_main()

    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    with pytest.raises(KeyboardInterrupt):
        store.run(waits_forever())
    presser.join()
    assert cancelled.is_set()
    assert store.head() == eventfold.START


# -- the command handler ---------------------------------------------------------------


def test_the_handler_handles_commands_from_many_threads(
    store: eventfold.sync.EventStore,
) -> None:
    handler = eventfold.sync.CommandHandler(
        store, tally, options=eventfold.HandlerOptions(max_retries=50)
    )
    first = handler.handle("tally-h", Add(5), command_id="c-1")
    assert (first.version, first.state) == (1, Tally(1, 5))
    assert handler.handle("tally-h", Add(5), command_id="c-1").duplicate
    with pytest.raises(Refused, match="cannot add -1"):
        handler.handle("tally-h", Add(-1))

    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                handler.handle("tally-h", Add(1))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not errors
    assert handler.load("tally-h") == Tally(61, 65)
    assert handler.load("tally-h", at_version=1) == Tally(1, 5)
    assert handler.load_details("tally-h").version == 61
    with pytest.raises(eventfold.InvalidInput, match="past its end"):
        handler.load("tally-h", at_version=99)


# -- the read side -----------------------------------------------------------------------


def test_projections_read_side(store: eventfold.sync.EventStore) -> None:
    projection = tallies()
    models = eventfold.sync.read_models_for(store)
    view = eventfold.sync.DocumentView(models, projection, store=store)
    assert view.version() is None
    with pytest.raises(eventfold.StaleRead):
        eventfold.sync.wait_for(models, projection, "0:1", timeout=0.1)

    handler = eventfold.sync.CommandHandler(store, tally)
    with eventfold.sync.ProjectionDaemon(store, models, [projection]) as daemon:
        for n in (1, 2, 3):
            result = handler.handle("tally-r", Add(n))
        handler.handle("tally-s", Add(7))
        assert result.position is not None
        reached = eventfold.sync.wait_for(models, projection, result.position, timeout=30)
        assert reached >= result.position
        assert view.get("tally-r", after=result.position) == Tally(3, 6)
        daemon.catch_up(timeout=30)
        assert daemon.wait_for("sync_tallies", result.position) >= result.position
        assert view.all() == {"tally-r": Tally(3, 6), "tally-s": Tally(1, 7)}
        assert list(view.items(after="tally-r")) == [("tally-s", Tally(1, 7))]
        assert view.get_many(["tally-s", "nope"]) == {"tally-s": Tally(1, 7)}
        status = eventfold.sync.projection_status(store, models, projection)
        assert status.state is eventfold.projections.ProjectionState.ACTIVE
        assert status.position >= result.position
        assert eventfold.sync.projection_statuses(store, models, [projection]) == [status]
        assert daemon.status("sync_tallies").name == "sync_tallies"
        assert models.active_version("sync_tallies") == projection.version
        assert daemon.parked("sync_tallies") == []
    assert not daemon.running
    live = eventfold.sync.live(store, projection)
    assert live.get("tally-r") == Tally(3, 6)
    assert live.all() == view.all()
