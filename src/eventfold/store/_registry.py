"""The backends, by URL scheme: the one place a scheme or a backend's name is looked at.

Each entry is imported on first use, so a backend's driver loads only when a URL asks for
it (and a missing driver says how to install it). `connect` reads the table for the store;
the read path reads it, through `backend_of`, for what goes beside a store (read models,
leases, wake-ups, inline projections). Another package plugs a backend in with
`register_backend`.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ConfigurationError
from .protocol import EventStore

if TYPE_CHECKING:
    from .._codec import Codec
    from .ports import (
        InboxDatabase,
        InlineProjection,
        Leases,
        ReadModelStore,
        TransactionParticipant,
        WakeUpTarget,
    )

__all__ = [
    "Backend",
    "backend_for_scheme",
    "backend_of",
    "own_store",
    "register_backend",
    "unregister_backend",
]

_S = TypeVar("_S")


@dataclass(frozen=True, kw_only=True)
class Backend:
    """What eventfold knows about one backend. Only ``name`` and ``open`` are required;
    a capability left None is one the backend does not offer.

    - ``open(url, codec, read_only)``: the (unopened) store for ``url``;
    - ``read_models(store)``: the read-model store beside ``store``'s events;
    - ``leases(store)``: leases shared by every process on ``store`` (without it, a daemon
      uses in-process leases);
    - ``wake_ups(wakeups)``: a background coroutine that calls ``wakeups.notify()`` when
      other processes append;
    - ``inline(store, projections)``: the transaction participant that runs projections
      inside ``store``'s appends;
    - ``inbox(url, table)``: a consumer's inbox of processed message ids in the database
      at ``url`` (`eventfold.inbox`), unopened.
    """

    name: str
    open: Callable[[str, Codec, bool], EventStore]
    read_models: Callable[[EventStore], ReadModelStore] | None = None
    leases: Callable[[EventStore], Leases] | None = None
    wake_ups: Callable[[WakeUpTarget], Coroutine[Any, Any, None]] | None = None
    inline: (
        Callable[[EventStore, Sequence[InlineProjection]], Awaitable[TransactionParticipant]] | None
    ) = None
    inbox: Callable[[str, str], InboxDatabase] | None = None


@dataclass
class _Entry:
    name: str
    target: Backend | str  # "module:attribute", imported on first use
    install: str | None


_BY_SCHEME: dict[str, _Entry] = {}
_BY_NAME: dict[str, _Entry] = {}


def register_backend(
    name: str, schemes: Sequence[str], backend: Backend | str, *, install: str | None = None
) -> None:
    """File ``backend`` under ``name`` (what its stores' ``backend`` says) and ``schemes``.

    ``backend`` is a `Backend` or ``"module:attribute"`` naming one, imported on first use;
    ``install`` is the advice given when that import finds a module missing. Registering a
    name again replaces it.
    """
    unregister_backend(name)
    entry = _Entry(name, backend, install)
    _BY_NAME[name] = entry
    for scheme in schemes:
        _BY_SCHEME[scheme.lower()] = entry


def unregister_backend(name: str) -> None:
    """Forget the backend called ``name`` and its schemes (nothing when there is none)."""
    entry = _BY_NAME.pop(name, None)
    for scheme in [s for s, e in _BY_SCHEME.items() if e is entry]:
        del _BY_SCHEME[scheme]


def backend_for_scheme(scheme: str) -> Backend | None:
    """The backend registered for a URL scheme, or None."""
    entry = _BY_SCHEME.get(scheme.lower())
    return None if entry is None else _load(entry)


def backend_of(store: EventStore) -> Backend | None:
    """The backend ``store`` belongs to (by its ``backend`` name), or None for a store of
    an unregistered backend."""
    entry = _BY_NAME.get(getattr(store, "backend", None) or "")
    return None if entry is None else _load(entry)


def own_store(store: EventStore, kind: type[_S]) -> _S:
    """``store`` as its backend's own class (what a `Backend`'s callables take), or
    `ConfigurationError` for a store that only says it is of that backend."""
    if not isinstance(store, kind):
        raise ConfigurationError(
            f"{type(store).__name__} calls itself a {store.backend} store but is not a "
            f"{kind.__name__}"
        )
    return store


def _load(entry: _Entry) -> Backend:
    if isinstance(entry.target, Backend):
        return entry.target
    module_name, _, attribute = entry.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or "a module"
        if missing.partition(".")[0] == "eventfold" or entry.install is None:
            raise
        raise ConfigurationError(
            f"the {entry.name} backend needs {missing}, which is not installed; "
            f"install it with: {entry.install}"
        ) from None
    backend = getattr(module, attribute)
    if not isinstance(backend, Backend):
        raise ConfigurationError(f"{entry.target} is not an eventfold Backend")
    entry.target = backend
    return backend


register_backend("memory", ["memory"], "eventfold.backends.memory._backend:BACKEND")
register_backend("sqlite", ["sqlite"], "eventfold.backends.sqlite._backend:BACKEND")
register_backend(
    "postgresql",
    ["postgresql", "postgres"],
    "eventfold.backends.postgres._backend:BACKEND",
    install="pip install 'eventfold[postgres]'",
)
