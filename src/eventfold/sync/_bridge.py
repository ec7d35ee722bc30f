"""The bridge from blocking code to the async API: an event loop on a thread of its own.

A `Runner` owns one daemon thread running one event loop. `Runner.call` submits a
coroutine to it and blocks the calling thread until it ends, with its result or the
exception it raised (the same object, so the same class and attributes); `Runner.iterate`
turns an async iterator into a plain one, a page at a time. Any thread may call, a
thread that runs an event loop of its own included (a notebook's): that loop is blocked
for the call, as for any blocking call, but the work runs on the runner's loop, so
nothing waits for itself. The one thread that must not block on the runner is the
runner's own (a handler called back from inside the loop): that call is refused.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, Generic, TypeVar

from ..errors import ConfigurationError, StoreClosed
from ..store.kit import PAGE_SIZE

__all__ = ["Runner"]

T = TypeVar("T")

_TICK = 0.25
"""Seconds a blocked caller waits at a time: between waits a pending Ctrl-C is raised
(a blocked lock wait is interrupted only when the signal reaches the main thread)."""

_CANCEL_WAIT = 5.0
"""Seconds a caller interrupted by Ctrl-C waits for the cancelled coroutine to end."""

_STOP_WAIT = 10.0
"""Seconds `Runner.stop` gives the loop's remaining tasks to end after cancelling them."""

_runners: weakref.WeakSet[Runner] = weakref.WeakSet()


class Runner:
    """One event loop on one daemon thread, and blocking calls into it."""

    def __init__(self, name: str, describe: str) -> None:
        self.describe = describe
        """What `StoreClosed` says runs here, and how to open it."""
        self._loop = asyncio.new_event_loop()
        self._finalizers: list[Callable[[], Awaitable[None]]] = []
        self._stopped = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        _runners.add(self)

    # -- the loop's thread -------------------------------------------------------------

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            loop.run_until_complete(self._wind_down())
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    async def _wind_down(self) -> None:
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_STOP_WAIT)
        for finalize in reversed(self._finalizers):
            with contextlib.suppress(Exception):  # on the way out: no caller to tell
                await finalize()
        await self._loop.shutdown_asyncgens()
        with contextlib.suppress(RuntimeError):  # no new thread at interpreter exit
            await self._loop.shutdown_default_executor()

    # -- callers' threads --------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the loop's thread is alive and `stop` has not been called."""
        return not self._stopped and self._thread.is_alive()

    @property
    def thread(self) -> threading.Thread:
        """The thread the loop runs on."""
        return self._thread

    def in_loop_thread(self) -> bool:
        """Whether the calling thread is the loop's own."""
        return threading.get_ident() == self._thread.ident

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and block until it ends; its result or its error.

        A `KeyboardInterrupt` (or any other exception raised in the waiting thread)
        cancels the coroutine, waits briefly for it to end, and is raised.
        """
        if self.in_loop_thread():
            coro.close()
            raise ConfigurationError(
                "a blocking eventfold.sync call was made on the thread of the event loop "
                "it would wait for (from a handler or callback running in it); await the "
                "async API there instead (the sync object's `async_*` attribute)"
            )
        call = _Call(coro, self)
        scheduled = False
        try:
            if self._stopped:
                coro.close()
                raise StoreClosed(self.describe)
            scheduled = True
            # A Ctrl-C often lands in here, as the loop's thread wakes: `cancel` then
            # reaches the coroutine all the same. No lock: a call that races `stop` is
            # refused by `start`, or ends when the loop's thread does (below).
            try:
                self._loop.call_soon_threadsafe(call.start)
            except RuntimeError:  # the loop is closed
                coro.close()
                raise StoreClosed(self.describe) from None
            while not call.ended.wait(_TICK):
                if not self._thread.is_alive():
                    raise StoreClosed(self.describe)
        except BaseException:
            if scheduled and not call.ended.is_set():
                with contextlib.suppress(RuntimeError):  # a closed loop
                    self._loop.call_soon_threadsafe(call.cancel)
                call.ended.wait(_CANCEL_WAIT)
            raise
        return call.outcome()

    def iterate(self, source: AsyncIterator[T], *, page_size: int = PAGE_SIZE) -> Iterator[T]:
        """``source`` as a plain iterator that pulls ``page_size`` items per call into
        the loop, so memory holds one page however long the source.

        Closing the iterator (or leaving a ``for`` loop early and dropping it) closes
        ``source`` on the loop, which returns any connection it held.
        """

        async def page() -> tuple[list[T], bool, Exception | None]:
            items: list[T] = []
            try:
                while len(items) < page_size:
                    items.append(await anext(source))
            except StopAsyncIteration:
                return items, True, None
            except Exception as exc:
                if not items:
                    raise
                # The items read before the error come first, as from the async iterator.
                return items, True, exc
            return items, False, None

        async def close() -> None:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()

        exhausted = False
        try:
            while not exhausted:
                items, exhausted, error = self.call(page())
                yield from items
                if error is not None:
                    raise error
        finally:
            if not exhausted and self.running:
                if self.in_loop_thread():
                    self._loop.create_task(close())
                else:
                    # The runner may stop meanwhile (this can run at garbage collection).
                    with contextlib.suppress(StoreClosed):
                        self.call(close())

    def on_stop(self, finalize: Callable[[], Awaitable[None]]) -> None:
        """Await ``finalize()`` on the loop when it stops (last registered, first run)."""
        self._finalizers.append(finalize)

    def stop(self) -> None:
        """Stop the loop: cancel what still runs, run the finalizers, join the thread.

        Calls in flight end with `StoreClosed`; later calls raise it. Stopping twice, or
        from the loop's own thread (where it cannot join), only asks the loop to stop.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            if not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._loop.stop)
        _runners.discard(self)
        if not self.in_loop_thread():
            self._thread.join()


class _Call(Generic[T]):
    """One coroutine submitted to the loop: started and cancelled there, its outcome
    read by the caller's thread once `ended` is set.

    Start and cancel are both callbacks on the loop, so a cancel sent at any moment after
    the start, even before the task exists, reaches the coroutine.
    """

    def __init__(self, coro: Coroutine[Any, Any, T], runner: Runner) -> None:
        self.coro = coro
        self.runner = runner
        self.ended = threading.Event()
        self.task: asyncio.Task[T] | None = None
        self.stopped = False
        """True when the runner stopped under the call (not the caller's cancel)."""
        self.cancelled = False

    def start(self) -> None:
        if self.cancelled or self.runner._stopped:
            self.stopped = not self.cancelled
            self.coro.close()
            self.ended.set()
            return
        self.task = self.runner._loop.create_task(self.coro)
        self.task.add_done_callback(self._done)

    def cancel(self) -> None:
        self.cancelled = True
        if self.task is not None:
            self.task.cancel()
        else:
            # Not started (and perhaps never scheduled): it never will be.
            self.coro.close()
            self.ended.set()

    def _done(self, task: asyncio.Task[T]) -> None:
        if task.cancelled() and not self.cancelled:
            self.stopped = True
        self.ended.set()

    def outcome(self) -> T:
        task = self.task
        if self.stopped or task is None or task.cancelled():
            raise StoreClosed(self.runner.describe)
        error = task.exception()
        if error is not None:
            raise error
        return task.result()


def _stop_all() -> None:
    # Daemon threads are killed at exit wherever they are; stopping them first lets each
    # store flush and close (SQLite's writer commits what it queued).
    for runner in list(_runners):
        runner.stop()


# threading's own exit hook (as concurrent.futures uses) runs before the interpreter
# refuses to start threads (Python 3.12), which closing a store may do; `atexit` is too late.
getattr(threading, "_register_atexit", atexit.register)(_stop_all)
