"""Stopping background tasks within a bound, even when a cancellation is lost.

On Python 3.11 ``asyncio.wait_for`` swallows a cancellation that lands just as the
future it waits on completes; psycopg's connect and psycopg_pool's ``getconn`` wait that
way, so a worker cancelled while it gets a connection can carry on as if nothing
happened, and a ``gather`` over it never returns. `cancel_and_wait` therefore cancels
again every task still running until all have finished or the bound has passed, and
hands back the names of those that did not stop so the caller can say so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

__all__ = ["RECANCEL_INTERVAL", "cancel_and_wait"]

RECANCEL_INTERVAL = 0.1
"""Seconds between two cancellations of a task that has not finished yet: long enough
for its cleanup (a rollback, a lease release) to finish, short against any bound."""


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]],
    *,
    timeout: float,  # noqa: ASYNC109 - the bound is the point, and it is reported
) -> list[str]:
    """Cancel ``tasks`` and wait up to ``timeout`` seconds for them to finish, cancelling
    again those still running; returns the names of the tasks still running then.

    Errors the tasks end with are theirs to log; they are not raised here.
    """
    pending = {t for t in tasks if not t.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_INTERVAL, remaining))
    return sorted(task.get_name() for task in pending)
