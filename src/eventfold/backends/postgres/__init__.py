"""The PostgreSQL backend (``postgresql://``): events, snapshots and read models in one
schema on a connection pool; inline projections run in the append's transaction, leases
are session advisory locks, and wake-ups come by ``LISTEN``. Needs psycopg
(``pip install 'eventfold[postgres]'``)."""

from __future__ import annotations

from collections.abc import Sequence

from ...codec import Codec
from ...projections.definition import ProjectionBase
from ...projections.inline import INLINE_PARTICIPANT
from ...projections.leases import Leases
from ...projections.store import ReadModelStore
from ...store._registry import Backend, own_store
from ...store.ports import TransactionParticipant
from ...store.protocol import EventStore
from ._inline import PostgresInline
from ._leases import PostgresLeases
from ._read_models import PostgresReadModelStore
from ._store import DEFAULT_SCHEMA, PostgresStore
from ._wakeups import listen

__all__ = [
    "BACKEND",
    "DEFAULT_SCHEMA",
    "PostgresLeases",
    "PostgresReadModelStore",
    "PostgresStore",
]


def _open_store(url: str, codec: Codec, read_only: bool) -> EventStore:
    return PostgresStore(url, codec, read_only=read_only)


def _read_model_store(store: EventStore) -> ReadModelStore:
    return PostgresReadModelStore(own_store(store, PostgresStore))


def _leases_of(store: EventStore) -> Leases:
    return PostgresLeases(store)


async def _inline_participant(
    store: EventStore, projections: Sequence[ProjectionBase]
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
)
"""This backend's entry in the registration table."""
