"""A third-party backend in miniature: events in dicts, behind ``dict://``.

Written only against what eventfold publishes for backends (the `EventStore` port, the
checks in `eventfold.store.kit`, the codec handed to ``open``, `register_backend`), to show
that a backend plugs in through the registration table. It declares no capability beyond
the port, so read models, leases, wake-ups and inline projections are not offered.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Self

from eventfold import (
    Event,
    ExpectedVersion,
    NewEvent,
    Position,
    RecordedEvent,
    StoreClosed,
    StoreReadOnly,
    WrongExpectedVersion,
)
from eventfold.codec import Codec, Row
from eventfold.store import AppendResult, Backend, EventStore, StoreStats, StreamInfo, kit

SCHEME = "dict"
NAME = "dict"


class DictStore:
    """Every event in one dict by its log position; streams list their positions."""

    backend = NAME

    def __init__(self, codec: Codec, *, read_only: bool = False) -> None:
        self.codec = codec
        self.read_only = read_only
        self._log: dict[int, Row] = {}
        self._streams: dict[str, list[int]] = {}
        self._ids: dict[str, dict[bytes, int]] = {}
        self._opens = 0

    async def open(self) -> None:
        self._opens += 1

    async def close(self) -> None:
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
            raise StoreClosed("dict store")

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent],
        *,
        expected_version: ExpectedVersion,
    ) -> AppendResult:
        self._check_open()
        if self.read_only:
            raise StoreReadOnly("dict://")
        encoded, expected = kit.prepare_append(self.codec, stream_id, events, expected_version)
        known = self._ids.setdefault(stream_id, {})
        found: dict[bytes, kit.StoredCopy] = {}
        for eid in kit.explicit_ids(encoded):
            if eid in known:
                row = self._log[known[eid]]
                found[eid] = (row[2], row[3], row[5], Position(0, row[9]))
        retry = kit.check_retry(stream_id, encoded, found)
        if retry is not None:
            return retry
        stream = self._streams.setdefault(stream_id, [])
        actual = len(stream)
        if not kit.version_matches(expected, actual):
            raise WrongExpectedVersion(stream_id, expected, actual)
        now = time.time_ns() // 1000
        for offset, enc in enumerate(encoded, start=1):
            seq = len(self._log) + 1
            self._log[seq] = (
                enc.event_id,
                stream_id,
                actual + offset,
                enc.type,
                enc.schema_version,
                enc.data,
                enc.metadata,
                now,
                0,
                seq,
            )
            stream.append(seq)
            known[enc.event_id] = seq
        return AppendResult(actual + len(encoded), Position(0, len(self._log)))

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
        kit.check_stream_id(stream_id)
        limit = kit.check_limit(limit)
        start = kit.check_from_version(from_version)
        seqs = self._streams.get(stream_id, [])
        if backwards:
            chosen = seqs[: len(seqs) if start is None else start][::-1]
        else:
            chosen = seqs[max((start or 1) - 1, 0) :]
        for event in self.codec.decode_rows(self._log[s] for s in chosen[:limit]):
            yield event

    async def find_events(
        self, stream_id: str, event_ids: Sequence[uuid.UUID]
    ) -> list[RecordedEvent]:
        self._check_open()
        kit.check_stream_id(stream_id)
        known = self._ids.get(stream_id, {})
        wanted = {known[i.bytes] for i in kit.check_event_ids(event_ids) if i.bytes in known}
        return self.codec.decode_rows(self._log[s] for s in sorted(wanted))

    async def stream_version(self, stream_id: str) -> int:
        return (await self.stream_info(stream_id)).version

    async def stream_info(self, stream_id: str) -> StreamInfo:
        self._check_open()
        kit.check_stream_id(stream_id)
        return StreamInfo(stream_id, len(self._streams.get(stream_id, ())), None)

    async def read_all(
        self,
        *,
        after: Position | str | None = None,
        types: Sequence[str | type[Event]] | None = None,
        categories: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        self._check_open()
        seq = kit.log_start(after, paired=False).seq
        names = kit.type_names(types)
        wanted_types = set(self.codec.stored_type_names(names)) if names else None
        wanted_cats = set(kit.category_names(categories) or ()) or None
        remaining = kit.check_limit(limit)
        page: list[Row] = []
        count = 0
        while seq < len(self._log) and (remaining is None or count < remaining):
            seq += 1
            row = self._log[seq]
            if (wanted_types is None or row[3] in wanted_types) and (
                wanted_cats is None or kit.category_of(row[1]) in wanted_cats
            ):
                page.append(row)
                count += 1
            if len(page) == kit.PAGE_SIZE:
                for event in self.codec.decode_rows(page):
                    yield event
                page = []
                await asyncio.sleep(0)
        for event in self.codec.decode_rows(page):
            yield event

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
        limit = kit.check_limit(limit)
        names = sorted(
            s
            for s in self._streams
            if (after is None or s > after) and (category is None or kit.category_of(s) == category)
        )
        for name in names[:limit]:
            yield StreamInfo(name, len(self._streams[name]), None)

    async def stats(self) -> StoreStats:
        self._check_open()
        return StoreStats(NAME, await self.head(), len(self._streams), len(self._log))


def _open(url: str, codec: Codec, read_only: bool) -> EventStore:
    return DictStore(codec, read_only=read_only)


BACKEND = Backend(name=NAME, open=_open)
"""What `register_backend` files under ``dict://``."""
