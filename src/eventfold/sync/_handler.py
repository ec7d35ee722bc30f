"""The blocking command handler, over `eventfold.CommandHandler`."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from .._events import Event
from ..store.ports import Snapshot, SnapshotStore
from ..write import CommandHandler as AsyncCommandHandler
from ..write import CommandResult, Decider, HandlerOptions, Loaded
from ._store import EventStore

__all__ = ["CommandHandler"]

C = TypeVar("C")
S = TypeVar("S")
E = TypeVar("E", bound=Event)


class CommandHandler(Generic[C, S, E]):
    """`eventfold.CommandHandler` for blocking code: load, decide, append at the version
    read, retry on conflict; each call blocks until the command is done.

    The decider runs on the store's thread. Any number of threads may share one handler
    (its cache is touched on that thread only).
    """

    def __init__(
        self,
        store: EventStore,
        decider: Decider[C, S, E],
        *,
        options: HandlerOptions | None = None,
        snapshot_store: SnapshotStore | None = None,
    ) -> None:
        self.store = store
        self.async_handler: AsyncCommandHandler[C, S, E] = AsyncCommandHandler(
            store.async_store, decider, options=options, snapshot_store=snapshot_store
        )
        """The async handler underneath."""

    @property
    def decider(self) -> Decider[C, S, E]:
        return self.async_handler.decider

    @property
    def options(self) -> HandlerOptions:
        return self.async_handler.options

    def handle(
        self,
        stream_id: str,
        command: C,
        *,
        command_id: str | uuid.UUID | None = None,
        correlation_id: str | uuid.UUID | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> CommandResult[S, E]:
        """See `eventfold.CommandHandler.handle`."""
        return self.store.run(
            self.async_handler.handle(
                stream_id,
                command,
                command_id=command_id,
                correlation_id=correlation_id,
                metadata=metadata,
            )
        )

    def load(
        self, stream_id: str, *, at_version: int | None = None, as_of: dt.datetime | None = None
    ) -> S:
        """See `eventfold.CommandHandler.load`."""
        return self.store.run(
            self.async_handler.load(stream_id, at_version=at_version, as_of=as_of)
        )

    def load_details(
        self, stream_id: str, *, at_version: int | None = None, as_of: dt.datetime | None = None
    ) -> Loaded[S]:
        """See `eventfold.CommandHandler.load_details`."""
        return self.store.run(
            self.async_handler.load_details(stream_id, at_version=at_version, as_of=as_of)
        )

    def snapshot(self, stream_id: str) -> Snapshot | None:
        """See `eventfold.CommandHandler.snapshot`."""
        return self.store.run(self.async_handler.snapshot(stream_id))
