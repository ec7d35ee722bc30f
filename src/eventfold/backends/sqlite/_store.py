"""The SQLite backend (``sqlite:///path.db``): the embedded default.

Writes. One writer connection per store (`_writer`). Appends made during one turn of
the event loop are committed together in one write transaction (group commit, `_group`),
and a conflict fails only its own append. When the loop has nothing else ready to run,
that transaction runs right on the loop's thread: a thread hand-off costs tens of
microseconds each way on a virtual machine (and the other thread's every return to Python
contends for the GIL), more than anything else an append does, and there is nothing for
the loop to do meanwhile. Otherwise the group goes to the writer's thread, and the loop
goes on with its other tasks while it commits; so does an append when another process
holds the write lock (the loop never waits for a lock). ``inline_writes=False`` always
uses the thread.

Reads run on the event loop's thread too (`_reads`). Every write transaction begins and
ends in `_tx`, and every sqlite3 error is translated in `_errors`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from types import TracebackType
from typing import Self, TypeVar

from ..._codec import Codec
from ..._events import Event, NewEvent
from ..._position import ExpectedVersion
from ...errors import (
    ConfigurationError,
    InvalidInput,
    StoreClosed,
    StoreReadOnly,
    TransformConflict,
)
from ...store._common import (
    CommitListeners,
    check_recorded,
    check_stream_id,
    prepare_append,
    switch_refused,
)
from ...store.protocol import AppendResult
from . import _schema as sql
from ._errors import driver_errors
from ._file import FileGuard, check_store
from ._hooks import SQLiteTransactionHooks
from ._keys import SQLiteSubjectKeys
from ._reads import PAGE_BUDGET, SQLiteReads
from ._snapshots import SQLiteSnapshotStore
from ._tx import transaction
from ._unit_of_work import UnitOfWorkSupport, refuse_inside_unit
from ._writer import PendingAppend, SQLiteWriter, deliver

__all__ = ["PAGE_BUDGET", "SQLiteStore"]

BUSY_TIMEOUT = 10.0
"""Seconds a writer waits for another process's write lock before giving up."""

READERS = 2
"""Reader threads (each with its own connection), for queries of unknown cost."""

INLINE_GROUP_APPENDS = 256
INLINE_GROUP_BYTES = 1024 * 1024
"""A group (or one append) of more appends (events) or bytes than these always goes to
the writer's thread, so that a commit on the loop's thread never holds it for long."""

_T = TypeVar("_T")


class SQLiteStore(UnitOfWorkSupport, SQLiteReads):
    """An event store in one SQLite file, shared safely by several processes.

    ``synchronous`` is ``FULL`` (nothing acknowledged is lost, even on power loss) or
    ``NORMAL`` (the last commits may roll back after a power loss or OS crash);
    ``busy_timeout`` is how many seconds an append waits for another process's write
    lock before failing with `StoreError`. With ``inline_writes`` (the default), a commit
    made while the event loop has nothing else to run runs on the loop's own thread,
    holding the loop for that commit (usually well under a millisecond; an fsync on a
    slow disk takes longer); ``False`` hands every commit to the writer's thread.
    `commits` counts the write transactions.

    ``read_only`` opens an existing store for inspection: no writer, no file created, no
    migration, nothing written (a read-only file or directory is fine); a missing file or
    one without eventfold's tables raises `StoreNotFound`, a write `StoreReadOnly`.
    """

    backend = "sqlite"

    def __init__(
        self,
        path: str,
        codec: Codec | None = None,
        *,
        synchronous: str = "FULL",
        busy_timeout: float = BUSY_TIMEOUT,
        inline_writes: bool = True,
        read_only: bool = False,
    ) -> None:
        if synchronous not in sql.SYNCHRONOUS:
            raise ConfigurationError(
                f"sqlite synchronous={synchronous!r} is not supported; use FULL or NORMAL"
            )
        if path == ":memory:" or path.startswith("file::memory:"):
            raise ConfigurationError(
                "an in-memory SQLite database cannot be shared by the store's connections; "
                "use memory:// for a store that keeps nothing"
            )
        self.path = path
        self.codec = codec or Codec()
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.inline_writes = inline_writes
        """Commit an append to an idle store on the event loop's own thread (see `append`)."""
        self.read_only = read_only
        self._commits = 0
        self._open = False
        self._opens = 0
        """`open` calls not yet matched by a `close` (nested ``async with`` blocks)."""
        self._guard: FileGuard | None = None
        self._writer: SQLiteWriter | None = None
        self._reader_pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._pending: list[PendingAppend] = []
        self._flush_scheduled = False
        self._in_flight = False
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self.snapshots = SQLiteSnapshotStore(self)
        """Snapshots, in a table beside the events."""
        self.committed = CommitListeners()
        """Called after each append this process commits (in-process wake-ups)."""
        self.transaction_hooks = SQLiteTransactionHooks(self)
        """Participants in each append's transaction (`eventfold.store.TransactionHooks`)."""
        self._subject_keys = SQLiteSubjectKeys(self)

    @property
    def subject_keys(self) -> SQLiteSubjectKeys:
        """Per-subject data keys for crypto-shredding (`eventfold.store.SubjectKeys`):
        synchronous, on a connection of their own; see `eventfold.privacy`."""
        return self._subject_keys

    @property
    def commits(self) -> int:
        """Write transactions committed by this store (one per group-commit batch)."""
        writer = self._writer
        return self._commits + (writer.commits if writer is not None else 0)

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Open the file (creating it), switch it to WAL, and create or migrate the tables.

        Read-only: check that the file holds an eventfold store, and change nothing.
        """
        if self._open:
            self._opens += 1
            return
        if self.read_only:
            await asyncio.to_thread(self._check_store)
        else:
            writer = SQLiteWriter(self._open_writer, self.path)
            await writer.start()
            writer.group.guard = self._guard
            self._writer = writer
        self._reader_pool = ThreadPoolExecutor(READERS, thread_name_prefix="eventfold-sqlite-read")
        self._pending = []
        self._flush_scheduled = self._in_flight = False
        self._open = True
        self._opens = 1

    async def close(self) -> None:
        """Commit what is queued, stop the writer and close every connection."""
        if self._opens > 1:
            self._opens -= 1
            return
        if not self._open:
            return
        self._open = False
        self._opens = 0
        self._flush()
        writer, readers = self._writer, self._reader_pool
        self._reader_pool = None
        if readers is not None:
            # Reader connections are closed here, once the pool has stopped, so no thread
            # can be using them (the event loop's own is not in use: this is the loop).
            await asyncio.to_thread(readers.shutdown, True)
        with self._reader_lock:
            conns, self._reader_conns = self._reader_conns, []
        for conn in conns:
            conn.close()
        self._subject_keys.close()
        self._local = threading.local()
        # The writer closes last: the last connection to close checkpoints the WAL and
        # removes it, which a read-only one cannot do.
        if writer is not None:
            await writer.stop()
            self._commits += writer.commits
            self._writer = None

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

    def _open_writer(self) -> sqlite3.Connection:
        """Open the writer connection and migrate (runs on the writer's thread)."""
        conn = self._connect(reader=False)
        try:
            with driver_errors(self.path):
                sql.migrate(conn)
            self._guard = FileGuard(self.path)
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_store(self) -> None:
        """Check, read-only, that the file holds an eventfold store (on a worker thread)."""
        with driver_errors(self.path):
            check_store(self.path, partial(self._connect_raw, reader=True))

    def _check_writable(self) -> None:
        if not self._open:
            raise StoreClosed(f"sqlite store {self.path!r}")
        if self.read_only:
            raise StoreReadOnly(f"sqlite:///{self.path}")

    # -- appending -------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent],
        *,
        expected_version: ExpectedVersion,
    ) -> AppendResult:
        self._check_writable()
        refuse_inside_unit(self, "append")
        encoded, expected = prepare_append(self.codec, stream_id, events, expected_version)
        size = 0
        for enc in encoded:
            size += len(enc.data) + len(enc.metadata)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AppendResult] = loop.create_future()
        item = PendingAppend(stream_id, encoded, expected, future, size)
        if (
            self.inline_writes
            and not self._in_flight
            and not self._pending
            and len(encoded) <= INLINE_GROUP_APPENDS
            and size <= INLINE_GROUP_BYTES
            and _idle(loop)
        ):
            writer = self._writer
            assert writer is not None
            outcomes = writer.write_inline([item])
            if outcomes is not None:
                (outcome,) = outcomes
                if type(outcome) is AppendResult:
                    if self.committed:
                        self.committed.fire()
                    return outcome
                assert isinstance(outcome, BaseException)
                raise outcome
        return await self._queue(item)

    async def _queue(self, item: PendingAppend) -> AppendResult:
        """Hand ``item`` to the next group commit and wait for its outcome."""
        self._pending.append(item)
        if not self._in_flight and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_soon)
        result = await item.future
        if self.committed:
            self.committed.fire()
        return result

    async def append_copies(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        *,
        expected_version: ExpectedVersion,
        recorded_us: Sequence[int],
    ) -> AppendResult:
        """`append` keeping given recorded times (for `eventfold.transform` only)."""
        self._check_writable()
        encoded, expected = prepare_append(self.codec, stream_id, events, expected_version)
        stamps = check_recorded(recorded_us, len(encoded))
        size = sum(len(enc.data) + len(enc.metadata) for enc in encoded)
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        return await self._queue(PendingAppend(stream_id, encoded, expected, future, size, stamps))

    async def replace_stream(
        self, stream_id: str, target: str, *, version: int, target_version: int
    ) -> None:
        """Point ``stream_id`` at ``target`` in one transaction (`eventfold.transform`).

        Refused with `TransformConflict` unless ``stream_id`` is still at ``version`` and
        not replaced, and ``target`` is at ``target_version`` and not replaced.
        """
        self._check_writable()
        check_stream_id(stream_id)
        check_stream_id(target)
        if stream_id == target:
            raise InvalidInput(f"stream {stream_id!r} cannot replace itself")
        params = {
            "source": stream_id,
            "target": target,
            "version": version,
            "target_version": target_version,
        }

        guard = self._guard

        def work(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                switched = conn.execute(sql.REPLACE_STREAM, params).rowcount == 1
                if switched:
                    conn.execute(sql.REPOINT_ALIASES, params)
                if guard is not None:
                    guard()
            return switched

        # A driver error of ``work`` reaches here translated (`SQLiteWriter.call`).
        switched = await self.on_writer(work)
        if not switched:
            raise await self._switch_refused(stream_id, target, version, target_version)

    async def _switch_refused(
        self, stream_id: str, target: str, version: int, target_version: int
    ) -> TransformConflict:
        source = await self.stream_info(stream_id)
        dest = await self.stream_info(target)
        return switch_refused(source, dest, version, target_version)

    # Group commit, seen from the event loop: the appends made during one turn of the
    # loop go to the writer together; while it commits them, the next ones gather and go
    # over the moment it is done. A group whose loop has nothing else ready to run is
    # committed right there, on the loop's thread (see `SQLiteWriter.write_inline`).

    def _flush_soon(self) -> None:
        self._flush_scheduled = False
        if not self._in_flight:
            self._flush(inline=self.inline_writes)

    def _flush(self, *, inline: bool = False) -> None:
        # An append whose caller was cancelled before its turn is dropped, never written.
        pending = [item for item in self._pending if not item.future.cancelled()]
        self._pending = []
        writer = self._writer
        if not pending or writer is None:
            return
        if (
            inline
            and len(pending) <= INLINE_GROUP_APPENDS
            and sum(item.size for item in pending) <= INLINE_GROUP_BYTES
            and _idle(asyncio.get_running_loop())
        ):
            outcomes = writer.write_inline(pending)
            if outcomes is not None:
                deliver(pending, outcomes, None)
                return
        self._in_flight = True
        writer.submit(pending, self._group_done)

    def _group_done(self) -> None:
        self._in_flight = False
        if self._pending:
            self._flush()

    @property
    def _writer_conn(self) -> sqlite3.Connection | None:
        """The writer's connection (only for use on its thread, through `on_writer`)."""
        return self._writer.connection if self._writer is not None else None

    async def on_writer(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` with the writer connection on the writer's thread, between batches.

        For the store's own side tables (snapshots): ``work`` opens and commits its own
        transaction (one left open by an error is rolled back).
        """
        self._check_writable()
        refuse_inside_unit(self, "a write (a snapshot, a transformation)")
        assert self._writer is not None
        return await self._writer.call(work)


def _idle(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether nothing else on the loop is ready to run (asyncio's own loop only: others
    do not say, and count as busy)."""
    ready = getattr(loop, "_ready", None)
    if ready is None:
        return False
    return not ready or all(handle.cancelled() for handle in ready)
