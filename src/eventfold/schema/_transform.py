"""Stream transformation: copy streams into new ones through a function, then switch.

::

    def fix(event: RecordedEvent) -> Iterable[Event | NewEvent | RecordedEvent] | None:
        if isinstance(event.data, ItemsAdded):       # split one event into two
            return [ItemAdded(sku=s) for s in event.data.skus]
        if isinstance(event.data, Noise):            # drop it
            return None
        return [event]                               # keep it as it is

    report = await eventfold.transform(store, "order-1", target=lambda s: f"{s}.v2", fn=fix)
    report = await eventfold.transform(store, category="order", target=..., fn=fix)

Each source event is read through the codec (so it arrives upcast to today's schema) and
handed to ``fn``, in stream order. What ``fn`` returns is appended to the target stream:
the source event itself is copied with its ``event_id``, metadata and ``recorded_at``;
any other event (an `Event`, a `NewEvent`, or another `RecordedEvent`'s data) gets the
recorded time and metadata of the source event it came from and a deterministic id,
``uuid5(TRANSFORM_NAMESPACE, f"{source_event_id}/{n}")`` (``n`` counting that source
event's outputs from 0), unless a `NewEvent` brings its own. A merge is a stateful ``fn``
that returns nothing for the first events and the merged event for the last one.

The source stream stays exactly as it was, and in the global log. Once its copy is
complete, one atomic step switches it, provided it is still at the version copied:
``stream_info(source).replaced_by`` names the target, reads of the source follow the
alias (``read_stream(..., follow_alias=False)`` still reads the originals), its
snapshots are no longer used, and appends to it fail with `StreamReplaced`.

Crash safety: every copied event has an id that depends only on its source event, so a
run that is killed half-way and started again reruns ``fn`` from the start of each stream
(``fn`` must be deterministic), checks that the events already in the target are the
ones it would write, appends the rest and switches. The result is the same as that of an
uninterrupted run. A stream that gains events during its copy is not switched: the run
fails with `TransformConflict`, and a rerun picks the new events up.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from .._events import Event, NewEvent, RecordedEvent
from ..errors import InvalidInput, TransformConflict
from ..store._common import check_stream_id
from ..store.ports import SupportsTransform, capability
from ..store.protocol import EventStore, StreamInfo

__all__ = [
    "TRANSFORM_NAMESPACE",
    "Output",
    "StreamReport",
    "TransformFn",
    "TransformProgress",
    "TransformReport",
    "transform",
    "transformed_event_id",
]

TRANSFORM_NAMESPACE = uuid.UUID("0b6f5a8e-3c1d-5e7f-9a2b-4c6d8e0f1a3b")
"""The UUID namespace of the ids a transformation gives the events it makes."""

Output = Event | NewEvent | RecordedEvent
"""What a transform function may return for an event (one of these, or an iterable)."""

TransformFn = Callable[[RecordedEvent], "Iterable[Output] | Output | None"]
"""Called once per source event, in stream order: the events to write in its place."""

BATCH_SIZE = 500
"""Events appended to a target stream per append."""

Status = Literal["switched", "already switched", "dry run", "skipped"]


@dataclass
class StreamReport:
    """What a transformation did (or, in a dry run, would do) to one stream."""

    source: str
    target: str
    status: Status
    """``switched``; ``already switched`` (an earlier run finished it); ``dry run``;
    ``skipped`` (a category run found it replaced by another stream already)."""
    events: int = 0
    """Source events read."""
    copied: int = 0
    """Source events written unchanged (same id, data, metadata and recorded time)."""
    rewritten: int = 0
    """Source events replaced by one other event."""
    split: int = 0
    """Source events replaced by two or more events."""
    dropped: int = 0
    """Source events that produced nothing (a merge's earlier parts count here)."""
    written: int = 0
    """Events in the target stream once done (including those an earlier run wrote)."""
    resumed: int = 0
    """Events an earlier, interrupted run had already written to the target."""

    @property
    def changed(self) -> bool:
        """Whether the target differs from a plain copy of the source."""
        return bool(self.rewritten or self.split or self.dropped)


@dataclass
class TransformReport:
    """A transformation's outcome, one `StreamReport` per stream, in the order done."""

    dry_run: bool
    streams: list[StreamReport] = field(default_factory=list)

    def total(self, name: str) -> int:
        """The sum of one `StreamReport` count (``events``, ``copied``, ``split``, …)."""
        return sum(int(getattr(s, name)) for s in self.streams)


@dataclass(frozen=True)
class TransformProgress:
    """How far a transformation is: reported to ``transform(progress=...)`` once at the
    start and after each event and each stream."""

    streams: int
    """Streams to transform."""
    events: int
    """Source events in those streams."""
    streams_done: int
    events_done: int


def transformed_event_id(source_event_id: uuid.UUID, n: int) -> uuid.UUID:
    """The id of the ``n``-th event (from 0) a transformation makes from a source event."""
    return uuid.uuid5(TRANSFORM_NAMESPACE, f"{source_event_id}/{n}")


async def transform(
    store: EventStore,
    source: str | None = None,
    *,
    category: str | None = None,
    target: Callable[[str], str],
    fn: TransformFn,
    dry_run: bool = False,
    progress: Callable[[TransformProgress], None] | None = None,
    batch_size: int = BATCH_SIZE,
) -> TransformReport:
    """Copy ``source`` (or every stream of ``category``) through ``fn`` into
    ``target(stream_id)``, then switch readers to the copy; see the module's docs.

    ``dry_run`` reads and counts but writes nothing. ``progress`` is called with a
    `TransformProgress` as the work advances (the CLI draws it as a bar). In a category
    run, streams that are targets of other streams in it are left alone, and so are
    streams already replaced by another stream. Raises `TransformConflict` when a stream
    moved during its copy (rerun to finish), `InvalidInput` for bad arguments, and
    whatever ``fn`` raises (nothing is switched for that stream; a rerun resumes).
    """
    if (source is None) == (category is None):
        raise InvalidInput("pass a source stream id or category=..., not both or neither")
    if not callable(fn) or not callable(target):
        raise InvalidInput("fn and target must be callables")
    if progress is not None and not callable(progress):
        raise InvalidInput(
            f"progress must be a callable taking a TransformProgress, got {progress!r}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInput(f"batch_size must be an int >= 1, got {batch_size!r}")
    hooks = _hooks(store)
    if source is not None:
        check_stream_id(source)
        plan = [await hooks.stream_info(source)]
        if plan[0].version == 0:
            raise InvalidInput(f"stream {source!r} has no events; there is nothing to transform")
    else:
        assert category is not None
        listed = [info async for info in store.streams(category=category)]
        # A rerun lists the targets an earlier run created (when they share the
        # category): they are outputs, not inputs.
        targets = {_target_of(target, info.stream_id) for info in listed}
        plan = [info for info in listed if info.stream_id not in targets]
    report = TransformReport(dry_run)
    bar = _Tracker(progress, len(plan), sum(info.version for info in plan))
    bar.report()
    for info in plan:
        dest = _target_of(target, info.stream_id)
        if info.replaced_by is not None and info.replaced_by != dest and category is not None:
            report.streams.append(StreamReport(info.stream_id, dest, "skipped"))
        else:
            one = _StreamCopy(store, hooks, info, dest, fn, dry_run, batch_size, bar)
            report.streams.append(await one.run())
        bar.stream_done()
    return report


def _hooks(store: EventStore) -> SupportsTransform:
    return capability(
        store,
        SupportsTransform,
        hint="use the memory, sqlite or postgresql backend to transform streams",
    )


def _target_of(target: Callable[[str], str], stream_id: str) -> str:
    found = target(stream_id)
    try:
        check_stream_id(found)
    except InvalidInput as exc:
        raise InvalidInput(f"target({stream_id!r}) returned a bad stream id: {exc}") from None
    if found == stream_id:
        raise InvalidInput(
            f"target({stream_id!r}) returned the source stream's own id; a transformation "
            f"writes a new stream, e.g. {stream_id + '.v2'!r}"
        )
    return found


class _StreamCopy:
    """One stream's copy: read, transform, skip what a previous run wrote, append, switch."""

    def __init__(
        self,
        store: EventStore,
        hooks: SupportsTransform,
        info: StreamInfo,
        target: str,
        fn: TransformFn,
        dry_run: bool,
        batch_size: int,
        bar: _Tracker,
    ) -> None:
        self.store = store
        self.hooks = hooks
        self.info = info
        self.target = target
        self.fn = fn
        self.dry_run = dry_run
        self.batch_size = batch_size
        self.bar = bar

    async def run(self) -> StreamReport:
        info, target = self.info, self.target
        report = StreamReport(info.stream_id, target, "dry run" if self.dry_run else "switched")
        if info.replaced_by == target:
            report.status = "already switched"
            report.written = report.resumed = (await self.hooks.stream_info(target)).version
            self.bar.events_done(info.version)
            return report
        if info.replaced_by is not None:
            raise TransformConflict(
                info.stream_id,
                target,
                info.version,
                info.version,
                f"it was already replaced by {info.replaced_by!r}",
                f"transform {info.replaced_by!r} instead (a rerun fails the same way)",
            )
        dest = await self.hooks.stream_info(target)
        if dest.replaced_by is not None:
            raise TransformConflict(
                info.stream_id,
                target,
                info.version,
                info.version,
                f"the target {target!r} was itself replaced by {dest.replaced_by!r}",
                "pick a target that is a new stream (a rerun fails the same way)",
            )
        report.resumed = dest.version
        existing = self._existing()
        batch: list[NewEvent] = []
        stamps: list[int] = []
        written = 0
        try:
            async for event in self.store.read_stream(
                info.stream_id, limit=info.version, follow_alias=False
            ):
                outputs = self._outputs(event, report)
                for item, recorded_us in outputs:
                    written += 1
                    if written <= dest.version:
                        await self._check_existing(existing, written, item)
                    elif not self.dry_run:
                        batch.append(item)
                        stamps.append(recorded_us)
                if len(batch) >= self.batch_size:
                    await self._flush(batch, stamps, written - len(batch))
                self.bar.events_done(1)
        finally:
            await existing.aclose()
        if report.events != info.version:
            raise TransformConflict(
                info.stream_id,
                target,
                info.version,
                report.events,
                f"only {report.events} of its {info.version} events could be read",
            )
        if written < dest.version:
            raise TransformConflict(
                info.stream_id,
                target,
                info.version,
                info.version,
                f"the target {target!r} holds {dest.version} events, more than the "
                f"{written} this transformation makes",
                "pick a target that is a new stream (a rerun fails the same way)",
            )
        report.written = written
        if self.dry_run:
            return report
        if batch:
            await self._flush(batch, stamps, written - len(batch))
        await self.hooks.replace_stream(
            info.stream_id, target, version=info.version, target_version=written
        )
        return report

    def _outputs(self, event: RecordedEvent, report: StreamReport) -> list[tuple[NewEvent, int]]:
        """Run ``fn`` on one source event; count what it did; the events to write."""
        result = self.fn(event)
        items: list[Any]
        if result is None:
            items = []
        elif isinstance(result, (Event, NewEvent, RecordedEvent)):
            items = [result]
        elif isinstance(result, Iterable) and not isinstance(result, (str, bytes, dict)):
            items = list(result)
        else:
            raise InvalidInput(
                f"the transform function returned {type(result).__name__} for "
                f"{event.stream_id}@{event.version}; return None, an event, or a list of "
                "events (Event, NewEvent or RecordedEvent)"
            )
        report.events += 1
        if not items:
            report.dropped += 1
        elif len(items) > 1:
            report.split += 1
        elif items[0] is event:
            report.copied += 1
        else:
            report.rewritten += 1
        return [self._convert(event, n, item) for n, item in enumerate(items)]

    def _convert(self, source: RecordedEvent, n: int, item: object) -> tuple[NewEvent, int]:
        if isinstance(item, RecordedEvent):
            return _copy_of(item), item.recorded_us
        metadata = source.metadata
        event_id = transformed_event_id(source.event_id, n)
        if isinstance(item, Event):
            return NewEvent(item, event_id=event_id, metadata=metadata), source.recorded_us
        if isinstance(item, NewEvent):
            made = NewEvent(
                item.data,
                event_id=item.event_id or event_id,
                type=item.type,
                metadata=item.metadata if item.metadata is not None else metadata,
                correlation_id=item.correlation_id,
                causation_id=item.causation_id,
                schema_version=item.schema_version,
            )
            return made, source.recorded_us
        raise InvalidInput(
            f"the transform function returned a {type(item).__name__} among the events for "
            f"{source.stream_id}@{source.version}; return Event, NewEvent or RecordedEvent"
        )

    async def _existing(self) -> AsyncGenerator[RecordedEvent, None]:
        async for event in self.store.read_stream(self.target, follow_alias=False):
            yield event

    async def _check_existing(
        self, existing: AsyncIterator[RecordedEvent], at: int, item: NewEvent
    ) -> None:
        """An event an earlier run wrote must be the one this run would write there."""
        found = await anext(existing, None)
        if found is None or found.event_id != item.event_id:
            raise TransformConflict(
                self.info.stream_id,
                self.target,
                self.info.version,
                self.info.version,
                f"the target {self.target!r} already holds an event at version {at} that "
                f"this transformation does not make ({found.event_id if found else 'none'}, "
                f"expected {item.event_id})",
                "make the transform function deterministic and pick a target that is a new "
                "stream (a rerun fails the same way)",
            )

    async def _flush(self, batch: list[NewEvent], stamps: list[int], version: int) -> None:
        await self.hooks.append_copies(
            self.target, list(batch), expected_version=version, recorded_us=list(stamps)
        )
        batch.clear()
        stamps.clear()


def _copy_of(event: RecordedEvent) -> NewEvent:
    """A stored event as it is to be appended again: same id, payload and metadata."""
    data = event.data
    if isinstance(data, Event):
        return NewEvent(data, event_id=event.event_id, metadata=event.metadata)
    return NewEvent(
        data,
        event_id=event.event_id,
        type=event.type,
        metadata=event.metadata,
        schema_version=event.schema_version,
    )


class _Tracker:
    """Counts streams and events done and reports them to ``progress`` (if any)."""

    def __init__(
        self, progress: Callable[[TransformProgress], None] | None, streams: int, events: int
    ) -> None:
        self._progress = progress
        self._streams = streams
        self._events = events
        self._streams_done = 0
        self._events_done = 0

    def report(self) -> None:
        if self._progress is not None:
            self._progress(
                TransformProgress(
                    self._streams, self._events, self._streams_done, self._events_done
                )
            )

    def stream_done(self) -> None:
        self._streams_done += 1
        self.report()

    def events_done(self, n: int) -> None:
        self._events_done += n
        self.report()
