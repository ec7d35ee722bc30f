"""``eventfold.connect(url)``: pick a backend from the URL's scheme."""

from __future__ import annotations

import functools
import os
import sys
from importlib import metadata
from urllib.parse import urlsplit

from .._codec import DEFAULT_MAX_EVENT_SIZE, Codec
from .._events import TypeRegistry
from ..errors import ConfigurationError
from ._registry import backend_for_scheme
from .protocol import EventStore

__all__ = [
    "DEFAULT_URL",
    "PRODUCER_VERSION_ENV",
    "connect",
    "detect_producer_version",
    "redact_url",
]

PRODUCER_VERSION_ENV = "EVENTFOLD_PRODUCER_VERSION"
"""Overrides the producer version `connect` finds (set it empty for none)."""

DEFAULT_URL = "sqlite:///eventfold.db"
"""The embedded default: ``eventfold.db`` in the working directory."""

_SCHEMES = "memory://, sqlite:///path/to/file.db or postgresql://user@host:5432/dbname"


def connect(
    url: str | None = None,
    *,
    registry: TypeRegistry | None = None,
    max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
    producer_version: str | None = None,
    read_only: bool = False,
) -> EventStore:
    """Make a store for ``url``; open it with ``async with store:``.

    ``url`` defaults to ``$EVENTFOLD_URL``, then to ``sqlite:///eventfold.db``. SQLite
    takes ``?synchronous=NORMAL`` to trade durability on power loss for speed (the
    default, FULL, loses nothing that was acknowledged). ``max_event_size`` bounds one
    event's encoded data plus metadata; ``producer_version`` goes into every event's
    metadata (``""``: none; default: `detect_producer_version` for the calling module).

    ``read_only=True`` opens an existing store to inspect it: nothing is created, migrated
    or written (a read-only SQLite file or directory can be read), opening raises
    `StoreNotFound` ("no eventfold store at ...") for a missing file or schema or another
    application's database, and a write raises `StoreReadOnly`.
    """
    if producer_version is None:
        caller = sys._getframe(1).f_globals.get("__name__")
        producer_version = detect_producer_version(caller if isinstance(caller, str) else None)
    url = url or os.environ.get("EVENTFOLD_URL") or DEFAULT_URL
    if not isinstance(url, str):
        raise ConfigurationError(f"the store URL must be a str, got {type(url).__name__}")
    if (
        isinstance(max_event_size, bool)
        or not isinstance(max_event_size, int)
        or max_event_size < 1
    ):
        raise ConfigurationError(f"max_event_size must be an int >= 1, got {max_event_size!r}")
    codec = Codec(
        registry, max_event_size=max_event_size, producer_version=producer_version or None
    )
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ConfigurationError(f"cannot read the store URL {redact_url(url)!r}; use {_SCHEMES}")
    scheme = scheme.lower()
    backend = backend_for_scheme(scheme)
    if backend is not None:
        return backend.open(url, codec, read_only)
    raise ConfigurationError(
        f"unknown store URL scheme {scheme!r} in {redact_url(url)!r}; use {_SCHEMES}"
    )


def redact_url(url: str) -> str:
    """``url`` with any password replaced, so it can be printed or logged."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def detect_producer_version(module: str | None) -> str | None:
    """The version of the code that produces events, as ``"<distribution> <version>"``.

    In order: ``$EVENTFOLD_PRODUCER_VERSION`` when set (empty: none); else the installed
    distribution that provides ``module``'s top-level package, or is named like it.
    `connect` passes the module that called it: the application, not the server or test
    runner that started the process (``__main__`` is uvicorn, gunicorn or pytest as often
    as not). Else None; eventfold's own modules (the CLI) produce no version.
    """
    env = os.environ.get(PRODUCER_VERSION_ENV)
    if env is not None:
        return env.strip() or None
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = getattr(spec, "name", None)
    if not module:
        return None
    top = module.partition(".")[0]
    return None if top == "eventfold" else _distribution_version(top)


@functools.lru_cache(maxsize=64)
def _distribution_version(package: str) -> str | None:
    # An editable install may list no package files: then try a distribution named
    # like the package, the usual case.
    names = _packages_distributions().get(package) or [package]
    try:
        return f"{names[0]} {metadata.version(names[0])}"
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def _packages_distributions() -> dict[str, list[str]]:
    # Scans every installed distribution's file list once (tens of ms); cached.
    return dict(metadata.packages_distributions())
