"""eventfold for blocking code: a Django or Flask view, a script, a notebook.

The same names, arguments, results and errors as the async API, each call blocking until
it is done::

    import eventfold.sync

    with eventfold.sync.connect("sqlite:///shop.db") as store:
        result = store.append("order-1", [OrderPlaced(...)], expected_version=eventfold.NO_STREAM)
        for event in store.read_stream("order-1"):   # a plain iterator, paged
            ...
        handler = eventfold.sync.CommandHandler(store, decider)
        handler.handle("order-1", Ship())

Each store runs the async store on an event loop in a daemon thread of its own, from its
first `EventStore.open` to its last `EventStore.close` (or interpreter exit). Any number
of threads may share a store; a thread that runs an event loop (a notebook's) may call it
too. Errors are the async API's own exceptions, not wrapped. Ctrl-C during a call cancels
the work underneath. Units of work are not bridged yet.
"""

from __future__ import annotations

from ._handler import CommandHandler
from ._projections import (
    DocumentView,
    LiveView,
    ProjectionDaemon,
    ReadModelStore,
    live,
    projection_status,
    projection_statuses,
    read_models_for,
    wait_for,
)
from ._store import EventStore, connect

__all__ = [
    "CommandHandler",
    "DocumentView",
    "EventStore",
    "LiveView",
    "ProjectionDaemon",
    "ReadModelStore",
    "connect",
    "live",
    "projection_status",
    "projection_statuses",
    "read_models_for",
    "wait_for",
]
