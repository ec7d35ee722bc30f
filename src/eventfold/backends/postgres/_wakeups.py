"""Wake-ups from any process on the database: a ``LISTEN`` on one direct connection,
reopened with backoff when it drops (see `eventfold.projections.StoreWakeUps`)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from psycopg import sql as _pgsql

if TYPE_CHECKING:
    from ...store.ports import WakeUpTarget

__all__ = ["listen"]

log = logging.getLogger("eventfold.projections")


async def listen(wakeups: WakeUpTarget) -> None:
    """Call ``wakeups.notify()`` for every notification on the store's channel, until
    cancelled; ``wakeups.listening`` says whether the connection is up."""
    store: Any = wakeups.store
    statement = _pgsql.SQL("LISTEN {}").format(_pgsql.Identifier(store.channel))
    backoff = 0.1
    while True:
        try:
            conn = await store.connect_direct()
            async with conn:
                await conn.execute(statement)
                wakeups.listening = True
                backoff = 0.1
                wakeups.notify()  # anything appended while we were not listening
                async for _ in conn.notifies():
                    wakeups.notify()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "the LISTEN connection for wake-ups failed (%s); polling until it is back",
                exc,
            )
        wakeups.listening = False
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 5.0)
