"""Reading a document projection's stored model: ``doc = await view.get(id)``.

A view reads the version the readers' pointer names (during a blue/green rebuild, the
old complete one), and can demand freshness: ``after=`` an append's position
(read-your-writes) and ``max_lag=`` events, failing with `StaleRead` after ``timeout``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Generic, TypeVar

from .._position import Position
from ..store.ports import ReadModelStore
from ..store.protocol import EventStore
from ._definition import DocumentProjection
from ._status import wait_for_version
from ._subscription import WakeUp

__all__ = ["DocumentView"]

D = TypeVar("D")


class DocumentView(Generic[D]):
    """The stored documents of a `DocumentProjection`.

    ``store`` is needed only for ``max_lag``; ``wake`` (a daemon's
    ``committed.subscribe()``) makes freshness waits in the daemon's process return as
    soon as a batch commits. ``version`` pins one version instead of the active one.
    """

    def __init__(
        self,
        models: ReadModelStore,
        projection: DocumentProjection[D],
        *,
        store: EventStore | None = None,
        version: int | None = None,
        wake: WakeUp | None = None,
    ) -> None:
        self.models = models
        self.projection = projection
        self.store = store
        self.pinned = version
        self.wake = wake

    async def version(self) -> int | None:
        """The version this view reads now (None before the first one is built)."""
        if self.pinned is not None:
            return self.pinned
        return await self.models.active_version(self.projection.name)

    async def _fresh_version(
        self,
        after: Position | str | None,
        max_lag: int | None,
        timeout: float,  # noqa: ASYNC109
    ) -> int | None:
        if after is None and max_lag is None:
            return await self.version()
        version, _ = await wait_for_version(
            self.models,
            self.projection,
            after,
            store=self.store,
            max_lag=max_lag,
            timeout=timeout,
            version=self.pinned,
            wake=self.wake,
        )
        return version

    async def get(
        self,
        doc_id: str,
        *,
        after: Position | str | None = None,
        max_lag: int | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - StaleRead reports it
    ) -> D | None:
        """The document, or None; with ``after``/``max_lag``, once fresh enough."""
        found = await self.get_many([doc_id], after=after, max_lag=max_lag, timeout=timeout)
        return found.get(doc_id)

    async def get_many(
        self,
        ids: Sequence[str],
        *,
        after: Position | str | None = None,
        max_lag: int | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - StaleRead reports it
    ) -> dict[str, D]:
        """The documents with these ids that exist, by id."""
        version = await self._fresh_version(after, max_lag, timeout)
        if version is None:
            return {}
        found = await self.models.get_documents(self.projection.name, version, list(ids))
        return {i: self.projection.decode(d) for i, d in found.items()}

    async def items(
        self, *, after: str | None = None, limit: int | None = None
    ) -> AsyncIterator[tuple[str, D]]:
        """Every document as ``(id, document)``, ordered by id, paged."""
        version = await self.version()
        if version is None:
            return
        p = self.projection
        async for doc_id, data in self.models.iter_documents(
            p.name, version, after=after, limit=limit
        ):
            yield doc_id, p.decode(data)

    async def all(self) -> dict[str, D]:
        """Every document, by id (for small models and tests)."""
        return {doc_id: doc async for doc_id, doc in self.items()}
