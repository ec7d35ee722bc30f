"""Ownership: one active worker per projection partition, across processes.

A worker runs a partition only while it holds that partition's lease. The lease alone
cannot stop a worker that lost it without noticing from writing once more; the
compare-and-set checkpoint fences that write out (`CheckpointConflict`), so leases keep
the work from being done twice and checkpoints keep it from being *applied* twice.

`MemoryLeases` is the in-process one. `PostgresLeases` (`eventfold.backends.postgres`)
is a session advisory lock per key, held on one direct connection in autocommit (storage
design §3.2: it holds no transaction, so it cannot hold back the log's horizon). When the
process dies, or its connection drops, PostgreSQL releases every lock of that session and
another worker takes over on its next try; the holder notices within one heartbeat and
stops writing, and the checkpoint's compare-and-set fences out the one write it may still
attempt.
"""

from __future__ import annotations

import logging

from ..store.ports import Lease, Leases

__all__ = ["Lease", "Leases", "MemoryLeases", "lease_key"]

log = logging.getLogger("eventfold.projections")


def lease_key(name: str, version: int, partition: int, partitions: int) -> str:
    """The lease of one partition of one version: ``orders/v2/p0of4``."""
    return f"{name}/v{version}/p{partition}of{partitions}"


class MemoryLeases:
    """Leases in a dict: every daemon sharing this object competes for the same keys."""

    def __init__(self) -> None:
        self._owners: dict[str, str] = {}

    async def acquire(self, key: str, owner: str) -> Lease | None:
        current = self._owners.get(key)
        if current is not None and current != owner:
            return None
        self._owners[key] = owner
        return _MemoryLease(self, key, owner)

    def owner(self, key: str) -> str | None:
        """Who holds ``key`` now."""
        return self._owners.get(key)

    def revoke(self, key: str) -> None:
        """Take ``key`` away from its holder (what a dropped database session does)."""
        self._owners.pop(key, None)


class _MemoryLease:
    def __init__(self, leases: MemoryLeases, key: str, owner: str) -> None:
        self._leases = leases
        self.key = key
        self._owner = owner

    def held(self) -> bool:
        return self._leases._owners.get(self.key) == self._owner

    async def release(self) -> None:
        if self.held():
            del self._leases._owners[self.key]
