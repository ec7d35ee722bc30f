"""This backend's entry in the registration table (`eventfold.store.register_backend`):
how to open its store and make what goes beside it."""

from __future__ import annotations

from ..._codec import Codec
from ...store._registry import Backend
from ...store.ports import ReadModelStore
from ...store.protocol import EventStore
from ._read_models import MemoryReadModelStore
from ._store import MemoryStore

__all__ = ["BACKEND"]


def _open_store(url: str, codec: Codec, read_only: bool) -> EventStore:
    return MemoryStore(codec, read_only=read_only)


def _read_model_store(store: EventStore) -> ReadModelStore:
    # Each call makes another one: memory read models live with the object, not the store.
    return MemoryReadModelStore()


BACKEND = Backend(name="memory", open=_open_store, read_models=_read_model_store)
"""This backend's entry in the registration table."""
