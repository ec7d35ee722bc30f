"""The projections' read side for blocking code: read models, views, status, `wait_for`,
and a daemon that runs on the store's thread."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from types import TracebackType
from typing import Generic, Self, TypeVar

from .. import projections as _async
from .._position import Position
from ..projections import (
    DEFAULT_COUNT_LIMIT,
    Checkpoint,
    DaemonOptions,
    DocumentProjection,
    Leases,
    Notifier,
    ParkedEvent,
    ProjectionBase,
    ProjectionStatus,
    ReplayResult,
    VersionRecord,
)
from ._store import EventStore

__all__ = [
    "DocumentView",
    "LiveView",
    "ProjectionDaemon",
    "ReadModelStore",
    "live",
    "projection_status",
    "projection_statuses",
    "read_models_for",
    "wait_for",
]

D = TypeVar("D")


class ReadModelStore:
    """The read methods of an `eventfold.projections.ReadModelStore`, blocking, on the
    thread of ``store`` (the event store it lives beside; it must be open)."""

    def __init__(self, store: EventStore, models: _async.ReadModelStore) -> None:
        self.store = store
        self.async_models = models
        """The async read-model store underneath."""
        self.backend = models.backend

    def get_documents(self, name: str, version: int, ids: Sequence[str]) -> dict[str, bytes]:
        """See `eventfold.projections.ReadModelStore.get_documents`."""
        return self.store.run(self.async_models.get_documents(name, version, ids))

    def iter_documents(
        self, name: str, version: int, *, after: str | None = None, limit: int | None = None
    ) -> Iterator[tuple[str, bytes]]:
        """See `eventfold.projections.ReadModelStore.iter_documents`."""
        return self.store.iterate(
            self.async_models.iter_documents(name, version, after=after, limit=limit)
        )

    def checkpoints(self, name: str, version: int) -> list[Checkpoint]:
        """See `eventfold.projections.ReadModelStore.checkpoints`."""
        return self.store.run(self.async_models.checkpoints(name, version))

    def active_version(self, name: str) -> int | None:
        """See `eventfold.projections.ReadModelStore.active_version`."""
        return self.store.run(self.async_models.active_version(name))

    def versions(self, name: str | None = None) -> list[VersionRecord]:
        """See `eventfold.projections.ReadModelStore.versions`."""
        return self.store.run(self.async_models.versions(name))

    def parked(self, name: str, version: int) -> list[ParkedEvent]:
        """See `eventfold.projections.ReadModelStore.parked`."""
        return self.store.run(self.async_models.parked(name, version))


def read_models_for(store: EventStore) -> ReadModelStore:
    """The read-model store beside ``store``'s events; see
    `eventfold.projections.read_models_for` (memory: a new, empty one each call)."""
    return ReadModelStore(store, _async.read_models_for(store.async_store))


class DocumentView(Generic[D]):
    """`eventfold.projections.DocumentView` for blocking code: a document projection's
    stored documents, with the same freshness options (``after=``, ``max_lag=``,
    `StaleRead` after ``timeout``)."""

    def __init__(
        self,
        models: ReadModelStore,
        projection: DocumentProjection[D],
        *,
        store: EventStore | None = None,
        version: int | None = None,
    ) -> None:
        self.models = models
        self.projection = projection
        self.async_view = _async.DocumentView(
            models.async_models,
            projection,
            store=store.async_store if store is not None else None,
            version=version,
        )
        """The async view underneath."""

    def version(self) -> int | None:
        """See `eventfold.projections.DocumentView.version`."""
        return self.models.store.run(self.async_view.version())

    def get(
        self,
        doc_id: str,
        *,
        after: Position | str | None = None,
        max_lag: int | None = None,
        timeout: float = 5.0,
    ) -> D | None:
        """See `eventfold.projections.DocumentView.get`."""
        return self.models.store.run(
            self.async_view.get(doc_id, after=after, max_lag=max_lag, timeout=timeout)
        )

    def get_many(
        self,
        ids: Sequence[str],
        *,
        after: Position | str | None = None,
        max_lag: int | None = None,
        timeout: float = 5.0,
    ) -> dict[str, D]:
        """See `eventfold.projections.DocumentView.get_many`."""
        return self.models.store.run(
            self.async_view.get_many(ids, after=after, max_lag=max_lag, timeout=timeout)
        )

    def items(
        self, *, after: str | None = None, limit: int | None = None
    ) -> Iterator[tuple[str, D]]:
        """See `eventfold.projections.DocumentView.items`."""
        return self.models.store.iterate(self.async_view.items(after=after, limit=limit))

    def all(self) -> dict[str, D]:
        """See `eventfold.projections.DocumentView.all`."""
        return self.models.store.run(self.async_view.all())


class LiveView(Generic[D]):
    """`eventfold.projections.LiveView` for blocking code: a document projection folded
    from the events on demand, nothing stored."""

    def __init__(self, store: EventStore, projection: DocumentProjection[D]) -> None:
        self.store = store
        self.projection = projection
        self.async_view = _async.live(store.async_store, projection)
        """The async view underneath."""

    def get(self, doc_id: str, *, at: Position | str | None = None) -> D | None:
        """See `eventfold.projections.LiveView.get`."""
        return self.store.run(self.async_view.get(doc_id, at=at))

    def all(self, *, at: Position | str | None = None) -> dict[str, D]:
        """See `eventfold.projections.LiveView.all`."""
        return self.store.run(self.async_view.all(at=at))


def live(store: EventStore, projection: DocumentProjection[D]) -> LiveView[D]:
    """See `eventfold.projections._live`."""
    return LiveView(store, projection)


def wait_for(
    models: ReadModelStore,
    projection: ProjectionBase,
    position: Position | str | None = None,
    *,
    store: EventStore | None = None,
    max_lag: int | None = None,
    timeout: float = 5.0,
    version: int | None = None,
    poll_interval: float = 0.05,
) -> Position:
    """Block until the version readers read has applied everything up to ``position``
    (and, with ``max_lag``, is that close to the head); see
    `eventfold.projections.wait_for`. Raises `StaleRead` after ``timeout`` seconds."""
    return models.store.run(
        _async.wait_for(
            models.async_models,
            projection,
            position,
            store=store.async_store if store is not None else None,
            max_lag=max_lag,
            timeout=timeout,
            version=version,
            poll_interval=poll_interval,
        )
    )


def projection_status(
    store: EventStore,
    models: ReadModelStore,
    projection: ProjectionBase,
    *,
    version: int | None = None,
    count_limit: int = DEFAULT_COUNT_LIMIT,
) -> ProjectionStatus:
    """See `eventfold.projections.projection_status`."""
    return store.run(
        _async.projection_status(
            store.async_store,
            models.async_models,
            projection,
            version=version,
            count_limit=count_limit,
        )
    )


def projection_statuses(
    store: EventStore,
    models: ReadModelStore,
    projections: Sequence[ProjectionBase],
    *,
    count_limit: int = DEFAULT_COUNT_LIMIT,
) -> list[ProjectionStatus]:
    """See `eventfold.projections.projection_statuses`."""
    return store.run(
        _async.projection_statuses(
            store.async_store, models.async_models, projections, count_limit=count_limit
        )
    )


class ProjectionDaemon:
    """`eventfold.ProjectionDaemon` for blocking code: `start` returns at once and the
    workers run on the store's thread until `stop` (or the store's last `close`).

    For a script or a test; a web application usually leaves projections to their own
    process (``eventfold projections run``) and only reads here.
    """

    def __init__(
        self,
        store: EventStore,
        models: ReadModelStore,
        projections: Sequence[ProjectionBase],
        *,
        options: DaemonOptions | None = None,
        leases: Leases | None = None,
        notifier: Notifier | None = None,
        owner: str | None = None,
    ) -> None:
        self.store = store
        self.models = models
        self.async_daemon = _async.ProjectionDaemon(
            store.async_store,
            models.async_models,
            projections,
            options=options,
            leases=leases,
            notifier=notifier,
            owner=owner,
        )
        """The async daemon underneath."""

    @property
    def running(self) -> bool:
        """Whether `start` ran and `stop` has not."""
        return self.async_daemon.running

    def start(self) -> None:
        """See `eventfold.ProjectionDaemon.start`."""
        self.store.run(self.async_daemon.start())

    def stop(self) -> list[str]:
        """See `eventfold.ProjectionDaemon.stop`."""
        return self.store.run(self.async_daemon.stop())

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def status(self, name: str, *, count_limit: int = DEFAULT_COUNT_LIMIT) -> ProjectionStatus:
        """See `eventfold.ProjectionDaemon.status`."""
        return self.store.run(self.async_daemon.status(name, count_limit=count_limit))

    def statuses(self) -> list[ProjectionStatus]:
        """See `eventfold.ProjectionDaemon.statuses`."""
        return self.store.run(self.async_daemon.statuses())

    def wait_for(
        self,
        name: str,
        position: Position | str | None = None,
        *,
        max_lag: int | None = None,
        timeout: float = 5.0,
        version: int | None = None,
    ) -> Position:
        """See `eventfold.ProjectionDaemon.wait_for`."""
        return self.store.run(
            self.async_daemon.wait_for(
                name, position, max_lag=max_lag, timeout=timeout, version=version
            )
        )

    def catch_up(self, until: Position | str | None = None, *, timeout: float = 60.0) -> Position:
        """See `eventfold.ProjectionDaemon.catch_up`."""
        return self.store.run(self.async_daemon.catch_up(until, timeout=timeout))

    def parked(self, name: str) -> list[ParkedEvent]:
        """See `eventfold.ProjectionDaemon.parked`."""
        return self.store.run(self.async_daemon.parked(name))

    def replay_parked(
        self, name: str, positions: Collection[Position] | None = None
    ) -> ReplayResult:
        """See `eventfold.ProjectionDaemon.replay_parked`."""
        return self.store.run(self.async_daemon.replay_parked(name, positions))
