"""Units of work on the memory backend: appends and outbox messages, without SQL.

A unit checks each append when it is made (a conflict raises at once; a retry of events
already stored, or appended earlier in the unit, returns their result and is not kept, as
`store.append` stores nothing) and keeps it; the block's end applies them all at once
(the event loop runs nothing else meanwhile), after checking them again: an append made
elsewhere in between turns into the unit's `WrongExpectedVersion`, and nothing of the
unit is kept.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..._events import Event, NewEvent
from ..._position import ExpectedVersion, Position, version_matches
from ...errors import ConfigurationError, InvalidInput, StoreError, StreamReplaced
from ...errors import WrongExpectedVersion as _Conflict
from ...store._common import StoredCopy, check_limit, log_start, prepare_append
from ...store._outbox import (
    PENDING,
    ROLLED_BACK,
    Destinations,
    Outgoing,
    Published,
    QueuedMessages,
    decode_headers,
)
from ...store._outbox import unit_headers as _unit_headers
from ...store.ports import OutboxMessage
from ...store.protocol import AppendResult

if TYPE_CHECKING:
    from ._store import MemoryStore

__all__ = ["MemoryUnitOfWork", "UnitOfWorkSupport"]


class MemoryUnitOfWork(QueuedMessages):
    """One unit of work on a `MemoryStore` (`eventfold.store.UnitOfWork`)."""

    backend = "memory"
    paramstyle = "qmark"

    def __init__(self, store: MemoryStore, headers: dict[str, str], dest: Destinations) -> None:
        self._store = store
        self._headers = headers
        self._destinations = dest
        self.appends: list[tuple[str, Sequence[Event | NewEvent], ExpectedVersion]] = []
        self.messages: list[Outgoing] = []
        self._versions: dict[str, int] = {}
        self._pending: dict[str, dict[bytes, StoredCopy]] = {}
        """The unit's appended events with ids the caller chose, by stream and id."""
        self._events = 0
        self.live = False
        self.published = PENDING

    def _check(self) -> None:
        if not self.live:
            raise StoreError("this unit of work is over; start a new one")

    async def execute(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise ConfigurationError(
            "the memory store has no SQL: a unit of work on it takes appends and outbox "
            "messages only; use a sqlite:// or postgresql:// store for units with SQL"
        )

    async def write(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> None:
        await self.execute(query)

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent],
        *,
        expected_version: ExpectedVersion,
    ) -> AppendResult:
        self._check()
        store = self._store
        store._check_writable()
        encoded, expected = prepare_append(store.codec, stream_id, events, expected_version)
        # As `store.append`: a retry of stored events returns their result, stores nothing;
        # the unit sees its own appends, so a retry of one of them does the same.
        pending = self._pending.get(stream_id)
        retry = store._retry_of(stream_id, encoded, pending)
        if retry is not None:
            return retry
        replaced_by = store._replaced.get(stream_id)
        if replaced_by is not None:
            raise StreamReplaced(stream_id, replaced_by)
        actual = self._versions.get(stream_id, len(store._streams.get(stream_id, ())))
        if not version_matches(expected, actual):
            raise _Conflict(stream_id, expected, actual)
        self.appends.append((stream_id, list(events), expected_version))
        self._versions[stream_id] = actual + len(encoded)
        before = len(store._log) + self._events
        self._events += len(encoded)
        if pending is None:
            pending = self._pending[stream_id] = {}
        for n, e in enumerate(encoded, 1):
            if e.explicit_id:
                pending[e.event_id] = (actual + n, e.type, e.data, Position(0, before + n))
        return AppendResult(actual + len(encoded), Position(0, before + len(encoded)))


class UnitOfWorkSupport:
    """`SupportsUnitOfWork` and `SupportsOutbox` for `MemoryStore`."""

    __destinations: Destinations | None = None
    __outbox: list[OutboxMessage] | None = None
    __seq = 0

    @property
    def _mem(self) -> MemoryStore:
        return self  # type: ignore[return-value]

    @property
    def _destinations(self) -> Destinations:
        found = self.__destinations
        if found is None:
            found = self.__destinations = Destinations()
        return found

    @property
    def _outbox(self) -> list[OutboxMessage]:
        found = self.__outbox
        if found is None:
            found = self.__outbox = []
        return found

    def unit_of_work(
        self,
        *,
        correlation_id: str | uuid.UUID | None = None,
        causation_id: str | uuid.UUID | None = None,
        traceparent: str | None = None,
    ) -> contextlib.AbstractAsyncContextManager[MemoryUnitOfWork]:
        """Appends and outbox messages committed together (no SQL on this backend)."""
        return self._run(_unit_headers(correlation_id, causation_id, traceparent))

    @contextlib.asynccontextmanager
    async def _run(self, headers: dict[str, str]) -> AsyncIterator[MemoryUnitOfWork]:
        store = self._mem
        store._check_writable()
        unit = MemoryUnitOfWork(store, headers, self._destinations)
        unit.live = True
        try:
            yield unit
        except BaseException:
            unit.published = ROLLED_BACK
            raise
        finally:
            unit.live = False
        try:
            self._commit(unit)
        except BaseException:
            unit.published = ROLLED_BACK
            raise

    def _commit(self, unit: MemoryUnitOfWork) -> None:
        """Apply the unit's appends and messages, all or none (synchronously)."""
        store = self._mem
        log_length = len(store._log)
        lengths = {sid: len(store._streams.get(sid, ())) for sid, _, _ in unit.appends}
        try:
            for stream_id, events, expected in unit.appends:
                store._append(stream_id, events, expected, None)
        except BaseException:
            # Undo what this commit applied: nothing else ran meanwhile.
            for row in store._log[log_length:]:
                store._ids.get(row[1], {}).pop(row[0], None)
            del store._log[log_length:]
            for sid, length in lengths.items():
                if length:
                    del store._streams[sid][length:]
                else:
                    store._streams.pop(sid, None)
                    store._ids.pop(sid, None)
            raise
        now = time.time_ns() // 1000
        start = self.__seq
        for m in unit.messages:
            self.__seq += 1
            self._outbox.append(
                OutboxMessage(
                    Position(0, self.__seq), m.message_id, m.destination, m.key, m.payload,
                    decode_headers(m.headers), now,
                )
            )  # fmt: skip
        unit.published = Published.of(
            (m.message_id, Position(0, start + n)) for n, m in enumerate(unit.messages, 1)
        )

    def declare_destination(self, name: str) -> None:
        """Allow outbox messages for ``name`` on this store."""
        self._destinations.declare(name)

    @property
    def destinations(self) -> frozenset[str]:
        """The outbox destinations declared on this store."""
        return self._destinations.names

    async def read_outbox(
        self, after: Position, limit: int, *, destination: str | None = None
    ) -> list[OutboxMessage]:
        """Up to ``limit`` committed outbox messages after ``after``, in commit order."""
        self._mem._check_open()
        start = log_start(after, paired=False).seq
        n = check_limit(limit)
        if n is None:
            raise InvalidInput("read_outbox limit must be an int >= 0, got None")
        found = [
            m
            for m in self._outbox
            if m.position.seq > start and (destination is None or m.destination == destination)
        ]
        return found[:n]

    async def outbox_head(self, destination: str | None = None) -> Position:
        """The position of the newest committed outbox message (`START` when none)."""
        self._mem._check_open()
        for m in reversed(self._outbox):
            if destination is None or m.destination == destination:
                return m.position
        return Position(0, 0)

    async def prune_outbox(self, destination: str, up_to: Position) -> int:
        """Delete ``destination``'s messages at or before ``up_to``; how many."""
        self._mem._check_writable()
        end = log_start(up_to, paired=False).seq
        kept = [m for m in self._outbox if m.destination != destination or m.position.seq > end]
        deleted = len(self._outbox) - len(kept)
        self.__outbox = kept
        return deleted
