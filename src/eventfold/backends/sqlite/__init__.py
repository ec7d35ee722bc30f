"""The SQLite backend (``sqlite:///path.db``): events, snapshots and read models in one
file, written by one writer thread; inline projections run on that writer, and other
processes' appends are noticed by polling the file's ``data_version``."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qsl, urlsplit

from ...codec import Codec
from ...errors import ConfigurationError
from ...projections.definition import ProjectionBase
from ...projections.store import ReadModelStore
from ...store._registry import Backend, own_store
from ...store.ports import TransactionParticipant
from ...store.protocol import EventStore
from ._inline import SQLiteInline
from ._read_models import SQLiteReadModelStore
from ._store import SQLiteStore
from ._wakeups import poll_data_version

__all__ = ["BACKEND", "SQLiteReadModelStore", "SQLiteStore"]


def _open_store(url: str, codec: Codec, read_only: bool) -> EventStore:
    parts = urlsplit(url)
    path = parts.path
    if parts.netloc not in ("", "localhost"):
        raise ConfigurationError(
            f"sqlite URL {url!r} names a host; use sqlite:///relative.db or "
            "sqlite:////absolute/path.db"
        )
    path = path[1:] if path.startswith("/") else path
    if not path:
        raise ConfigurationError(f"sqlite URL {url!r} names no file; use sqlite:///eventfold.db")
    options = dict(parse_qsl(parts.query))
    synchronous = options.pop("synchronous", "FULL").upper()
    if synchronous not in ("FULL", "NORMAL"):
        raise ConfigurationError(
            f"sqlite synchronous={synchronous!r} is not supported; use FULL (default) or NORMAL"
        )
    if options:
        raise ConfigurationError(
            f"unknown sqlite URL options {sorted(options)}; the only one is synchronous"
        )
    return SQLiteStore(path, codec, synchronous=synchronous, read_only=read_only)


def _read_model_store(store: EventStore) -> ReadModelStore:
    return SQLiteReadModelStore(own_store(store, SQLiteStore))


async def _inline_participant(
    store: EventStore, projections: Sequence[ProjectionBase]
) -> TransactionParticipant:
    return SQLiteInline(list(projections))


BACKEND = Backend(
    name="sqlite",
    open=_open_store,
    read_models=_read_model_store,
    wake_ups=poll_data_version,
    inline=_inline_participant,
)
"""This backend's entry in the registration table."""
