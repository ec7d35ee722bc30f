"""The PostgreSQL backend (``postgresql://``): events, snapshots and read models in one
schema on a connection pool; inline projections run in the append's transaction, leases
are session advisory locks, and wake-ups come by ``LISTEN``. Needs psycopg
(``pip install 'eventfold[postgres]'``)."""

from __future__ import annotations

from ._leases import PostgresLeases
from ._read_models import PostgresReadModelStore
from ._store import DEFAULT_SCHEMA, PostgresStore

__all__ = [
    "DEFAULT_SCHEMA",
    "PostgresLeases",
    "PostgresReadModelStore",
    "PostgresStore",
]
