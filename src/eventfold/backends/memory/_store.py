"""The in-memory backend: the whole contract, nothing kept after the process ends.

For tests and experiments. It stores the same encoded bytes as the database backends, so
size limits, encoding errors and decoding behave exactly as they do there.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Self

from ..._codec import Codec, EncodedEvent, Row
from ..._events import Event, NewEvent, RecordedEvent
from ..._position import ExpectedVersion, Position, version_matches
from ...errors import (
    InvalidInput,
    StoreClosed,
    StoreReadOnly,
    StreamReplaced,
    WrongExpectedVersion,
)
from ...store._common import (
    PAGE_SIZE,
    CommitListeners,
    StoredCopy,
    category_names,
    category_of,
    check_event_ids,
    check_from_version,
    check_limit,
    check_recorded,
    check_retry,
    check_stream_id,
    explicit_ids,
    log_start,
    prepare_append,
    switch_refused,
    type_names,
)
from ...store.ports import Snapshot
from ...store.protocol import AppendResult, StoreStats, StreamInfo
from ._keys import MemorySubjectKeys
from ._unit_of_work import UnitOfWorkSupport

__all__ = ["MemorySnapshotStore", "MemoryStore"]


class MemorySnapshotStore:
    """Snapshots in a dict: for the memory backend and tests."""

    def __init__(self) -> None:
        self._by_stream: dict[tuple[str, str], dict[int, Snapshot]] = {}

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        self._by_stream.setdefault((snapshot.stream_id, snapshot.state_type), {})[
            snapshot.version
        ] = snapshot

    async def load_snapshot(
        self,
        stream_id: str,
        state_type: str,
        *,
        max_version: int | None = None,
        max_recorded_us: int | None = None,
    ) -> Snapshot | None:
        found = [
            s
            for s in self._by_stream.get((stream_id, state_type), {}).values()
            if (max_version is None or s.version <= max_version)
            and (max_recorded_us is None or s.recorded_us <= max_recorded_us)
        ]
        return max(found, key=lambda s: s.version, default=None)


class MemoryStore(UnitOfWorkSupport):
    """An event store held in one process's memory (``memory://``).

    ``read_only``: an empty store that refuses writes with `StoreReadOnly` (what a
    read-only connect to ``memory://`` can see).
    """

    backend = "memory"

    def __init__(self, codec: Codec | None = None, *, read_only: bool = False) -> None:
        self.codec = codec or Codec()
        self.read_only = read_only
        self._log: list[Row] = []
        self._streams: dict[str, list[int]] = {}
        self._ids: dict[str, dict[bytes, int]] = {}
        self._replaced: dict[str, str] = {}
        """Stream id -> the stream a transformation replaced it by (never itself replaced)."""
        self._opens = 0
        """`open` calls not yet matched by a `close` (nested ``async with`` blocks)."""
        self.snapshots = MemorySnapshotStore()
        """Snapshots kept beside the events (in memory too)."""
        self.committed = CommitListeners()
        """Called after each append (in-process wake-ups)."""
        self._subject_keys = MemorySubjectKeys(lambda: self._opens > 0, read_only=read_only)

    @property
    def subject_keys(self) -> MemorySubjectKeys:
        """Per-subject data keys for crypto-shredding (`eventfold.privacy`), in memory."""
        return self._subject_keys

    async def open(self) -> None:
        """Open the store (each `open` needs its `close`; see `EventStore.open`)."""
        self._opens += 1

    async def close(self) -> None:
        """Close the store once every `open` has had its `close`; safe to call again."""
        self._opens = max(self._opens - 1, 0)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _check_open(self) -> None:
        if not self._opens:
            raise StoreClosed("memory store")

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise StoreReadOnly("memory://")

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent],
        *,
        expected_version: ExpectedVersion,
    ) -> AppendResult:
        return self._append(stream_id, events, expected_version, None)

    async def append_copies(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        *,
        expected_version: ExpectedVersion,
        recorded_us: Sequence[int],
    ) -> AppendResult:
        """`append` keeping given recorded times (for `eventfold.transform` only)."""
        return self._append(stream_id, events, expected_version, recorded_us)

    def _append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent],
        expected_version: ExpectedVersion,
        recorded_us: Sequence[int] | None,
    ) -> AppendResult:
        self._check_writable()
        encoded, expected = prepare_append(self.codec, stream_id, events, expected_version)
        stamps = None if recorded_us is None else check_recorded(recorded_us, len(encoded))
        indexes = self._streams.get(stream_id, [])
        retry = self._retry_of(stream_id, encoded)
        if retry is not None:
            return retry
        replaced_by = self._replaced.get(stream_id)
        if replaced_by is not None:
            raise StreamReplaced(stream_id, replaced_by)
        actual = len(indexes)
        if not version_matches(expected, actual):
            raise WrongExpectedVersion(stream_id, expected, actual)
        now = time.time_ns() // 1000
        known_ids = self._ids.setdefault(stream_id, {})
        stream = self._streams.setdefault(stream_id, indexes)
        for offset, enc in enumerate(encoded, start=1):
            at = len(self._log)
            self._log.append(
                (
                    enc.event_id,
                    stream_id,
                    actual + offset,
                    enc.type,
                    enc.schema_version,
                    enc.data,
                    enc.metadata,
                    now if stamps is None else stamps[offset - 1],
                    0,
                    at + 1,
                )
            )
            stream.append(at)
            known_ids[enc.event_id] = at
        if self.committed:
            self.committed.fire()
        return AppendResult(actual + len(encoded), Position(0, len(self._log)))

    def _retry_of(
        self,
        stream_id: str,
        encoded: Sequence[EncodedEvent],
        pending: Mapping[bytes, StoredCopy] | None = None,
    ) -> AppendResult | None:
        """The first result of the append ``encoded`` repeats if the stream holds its
        events (`check_retry`: `DuplicateEventId` if it holds some otherwise), or None.

        ``pending``: the stream's events a unit of work appended and has not committed
        yet, by id (the unit sees its own appends)."""
        ids = explicit_ids(encoded)
        if not ids:
            return None
        known = self._ids.get(stream_id, {})
        found: dict[bytes, StoredCopy] = {}
        for eid in ids:
            at = known.get(eid)
            if at is not None:
                row = self._log[at]
                found[eid] = (row[2], row[3], row[5], Position(0, at + 1))
            elif pending is not None and eid in pending:
                found[eid] = pending[eid]
        return check_retry(stream_id, encoded, found)

    async def replace_stream(
        self, stream_id: str, target: str, *, version: int, target_version: int
    ) -> None:
        """Point ``stream_id`` at ``target`` (`eventfold.transform`); `TransformConflict`
        unless both streams are where the transformation left them and not replaced."""
        self._check_writable()
        check_stream_id(stream_id)
        check_stream_id(target)
        if stream_id == target:
            raise InvalidInput(f"stream {stream_id!r} cannot replace itself")
        source, dest = self._info(stream_id), self._info(target)
        if (
            source.replaced_by is not None
            or dest.replaced_by is not None
            or source.version != version
            or dest.version != target_version
        ):
            raise switch_refused(source, dest, version, target_version)
        for old, new in self._replaced.items():
            if new == stream_id:
                self._replaced[old] = target
        self._replaced[stream_id] = target

    def _info(self, stream_id: str) -> StreamInfo:
        return StreamInfo(
            stream_id, len(self._streams.get(stream_id, ())), self._replaced.get(stream_id)
        )

    def _follow(self, stream_id: str) -> str:
        return self._replaced.get(stream_id, stream_id)

    async def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
        follow_alias: bool = True,
    ) -> AsyncIterator[RecordedEvent]:
        self._check_open()
        check_stream_id(stream_id)
        limit = check_limit(limit)
        start = check_from_version(from_version)
        if follow_alias:
            stream_id = self._follow(stream_id)
        indexes = self._streams.get(stream_id, [])
        if backwards:
            top = len(indexes) if start is None else min(start, len(indexes))
            chosen = indexes[:top][::-1]
        else:
            chosen = indexes[max((start or 1) - 1, 0) :]
        if limit is not None:
            chosen = chosen[:limit]
        for page in range(0, len(chosen), PAGE_SIZE):
            for event in self.codec.decode_rows(
                self._log[i] for i in chosen[page : page + PAGE_SIZE]
            ):
                yield event
            await asyncio.sleep(0)

    async def find_events(
        self, stream_id: str, event_ids: Sequence[uuid.UUID]
    ) -> list[RecordedEvent]:
        self._check_open()
        check_stream_id(stream_id)
        known = self._ids.get(self._follow(stream_id), {})
        found = sorted({known[i.bytes] for i in check_event_ids(event_ids) if i.bytes in known})
        return self.codec.decode_rows(self._log[at] for at in found)

    async def stream_version(self, stream_id: str) -> int:
        self._check_open()
        check_stream_id(stream_id)
        return len(self._streams.get(self._follow(stream_id), ()))

    async def stream_info(self, stream_id: str) -> StreamInfo:
        self._check_open()
        check_stream_id(stream_id)
        return self._info(stream_id)

    async def read_all(
        self,
        *,
        after: Position | str | None = None,
        types: Sequence[str | type[Event]] | None = None,
        categories: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        self._check_open()
        start = log_start(after, paired=False).seq
        names = type_names(types)
        wanted_types = set(self.codec.stored_type_names(names)) if names else None
        wanted_cats = set(category_names(categories) or ()) or None
        remaining = check_limit(limit)
        at = start
        while remaining is None or remaining > 0:
            page = self._log[at : at + PAGE_SIZE]
            if not page:
                return
            at += len(page)
            rows = [
                r
                for r in page
                if (wanted_types is None or r[3] in wanted_types)
                and (wanted_cats is None or category_of(r[1]) in wanted_cats)
            ]
            if remaining is not None:
                rows = rows[:remaining]
                remaining -= len(rows)
            for event in self.codec.decode_rows(rows):
                yield event
            await asyncio.sleep(0)

    async def head(self) -> Position:
        self._check_open()
        return Position(0, len(self._log))

    async def streams(
        self,
        *,
        after: str | None = None,
        category: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[StreamInfo]:
        self._check_open()
        limit = check_limit(limit)
        names = sorted(
            s
            for s in self._streams
            if (after is None or s > after) and (category is None or category_of(s) == category)
        )
        for name in names[:limit] if limit is not None else names:
            yield self._info(name)

    async def stats(self) -> StoreStats:
        self._check_open()
        return StoreStats(self.backend, await self.head(), len(self._streams), len(self._log))
