"""Wake-ups from other processes on the same SQLite file: poll ``PRAGMA data_version``
on a connection of its own (see `eventfold.projections._wakeups`)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import TYPE_CHECKING

from ._errors import is_driver_error

if TYPE_CHECKING:
    from ...store.ports import WakeUpTarget as StoreWakeUps

__all__ = ["poll_data_version"]

log = logging.getLogger("eventfold.projections")


async def poll_data_version(wakeups: StoreWakeUps) -> None:
    """Call ``wakeups.notify()`` whenever the file changes, every ``wakeups.sqlite_poll``
    seconds, until cancelled."""
    path: str = wakeups.store.path  # type: ignore[attr-defined]
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        seen = conn.execute("PRAGMA data_version").fetchone()[0]
        while True:
            await asyncio.sleep(wakeups.sqlite_poll)
            try:
                now = conn.execute("PRAGMA data_version").fetchone()[0]
            except Exception as exc:
                if not is_driver_error(exc):
                    raise
                # A hint: subscribers poll anyway.
                log.debug("cannot poll %s for changes: %s", path, exc)
                continue
            if now != seen:
                seen = now
                wakeups.notify()
    finally:
        conn.close()
