"""One group commit on the SQLite writer connection: the statements of a transaction that
stores many appends at once.

A group is written optimistically: one lookup of the log's last position and the streams'
versions, every row in a few multi-row INSERTs with its position computed, the streams
index updated, COMMIT. Version conflicts and client retries are decided before the insert,
so the insert can only fail on something outside eventfold's knowledge (rows written
behind its back, a trigger, a full disk); then the group is rolled back and written again
with a savepoint per append, so that such a failure fails only its own append.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from ..._codec import EncodedEvent
from ..._position import ExpectedVersion, Position, version_matches
from ...errors import (
    DuplicateEventId,
    EventfoldError,
    StoreError,
    StreamReplaced,
    WrongExpectedVersion,
)
from ...store._common import StoredCopy, category_of, check_retry, explicit_ids
from ...store.protocol import AppendResult
from . import _schema as sql
from ._errors import is_driver_error, translate, violates
from ._hooks import HookRunner
from ._tx import abandon, begin, commit, release, rollback, savepoint, try_begin, undo

__all__ = ["GroupWriter", "Outcome", "PendingAppend", "batch_failed"]

_IN_LIST_MAX = 64
"""Up to this many streams, a group looks their versions up with ``IN (?, …)`` (the list
padded to a power of two, so that a few statements serve every size)."""

Outcome = AppendResult | EventfoldError


class PendingAppend:
    """One append waiting for the writer."""

    __slots__ = ("encoded", "expected", "future", "recorded", "size", "stream_id")

    def __init__(
        self,
        stream_id: str,
        encoded: list[EncodedEvent],
        expected: ExpectedVersion,
        future: asyncio.Future[AppendResult],
        size: int,
        recorded: list[int] | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.encoded = encoded
        self.expected = expected
        self.future = future
        self.size = size
        self.recorded = recorded
        """Recorded times to keep, one per event (a stream transformation's copies only)."""


class GroupWriter:
    """Writes groups of appends to the store file ``path`` with one connection's cursor.
    `commits` counts the transactions committed."""

    def __init__(self, path: str) -> None:
        self._path = path
        self.commits = 0
        self.hooks: HookRunner | None = None
        """The transaction hooks' participants (None: there are none), run in each
        transaction: `HookRunner.begin` first, `HookRunner.apply` after each group's (or
        append's) inserts; raising fails the appends whose rows they were given."""
        self.guard: Callable[[], None] | None = None
        """Run before each COMMIT; raising rolls the group back and fails its appends
        (the store's check that its file is still there: `_file.FileGuard`)."""

    def write(self, cur: sqlite3.Cursor, batch: list[PendingAppend]) -> list[Outcome]:
        """One group commit; one outcome per append, in order."""
        try:
            begin(cur)
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            return [translate(exc, self._path) for _ in batch]
        return self._write(cur, batch)

    def write_now(self, cur: sqlite3.Cursor, batch: list[PendingAppend]) -> list[Outcome] | None:
        """`write`, unless another process holds the write lock (with a busy timeout of
        0): then None, at once."""
        if not try_begin(cur):
            return None
        return self._write(cur, batch)

    def _write(self, cur: sqlite3.Cursor, batch: list[PendingAppend]) -> list[Outcome]:
        """The group in the transaction just begun, committed or rolled back."""
        conn = cur.connection
        try:
            if self.hooks is not None:
                self.hooks.begin(cur)
            outcomes = self._write_fast(cur, batch)
            if outcomes is None:
                # Something refused a row: write the group again, an append at a time.
                rollback(conn)
                begin(cur)
                if self.hooks is not None:
                    self.hooks.begin(cur)
                outcomes = self._write_careful(cur, batch)
            if self.guard is not None:
                self.guard()
            commit(cur)
        except Exception as exc:
            error: EventfoldError
            if is_driver_error(exc):
                error = translate(exc, self._path)
            elif isinstance(exc, EventfoldError):
                error = exc
            else:
                error = StoreError(f"unexpected {exc!r}; report this as a bug")
            abandon(conn)
            return [batch_failed(error, item.stream_id) for item in batch]
        self.commits += 1
        return outcomes

    def _start(
        self, cur: sqlite3.Cursor, batch: list[PendingAppend]
    ) -> tuple[int, dict[str, int], dict[str, str] | None]:
        """The log's last position, the versions of the group's streams, and which of them
        were replaced (None: none), in one query."""
        first = batch[0].stream_id
        if all(item.stream_id == first for item in batch):
            last, version, replaced_by = cur.execute(sql.BATCH_START_ONE, (first,)).fetchone()
            return (
                last,
                {} if version is None else {first: version},
                None if replaced_by is None else {first: replaced_by},
            )
        names = list(dict.fromkeys(item.stream_id for item in batch))
        if len(names) <= _IN_LIST_MAX:
            size = 1 << (len(names) - 1).bit_length()
            names += [names[-1]] * (size - len(names))
            rows = cur.execute(_batch_start_sql(size), names).fetchall()
        else:
            rows = cur.execute(sql.BATCH_START_JSON, (json.dumps(names),)).fetchall()
        last = 0
        versions: dict[str, int] = {}
        replaced: dict[str, str] | None = None
        for stream_id, value, replaced_by in rows:
            if stream_id is None:
                last = value
            else:
                versions[stream_id] = value
                if replaced_by is not None:
                    replaced = replaced or {}
                    replaced[stream_id] = replaced_by
        return last, versions, replaced

    def _write_fast(self, cur: sqlite3.Cursor, batch: list[PendingAppend]) -> list[Outcome] | None:
        """Decide every append, then insert all rows at once; None: fall back."""
        last, versions, replaced = self._start(cur, batch)
        now = time.time_ns() // 1000
        rows: list[tuple[Any, ...]] = []
        changed: dict[str, int] = {}
        outcomes: list[Outcome] = []
        # Explicit ids written earlier in this group (not yet in the table): a retry
        # raced into the same group must see them, as it would with a savepoint each.
        written: dict[tuple[str, bytes], StoredCopy] = {}
        for item in batch:
            stream_id, encoded, expected = item.stream_id, item.encoded, item.expected
            ids = explicit_ids(encoded)
            if ids:
                found = self._find_ids(cur, stream_id, ids)
                if written:
                    for i in ids:
                        copy = written.get((stream_id, i))
                        if copy is not None:
                            found[i] = copy
                try:
                    retry = check_retry(stream_id, encoded, found)
                except DuplicateEventId as exc:
                    outcomes.append(exc)
                    continue
                if retry is not None:
                    outcomes.append(retry)
                    continue
            if replaced is not None and stream_id in replaced:
                outcomes.append(StreamReplaced(stream_id, replaced[stream_id]))
                continue
            actual = versions.get(stream_id, 0)
            if not version_matches(expected, actual):
                outcomes.append(WrongExpectedVersion(stream_id, expected, actual))
                continue
            version = actual
            stamps = item.recorded
            for n, e in enumerate(encoded):
                last += 1
                version += 1
                rows.append(
                    (last, e.event_id, stream_id, version, e.type, e.schema_version, e.data,
                     e.metadata, now if stamps is None else stamps[n])
                )  # fmt: skip
                if e.explicit_id:
                    written[(stream_id, e.event_id)] = (version, e.type, e.data, Position(0, last))
            versions[stream_id] = changed[stream_id] = version
            outcomes.append(AppendResult(version, Position(0, last)))
        if not rows:
            return outcomes
        try:
            _insert(cur, sql.insert_events_sql, rows)
            if self.hooks is not None:
                # A participant that fails sends the group down the careful path, where
                # it fails its own append only.
                self.hooks.apply(cur, rows)
        except Exception:
            if not cur.connection.in_transaction:
                raise  # SQLite rolled the whole transaction back: the group fails
            return None
        self._update_streams(cur, changed)
        return outcomes

    def _write_careful(self, cur: sqlite3.Cursor, batch: list[PendingAppend]) -> list[Outcome]:
        """The group again with a savepoint per append, so one failure fails alone."""
        last, versions, replaced = self._start(cur, batch)
        now = time.time_ns() // 1000
        changed: dict[str, int] = {}
        outcomes: list[Outcome] = []
        for item in batch:
            outcome = self._write_one(cur, item, versions, replaced, now, last)
            if type(outcome) is AppendResult and outcome.position.seq > last:
                last = outcome.position.seq
                changed[item.stream_id] = outcome.version
            outcomes.append(outcome)
        self._update_streams(cur, changed)
        return outcomes

    def _update_streams(self, cur: sqlite3.Cursor, changed: dict[str, int]) -> None:
        if changed:
            rows = [(s, v, category_of(s)) for s, v in changed.items()]
            _insert(cur, sql.upsert_streams_sql, rows)

    def _write_one(
        self,
        cur: sqlite3.Cursor,
        item: PendingAppend,
        versions: dict[str, int],
        replaced: dict[str, str] | None,
        now: int,
        last: int,
    ) -> Outcome:
        """One append inside the group's transaction; a conflict is returned, not raised."""
        stream_id, encoded, expected = item.stream_id, item.encoded, item.expected
        ids = explicit_ids(encoded)
        if ids:
            try:
                retry = check_retry(stream_id, encoded, self._find_ids(cur, stream_id, ids))
            except DuplicateEventId as exc:
                return exc
            if retry is not None:
                return retry
        if replaced is not None and stream_id in replaced:
            return StreamReplaced(stream_id, replaced[stream_id])
        actual = versions.get(stream_id, 0)
        if not version_matches(expected, actual):
            return WrongExpectedVersion(stream_id, expected, actual)
        stamps = item.recorded or [now] * len(encoded)
        rows = [
            (last + n, e.event_id, stream_id, actual + n, e.type, e.schema_version, e.data,
             e.metadata, stamps[n - 1])
            for n, e in enumerate(encoded, 1)
        ]  # fmt: skip
        # A savepoint per append: should an insert still fail (a constraint, a value
        # SQLite refuses), only this append is undone and the rest of the group commits.
        savepoint(cur)
        try:
            cur.executemany(sql.INSERT_EVENTS_AT, rows)
        except Exception as exc:
            if not is_driver_error(exc) or not cur.connection.in_transaction:
                raise  # SQLite rolled the whole transaction back: the group fails
            undo(cur)
            return self._explain_failure(cur, item, exc)
        if self.hooks is not None:
            try:
                self.hooks.apply(cur, rows)
            except Exception as exc:
                if not cur.connection.in_transaction:
                    raise
                undo(cur)
                if isinstance(exc, EventfoldError):
                    return exc
                if is_driver_error(exc):
                    return translate(exc, self._path)
                return StoreError(f"a transaction participant raised {exc!r}; report this as a bug")
        release(cur)
        version = versions[stream_id] = actual + len(rows)
        return AppendResult(version, Position(0, last + len(rows)))

    def _find_ids(
        self, cur: sqlite3.Cursor, stream_id: str, ids: list[bytes]
    ) -> dict[bytes, StoredCopy]:
        found: dict[bytes, StoredCopy] = {}
        for at in range(0, len(ids), sql.ID_CHUNK):
            chunk = ids[at : at + sql.ID_CHUNK]
            for eid, version, typ, data, position in cur.execute(
                sql.find_ids_sql(len(chunk)), (stream_id, *chunk)
            ):
                found[eid] = (version, typ, data, Position(0, position))
        return found

    def _explain_failure(
        self, cur: sqlite3.Cursor, item: PendingAppend, exc: sqlite3.Error
    ) -> EventfoldError:
        """Translate a failed insert: a unique violation is a conflict, the rest an error."""
        stream_id, encoded = item.stream_id, item.encoded
        if violates(exc, "events.event_id"):
            found = self._find_ids(cur, stream_id, [e.event_id for e in encoded])
            dup = next((e.event_id for e in encoded if e.event_id in found), encoded[0].event_id)
            error: EventfoldError = DuplicateEventId(stream_id, uuid.UUID(bytes=dup))
        elif violates(exc, "events.version"):
            actual = cur.execute(sql.LAST_VERSION, (stream_id,)).fetchone()[0]
            error = WrongExpectedVersion(stream_id, item.expected, actual)
        else:
            error = translate(exc, self._path)
        error.__cause__ = exc
        return error


def _insert(
    cur: sqlite3.Cursor, statement: Callable[[int], str], rows: list[tuple[Any, ...]]
) -> None:
    """Run a multi-row statement over ``rows``: chunks of `sql.MULTI_ROW_MAX` rows, then
    the rest in power-of-two chunks (a handful of distinct statements to cache)."""
    at, left = 0, len(rows)
    while left:
        n = sql.MULTI_ROW_MAX if left >= sql.MULTI_ROW_MAX else 1 << (left.bit_length() - 1)
        if n == 1:
            cur.execute(statement(1), rows[at])
        else:
            cur.execute(statement(n), [v for row in rows[at : at + n] for v in row])
        at += n
        left -= n


@lru_cache(maxsize=8)
def _batch_start_sql(count: int) -> str:
    return sql.BATCH_START_IN.format(marks=", ".join("?" * count))


def batch_failed(error: EventfoldError, stream_id: str) -> StoreError:
    """A fresh error per caller (sharing one instance would mix their tracebacks)."""
    failed = StoreError(f"append to {stream_id!r} was not committed: {error}")
    failed.__cause__ = error
    return failed
