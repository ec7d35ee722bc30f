"""Running a coroutine that must not suspend, to its end, on the calling thread.

SQLite's transaction participants and inline handlers are coroutines (the same code runs
on PostgreSQL, where they may await I/O), but on SQLite they run inside a synchronous
transaction on whichever thread holds the writer connection: the event loop's, or the
writer's own. While one runs, the thread's running loop is replaced by a stand-in that
refuses everything. Without it, a coroutine that awaits real I/O would suspend on the
loop's thread and find no loop on the writer's, so one mistake would surface as two
different errors depending on where the group ran.
"""

from __future__ import annotations

from asyncio import events as asyncio_events
from collections.abc import Coroutine
from typing import Any, TypeVar, cast

__all__ = ["WouldSuspend", "run_sync"]

_T = TypeVar("_T")


class WouldSuspend(Exception):
    """The coroutine awaited something that suspends (it has been closed)."""


class _Awaited(BaseException):
    """Raised by `_NoLoop` out of the coroutine; a BaseException so that no handler
    wrapper in between keeps it."""


class _NoLoop:
    """Stands in for the running loop while `run_sync` runs a coroutine."""

    def __getattr__(self, name: str) -> Any:
        raise _Awaited(name)


_NO_LOOP = _NoLoop()


def run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` to its end; its result, or what it raised, or `WouldSuspend`."""
    outer = asyncio_events._get_running_loop()
    asyncio_events._set_running_loop(cast(Any, _NO_LOOP))
    try:
        coro.send(None)
    except StopIteration as done:
        return cast(_T, done.value)
    except _Awaited:
        pass
    finally:
        asyncio_events._set_running_loop(outer)
    coro.close()
    raise WouldSuspend
