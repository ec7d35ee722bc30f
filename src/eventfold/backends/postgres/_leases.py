"""`PostgresLeases`: projection leases as PostgreSQL session advisory locks (see
`eventfold.store.ports.Leases` for what a lease guards)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..._cancel import cancel_and_wait
from ...errors import ConfigurationError
from ...store.ports import Lease
from ...store.protocol import EventStore
from ._store import PostgresStore

__all__ = ["PostgresLeases"]

log = logging.getLogger("eventfold.projections")


class PostgresLeases:
    """Leases as PostgreSQL session advisory locks, shared by every process and machine.

    ``store`` is the `PostgresStore` whose database arbitrates; keys are namespaced by its
    schema. One direct connection holds all of this object's locks and is checked every
    ``heartbeat`` seconds; if it fails, every lease reads as lost at once (`Lease.held`).
    Not for PgBouncer in transaction mode, which cannot keep session locks.
    """

    def __init__(self, store: EventStore, *, heartbeat: float = 1.0) -> None:
        if not isinstance(store, PostgresStore):
            raise ConfigurationError(
                f"PostgresLeases needs a PostgreSQL store, not {store.backend!r}; "
                "use MemoryLeases for a single process"
            )
        self.store: Any = store
        self.heartbeat = heartbeat
        self._conn: Any = None
        self._lock = asyncio.Lock()
        self._held: dict[str, _PostgresLease] = {}
        self._beat: asyncio.Task[None] | None = None

    def _lock_id(self, key: str) -> str:
        return f"eventfold:{self.store.schema}:{key}"

    async def acquire(self, key: str, owner: str) -> Lease | None:
        async with self._lock:
            lease = self._held.get(key)
            if lease is not None:
                return lease if lease.owner == owner else None
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await self.store.connect_direct()
                cur = await self._conn.execute(
                    "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (self._lock_id(key),)
                )
                row = await cur.fetchone()
            except Exception as exc:
                log.warning("cannot take lease %s (%s); will try again", key, exc)
                await self._lost()
                return None
            if not row or not row[0]:
                return None
            lease = _PostgresLease(key, owner, self._release)
            self._held[key] = lease
            if self._beat is None or self._beat.done():
                self._beat = asyncio.get_running_loop().create_task(
                    self._heartbeat(), name="eventfold:leases"
                )
            return lease

    async def _release(self, lease: _PostgresLease) -> None:
        async with self._lock:
            if self._held.get(lease.key) is not lease:
                return
            del self._held[lease.key]
            with contextlib.suppress(Exception):
                await self._conn.execute(
                    "SELECT pg_advisory_unlock(hashtextextended(%s, 0))",
                    (self._lock_id(lease.key),),
                )

    async def _lost(self) -> None:
        """The session is gone (or unusable): so is every lock it held."""
        for lease in self._held.values():
            lease.lose()
        self._held.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _heartbeat(self) -> None:
        while self._held:
            await asyncio.sleep(self.heartbeat)
            async with self._lock:
                if not self._held:
                    break
                try:
                    await self._conn.execute("SELECT 1")
                except Exception as exc:
                    log.warning("the lease connection failed (%s); leases are lost", exc)
                    await self._lost()

    async def close(self) -> None:
        """Release every lease and close the connection."""
        beat, self._beat = self._beat, None
        if beat is not None:
            await cancel_and_wait([beat], timeout=self.heartbeat + 5.0)
        async with self._lock:
            await self._lost()


class _PostgresLease:
    def __init__(
        self, key: str, owner: str, unlock: Callable[[_PostgresLease], Awaitable[None]]
    ) -> None:
        self.key = key
        self.owner = owner
        self._unlock = unlock
        self._valid = True

    def held(self) -> bool:
        return self._valid

    def lose(self) -> None:
        """Mark the lease lost (its session is gone); `release` then does nothing."""
        self._valid = False

    async def release(self) -> None:
        if self._valid:
            self._valid = False
            await self._unlock(self)
