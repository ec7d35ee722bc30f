"""This backend's entry in the registration table (`eventfold.store.register_backend`):
how to open its store and make what goes beside it."""

from __future__ import annotations

from collections.abc import Sequence

from ..._codec import Codec
from ...store._registry import Backend, own_store
from ...store.ports import (
    INLINE_PARTICIPANT,
    InboxDatabase,
    InlineProjection,
    Leases,
    ReadModelStore,
    TransactionParticipant,
)
from ...store.protocol import EventStore
from ._inbox import PostgresInbox
from ._inline import PostgresInline
from ._leases import PostgresLeases
from ._read_models import PostgresReadModelStore
from ._store import PostgresStore
from ._wakeups import listen

__all__ = ["BACKEND"]


def _open_store(url: str, codec: Codec, read_only: bool) -> EventStore:
    return PostgresStore(url, codec, read_only=read_only)


def _inbox(url: str, table: str) -> InboxDatabase:
    return PostgresInbox(url, table)


def _read_model_store(store: EventStore) -> ReadModelStore:
    return PostgresReadModelStore(own_store(store, PostgresStore))


def _leases_of(store: EventStore) -> Leases:
    return PostgresLeases(store)


async def _inline_participant(
    store: EventStore, projections: Sequence[InlineProjection]
) -> TransactionParticipant:
    participant = PostgresInline(INLINE_PARTICIPANT, own_store(store, PostgresStore), projections)
    await participant.prepare()
    return participant


BACKEND = Backend(
    name="postgresql",
    open=_open_store,
    read_models=_read_model_store,
    leases=_leases_of,
    wake_ups=listen,
    inline=_inline_participant,
    inbox=_inbox,
)
"""This backend's entry in the registration table."""
