"""Batching round trips to PostgreSQL: what many tasks ask for during one turn of the
event loop goes to the server together.

A query through psycopg costs the client about 80 microseconds of CPU whatever it does
(the send, the wait on the socket, the result), and client CPU is what bounds a loaded
process. Sent together in pipeline mode, the same queries cost about a third of that
each, and appends batched into one transaction share one commit (one WAL flush). A
batcher gathers the requests made during one turn of the loop and runs them as one batch
while the next ones gather, one batch in flight at a time; a lone request runs on its own,
exactly as it would without a batcher, so an idle store answers as fast as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

import psycopg

from ..._codec import EncodedEvent
from ..._position import ExpectedVersion, Position
from ...errors import EventfoldError, StoreError
from ...store.protocol import AppendResult
from ._append import append_one, not_appended
from ._errors import dropped, is_driver_error, recheck, translate
from ._hooks import run_with_participants

if TYPE_CHECKING:
    from ._store import PostgresStore

__all__ = ["Append", "Batcher", "append_many", "load_many", "load_one"]

_I = TypeVar("_I")
_R = TypeVar("_R")


class _Failed:
    """Marks an outcome that is an exception to raise."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Batcher(Generic[_I, _R]):
    """Runs requests one at a time (``one``) or, when several wait, together (``many``).

    ``many`` returns one outcome per request, in order: its result, or the exception it
    should raise (wrapped with `failed`).
    """

    def __init__(
        self,
        one: Callable[[_I], Awaitable[_R]],
        many: Callable[[list[_I]], Awaitable[list[Any]]],
    ) -> None:
        self._one = one
        self._many = many
        self._pending: list[tuple[_I, asyncio.Future[_R]]] = []
        self._scheduled = False
        self._running: asyncio.Task[None] | None = None
        self._direct = False
        """Whether a lone request is running in its caller's task."""

    @staticmethod
    def failed(error: BaseException) -> Any:
        """The outcome of a request that raises ``error``."""
        return _Failed(error)

    async def submit(self, item: _I) -> _R:
        """Run ``item`` (with whatever else is asked for during this turn of the loop)."""
        loop = asyncio.get_running_loop()
        if self._running is None and not self._pending and not self._direct and _idle(loop):
            # Nothing else could join a batch: run it right here, in the caller's task.
            self._direct = True
            try:
                return await self._one(item)
            finally:
                self._direct = False
                if self._pending and not self._scheduled:
                    self._scheduled = True
                    loop.call_soon(self._flush)
        future: asyncio.Future[_R] = loop.create_future()
        self._pending.append((item, future))
        if self._running is None and not self._direct and not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    async def drain(self) -> None:
        """Wait until every request submitted so far has its outcome."""
        while self._running is not None or self._pending or self._direct:
            if self._running is not None:
                await asyncio.wait([self._running])
            else:
                await asyncio.sleep(0)

    def _flush(self) -> None:
        self._scheduled = False
        if self._running is not None or self._direct:
            return
        # A request whose caller gave up before its turn is not run.
        batch = [(item, future) for item, future in self._pending if not future.done()]
        self._pending = []
        if batch:
            self._running = asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[tuple[_I, asyncio.Future[_R]]]) -> None:
        try:
            if len(batch) == 1:
                item, future = batch[0]
                try:
                    outcomes: list[Any] = [await self._one(item)]
                except Exception as exc:
                    outcomes = [_Failed(exc)]
            else:
                try:
                    outcomes = await self._many([item for item, _ in batch])
                except Exception as exc:  # a bug: never leave callers hanging
                    outcomes = [
                        _Failed(StoreError(f"unexpected {exc!r} in a batch; report this as a bug"))
                        for _ in batch
                    ]
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, _Failed):
                    future.set_exception(outcome.error)
                else:
                    future.set_result(outcome)
        finally:
            self._running = None
            if self._pending and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)


def _idle(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether nothing else on the loop is ready to run (asyncio's own loop only: others
    do not say, and count as busy)."""
    ready = getattr(loop, "_ready", None)
    if ready is None:
        return False
    return not ready or all(handle.cancelled() for handle in ready)


# -- the batches PostgresStore runs ----------------------------------------------------


class Append(NamedTuple):
    """One append, ready to send."""

    stream_id: str
    encoded: list[EncodedEvent]
    expected: ExpectedVersion
    query: bytes
    params: dict[str, Any]


async def append_many(store: PostgresStore, items: list[Append]) -> list[Any]:
    """Appends asked for together: one transaction, pipelined, one commit.

    They run in stream id order, so that two batches never wait for each other's
    stream rows in a cycle. An append whose stream was elsewhere than expected is not
    an error (its statement changes nothing); an error (a duplicate event id, say, or a
    transaction participant that raised) rolls the batch back, and each append is then run on
    its own.
    """
    participants = store.transaction_hooks.active
    order = sorted(range(len(items)), key=lambda i: items[i].stream_id)
    pool = store.require_pool()
    conn: psycopg.AsyncConnection[Any] | None = None
    try:
        async with pool.connection() as conn:
            if participants:
                ordered = [items[i] for i in order]
                heads = await run_with_participants(store, conn, participants, ordered)
            else:
                async with conn.pipeline(), conn.transaction():
                    cursors = [
                        await conn.execute(items[i].query, items[i].params, binary=True)
                        for i in order
                    ]
                heads = [row for cur in cursors if (row := await cur.fetchone()) is not None]
    except Exception as exc:
        if dropped(exc, conn):
            # Whether the batch committed is unknown: never run it again.
            await recheck(pool)
            return [Batcher.failed(_interrupted(store, item, exc)) for item in items]
        # The batch was rolled back: run each append on its own.
        outcomes = await asyncio.gather(
            *(append_one(store, item) for item in items), return_exceptions=True
        )
        return [Batcher.failed(o) if isinstance(o, BaseException) else o for o in outcomes]
    results: list[Any] = [None] * len(items)
    for i, row in zip(order, heads, strict=True):  # one row per statement, always
        base, tx, seq = row
        if base is not None:
            results[i] = AppendResult(base + len(items[i].encoded), Position(tx, seq))
        else:
            try:
                results[i] = await not_appended(store, items[i])
            except EventfoldError as exc:
                results[i] = Batcher.failed(exc)
    return results


def _interrupted(store: PostgresStore, item: Append, exc: psycopg.Error) -> EventfoldError:
    error = translate(exc, store.where)
    failed = StoreError(
        f"append to {item.stream_id!r} was interrupted before its commit was confirmed "
        f"({error}); read the stream to see whether it landed"
    )
    failed.__cause__ = exc
    return failed


async def load_one(store: PostgresStore, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """One load, on its own (with `fetch_rows`'s retry on a dropped connection)."""
    return await store.fetch_rows(store.statements.read_for_load, params)


async def load_many(store: PostgresStore, batch: list[dict[str, Any]]) -> list[Any]:
    """Loads asked for together, pipelined on one connection (one round trip)."""
    pool = store.require_pool()
    query = store.statements.read_for_load
    try:
        async with pool.connection() as conn:
            async with conn.pipeline():
                cursors = [await conn.execute(query, params, binary=True) for params in batch]
            return [await cur.fetchall() for cur in cursors]
    except Exception as exc:
        if not is_driver_error(exc):
            raise
        # One failed (or the connection did): each on its own, with `fetch_rows`'s
        # retry on a dropped connection and its errors.
        outcomes = await asyncio.gather(
            *(load_one(store, params) for params in batch), return_exceptions=True
        )
        return [Batcher.failed(o) if isinstance(o, BaseException) else o for o in outcomes]
