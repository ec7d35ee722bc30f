"""Live projections: fold on demand from the log, store nothing.

The same `DocumentProjection` that the daemon runs asynchronously answers here from the
events themselves, so a live read and a stored read agree::

    doc = await live(store, order_summary).get("order-1")
    then = await live(store, order_summary).get("order-1", at=Position(0, 120))

``at`` is inspection: the document as it stood once the log reached that position. A
projection keyed by stream id folds one stream (``read_stream``); any other reads the
log filtered by its event types. `replay` runs any projection, document or free-form,
over the log into a fresh in-memory read model: a clean rebuild to compare against.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from .._events import RecordedEvent
from .._position import Position
from ..backends.memory import MemoryReadModelStore
from ..store.protocol import EventStore
from ._definition import DocumentProjection, ProjectionBase
from ._subscription import DEFAULT_BATCH_SIZE, Subscription, aclose

__all__ = ["LiveView", "live", "replay"]

D = TypeVar("D")


class LiveView(Generic[D]):
    """A document projection answered from the events, nothing stored."""

    def __init__(
        self, store: EventStore, projection: DocumentProjection[D], *, page: int = 500
    ) -> None:
        self.store = store
        self.projection = projection
        self.page = page

    async def get(self, doc_id: str, *, at: Position | str | None = None) -> D | None:
        """The document now, or as of ``at`` (a global position); None if it has none."""
        bound = None if at is None else Position.parse(at)
        p = self.projection
        docs: dict[str, D | None] = {}
        if p.per_stream:
            if p.categories is not None and doc_id.partition("-")[0] not in p.categories:
                return None
            reader = self.store.read_stream(doc_id)
        else:
            reader = self.store.read_all(types=p.event_types, categories=p.categories)
        async for chunk in self._chunks(reader, bound):
            p.fold(docs, chunk, only=doc_id)
        return self._as_stored(docs.get(doc_id))

    async def all(self, *, at: Position | str | None = None) -> dict[str, D]:
        """Every document now, or as of ``at``, by id (reads the whole filtered log)."""
        bound = None if at is None else Position.parse(at)
        p = self.projection
        docs: dict[str, D | None] = {}
        reader = self.store.read_all(types=p.event_types, categories=p.categories)
        async for chunk in self._chunks(reader, bound):
            p.fold(docs, chunk)
        found = {i: self._as_stored(d) for i, d in docs.items()}
        return {i: d for i, d in sorted(found.items()) if d is not None}

    async def _chunks(
        self, reader: AsyncIterator[RecordedEvent], bound: Position | None
    ) -> AsyncIterator[list[RecordedEvent]]:
        chunk: list[RecordedEvent] = []
        try:
            async for event in reader:
                # Both readers go in log order (a stream's versions are in log order),
                # so the first event past the bound ends the fold.
                if bound is not None and event.position > bound:
                    break
                chunk.append(event)
                if len(chunk) >= self.page:
                    yield chunk
                    chunk = []
        finally:
            await aclose(reader)
        if chunk:
            yield chunk

    def _as_stored(self, doc: D | None) -> D | None:
        # Through the codec once, so a live document is exactly what the daemon would
        # have stored and read back (tuples become lists, and so on).
        p = self.projection
        return None if doc is None else p.decode(p.encode(doc))


def live(store: EventStore, projection: DocumentProjection[D]) -> LiveView[D]:
    """A live view of ``projection`` over ``store``."""
    return LiveView(store, projection)


async def replay(
    store: EventStore,
    projection: ProjectionBase,
    *,
    at: Position | str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> MemoryReadModelStore:
    """Run ``projection`` over the log (up to ``at``) into a fresh in-memory read model.

    The result holds the definition's version, active, with one checkpoint (partition
    0): a clean rebuild, for comparisons, inspection and tests. Nothing is stored in
    the event store's database.
    """
    bound = None if at is None else Position.parse(at)
    models = MemoryReadModelStore()
    name, version = projection.name, projection.version
    async with models.transaction() as tx:
        await projection.run_setup(tx)
        await tx.activate(name, version)
    checkpoint: Position | None = None
    subscription = Subscription(
        store,
        types=projection.event_types,
        categories=projection.categories,
        batch_size=batch_size,
        follow=False,
    )
    async for batch in subscription:
        events, through = batch.events, batch.through
        if bound is not None and through > bound:
            events = [e for e in events if e.position <= bound]
            through = max(bound, checkpoint) if checkpoint is not None else bound
        async with models.transaction() as tx:
            await projection.apply(events, tx)
            await tx.set_checkpoint(name, version, 0, through, expected=checkpoint)
        checkpoint = through
        if bound is not None and batch.through >= bound:
            break
    return models
