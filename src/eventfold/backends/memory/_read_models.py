"""Read models in one process's memory: for tests, live folds and experiments.

A transaction buffers its writes in an overlay (its own reads see them) and applies
them all at commit, after checking its compare-and-set conditions; commit runs without
an ``await``, so no other task ever sees half of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from ..._position import START, Position
from ...errors import CheckpointConflict, ConfigurationError, InvalidInput
from ...store.ports import (
    Checkpoint,
    ParkedEvent,
    PartitionState,
    ProjectionSummary,
    VersionRecord,
    VersionState,
    now_us,
)

__all__ = ["MemoryReadModelStore", "MemoryTransaction"]

_Slot = tuple[str, int]
_CpKey = tuple[str, int, int]
_PAGE = 1000


class _Tables:
    """What a `MemoryReadModelStore` holds, committed: its transactions apply to it."""

    def __init__(self) -> None:
        self.docs: dict[_Slot, dict[str, bytes]] = {}
        self.checkpoints: dict[_CpKey, Checkpoint] = {}
        self.parked: dict[_Slot, dict[Position, ParkedEvent]] = {}
        self.versions: dict[_Slot, VersionRecord] = {}
        self.active: dict[str, int] = {}


class MemoryReadModelStore:
    """A `ReadModelStore` held in dicts; nothing survives the process."""

    backend = "memory"

    def __init__(self) -> None:
        self._tables = _Tables()
        self.commits = 0
        """Transactions committed (for tests and metrics)."""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryTransaction]:
        """A transaction whose writes apply together when the block ends without error."""
        tx = MemoryTransaction(self._tables)
        try:
            yield tx
        except BaseException:
            tx.close()
            raise
        tx.commit()
        self.commits += 1

    async def get_documents(self, name: str, version: int, ids: Sequence[str]) -> dict[str, bytes]:
        docs = self._tables.docs.get((name, version), {})
        return {i: docs[i] for i in ids if i in docs}

    async def iter_documents(
        self, name: str, version: int, *, after: str | None = None, limit: int | None = None
    ) -> AsyncIterator[tuple[str, bytes]]:
        if limit is not None and (isinstance(limit, bool) or limit < 0):
            raise InvalidInput(f"limit must be None or an int >= 0, got {limit!r}")
        docs = self._tables.docs.get((name, version), {})
        items = sorted(
            (k, v) for k, v in list(docs.items()) if after is None or k > after
        )  # a snapshot: later commits do not change what this listing yields
        if limit is not None:
            items = items[:limit]
        for at in range(0, len(items), _PAGE):
            for item in items[at : at + _PAGE]:
                yield item
            await asyncio.sleep(0)

    async def checkpoints(self, name: str, version: int) -> list[Checkpoint]:
        found = [c for k, c in self._tables.checkpoints.items() if k[:2] == (name, version)]
        return sorted(found, key=lambda c: c.partition)

    async def active_version(self, name: str) -> int | None:
        return self._tables.active.get(name)

    async def versions(self, name: str | None = None) -> list[VersionRecord]:
        found = [r for k, r in self._tables.versions.items() if name is None or k[0] == name]
        return sorted(found, key=lambda r: (r.name, r.version))

    async def parked(self, name: str, version: int) -> list[ParkedEvent]:
        parked = self._tables.parked.get((name, version), {})
        return sorted(parked.values(), key=lambda p: p.position)

    async def summaries(self, slots: Sequence[tuple[str, int]]) -> list[ProjectionSummary]:
        """Many versions' checkpoints, parked counts and records at once
        (`SupportsProjectionSummaries`)."""
        t = self._tables
        found = []
        for name, version in slots:
            parked = t.parked.get((name, version), {})
            found.append(
                ProjectionSummary(
                    name=name,
                    version=version,
                    checkpoints=tuple(await self.checkpoints(name, version)),
                    parked=len(parked),
                    oldest_parked_us=min((p.parked_us for p in parked.values()), default=None),
                    active_version=t.active.get(name),
                    record=t.versions.get((name, version)),
                )
            )
        return found


class MemoryTransaction:
    """A `ReadModelTransaction` over a `MemoryReadModelStore`."""

    def __init__(self, tables: _Tables) -> None:
        self._tables = tables
        self._closed = False
        self._dropped: set[_Slot] = set()
        self._docs: dict[_Slot, dict[str, bytes | None]] = {}
        self._checkpoints: dict[_CpKey, Checkpoint | None] = {}
        self._parked: dict[_Slot, dict[Position, ParkedEvent | None]] = {}
        self._versions: dict[_Slot, VersionRecord | None] = {}
        self._active: dict[str, int | None] = {}
        # Compare-and-set conditions on committed rows, checked again at commit.
        self._cp_conditions: dict[_CpKey, Position | None] = {}
        self._version_conditions: dict[_Slot, VersionState | None] = {}

    def _check(self) -> None:
        if self._closed:
            raise InvalidInput("this read-model transaction has ended; open a new one")

    # -- documents ---------------------------------------------------------------------

    async def get_documents(self, name: str, version: int, ids: Sequence[str]) -> dict[str, bytes]:
        self._check()
        slot = (name, version)
        overlay = self._docs.get(slot, {})
        committed = {} if slot in self._dropped else self._tables.docs.get(slot, {})
        found: dict[str, bytes] = {}
        for i in ids:
            data = overlay[i] if i in overlay else committed.get(i)
            if data is not None:
                found[i] = data
        return found

    async def put_document(self, name: str, version: int, doc_id: str, data: bytes) -> None:
        self._check()
        if not isinstance(data, bytes):
            raise InvalidInput(f"document {doc_id!r} must be bytes (JSON), got {type(data)}")
        self._docs.setdefault((name, version), {})[doc_id] = data

    async def delete_document(self, name: str, version: int, doc_id: str) -> None:
        self._check()
        self._docs.setdefault((name, version), {})[doc_id] = None

    # -- checkpoints -------------------------------------------------------------------

    def _checkpoint_view(self, key: _CpKey) -> tuple[Checkpoint | None, bool]:
        """The row as this transaction sees it, and whether that is the committed row."""
        if key in self._checkpoints:
            return self._checkpoints[key], False
        if key[:2] in self._dropped:
            return None, False
        return self._tables.checkpoints.get(key), True

    async def get_checkpoint(self, name: str, version: int, partition: int) -> Checkpoint | None:
        self._check()
        return self._checkpoint_view((name, version, partition))[0]

    async def set_checkpoint(
        self,
        name: str,
        version: int,
        partition: int,
        position: Position,
        *,
        expected: Position | None,
    ) -> None:
        self._check()
        key = (name, version, partition)
        row, committed = self._checkpoint_view(key)
        actual = None if row is None else row.position
        if actual != expected:
            raise CheckpointConflict(name, version, partition, expected=expected, actual=actual)
        if committed and key not in self._cp_conditions:
            self._cp_conditions[key] = expected
        self._checkpoints[key] = Checkpoint(name, version, partition, position, updated_us=now_us())

    async def set_state(
        self, name: str, version: int, partition: int, state: PartitionState, error: str | None
    ) -> None:
        self._check()
        key = (name, version, partition)
        row, _ = self._checkpoint_view(key)
        position = START if row is None else row.position
        self._checkpoints[key] = Checkpoint(
            name, version, partition, position, PartitionState(state), error, now_us()
        )

    # -- parked events -----------------------------------------------------------------

    async def park(self, event: ParkedEvent) -> None:
        self._check()
        self._parked.setdefault((event.name, event.version), {})[event.position] = event

    async def unpark(self, name: str, version: int, position: Position) -> None:
        self._check()
        self._parked.setdefault((name, version), {})[position] = None

    # -- versions ----------------------------------------------------------------------

    def _version_view(self, slot: _Slot) -> tuple[VersionRecord | None, bool]:
        if slot in self._versions:
            return self._versions[slot], False
        if slot in self._dropped:
            return None, False
        return self._tables.versions.get(slot), True

    async def get_version(self, name: str, version: int) -> VersionRecord | None:
        self._check()
        return self._version_view((name, version))[0]

    async def set_version(
        self, name: str, version: int, state: VersionState, *, expected: VersionState | None
    ) -> None:
        self._check()
        slot = (name, version)
        record, committed = self._version_view(slot)
        actual = None if record is None else record.state
        if actual != expected:
            raise CheckpointConflict(name, version, None, expected=expected, actual=actual)
        if committed and slot not in self._version_conditions:
            self._version_conditions[slot] = expected
        self._versions[slot] = VersionRecord(name, version, VersionState(state), now_us())

    async def activate(self, name: str, version: int) -> int | None:
        self._check()
        previous = self._active[name] if name in self._active else self._tables.active.get(name)
        now = now_us()
        if previous is not None and previous != version:
            old, _ = self._version_view((name, previous))
            if old is not None:
                self._versions[(name, previous)] = VersionRecord(
                    name, previous, VersionState.RETIRED, now
                )
        self._versions[(name, version)] = VersionRecord(name, version, VersionState.ACTIVE, now)
        self._active[name] = version
        return previous

    async def drop(self, name: str, version: int) -> None:
        self._check()
        slot = (name, version)
        self._dropped.add(slot)
        self._docs.pop(slot, None)
        self._parked.pop(slot, None)
        self._versions.pop(slot, None)
        for key in [k for k in self._checkpoints if k[:2] == slot]:
            del self._checkpoints[key]
        current = self._active[name] if name in self._active else self._tables.active.get(name)
        if current == version:
            self._active[name] = None

    async def execute(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        raise ConfigurationError(
            "the memory read-model store keeps documents only; SQL read models need the "
            "SQLite or PostgreSQL read-model store"
        )

    async def write(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> None:
        await self.execute(query, params)

    # -- commit ------------------------------------------------------------------------

    def close(self) -> None:
        """End the transaction without applying anything (it is rolled back)."""
        self._closed = True

    def commit(self) -> None:
        """Check every compare-and-set condition, then apply all writes (no awaits)."""
        self._check()
        self._closed = True
        tables = self._tables
        for key, expected in self._cp_conditions.items():
            row = tables.checkpoints.get(key)
            actual = None if row is None else row.position
            if actual != expected:
                raise CheckpointConflict(*key, expected=expected, actual=actual)
        for slot, state in self._version_conditions.items():
            record = tables.versions.get(slot)
            actual_state = None if record is None else record.state
            if actual_state != state:
                raise CheckpointConflict(*slot, None, expected=state, actual=actual_state)
        for slot in self._dropped:
            tables.docs.pop(slot, None)
            tables.parked.pop(slot, None)
            tables.versions.pop(slot, None)
            for key in [k for k in tables.checkpoints if k[:2] == slot]:
                del tables.checkpoints[key]
        for slot, docs in self._docs.items():
            target = tables.docs.setdefault(slot, {})
            for doc_id, data in docs.items():
                if data is None:
                    target.pop(doc_id, None)
                else:
                    target[doc_id] = data
        for key, row in self._checkpoints.items():
            if row is not None:
                tables.checkpoints[key] = row
        for slot, parked in self._parked.items():
            target_parked = tables.parked.setdefault(slot, {})
            for position, event in parked.items():
                if event is None:
                    target_parked.pop(position, None)
                else:
                    target_parked[position] = event
        for slot, record in self._versions.items():
            if record is not None:
                tables.versions[slot] = record
        for name, active in self._active.items():
            if active is None:
                tables.active.pop(name, None)
            else:
                tables.active[name] = active
