"""`read_models_for`: the read-model store that belongs beside an event store."""

from __future__ import annotations

from ..errors import ConfigurationError
from ..store import backend_of
from ..store.ports import ReadModelStore
from ..store.protocol import EventStore

__all__ = ["read_models_for"]


def read_models_for(store: EventStore) -> ReadModelStore:
    """A read-model store beside ``store``'s events, chosen by its backend.

    - ``memory``: a new, empty `MemoryReadModelStore` (each call makes another one);
    - ``sqlite``: a `SQLiteReadModelStore` in the same file, written by the store's
      writer thread;
    - ``postgresql``: a `PostgresReadModelStore` in the same schema, on the store's pool.

    The SQL ones create their tables on first use, and need ``store`` to be open then.
    """
    backend = backend_of(store)
    if backend is not None and backend.read_models is not None:
        return backend.read_models(store)
    name = getattr(store, "backend", None)
    raise ConfigurationError(
        f"eventfold has no read-model store for {type(store).__name__} (backend "
        f"{name!r}); pass a ReadModelStore yourself, e.g. MemoryReadModelStore()"
    )
