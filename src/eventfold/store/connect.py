"""``eventfold.connect(url)``: pick a backend from the URL's scheme."""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, urlsplit

from ..codec import DEFAULT_MAX_EVENT_SIZE, Codec
from ..errors import ConfigurationError
from ..events import TypeRegistry
from .protocol import EventStore

__all__ = ["DEFAULT_URL", "connect", "redact_url"]

DEFAULT_URL = "sqlite:///eventfold.db"
"""The embedded default: ``eventfold.db`` in the working directory."""

_SCHEMES = "memory://, sqlite:///path/to/file.db or postgresql://user@host:5432/dbname"


def connect(
    url: str | None = None,
    *,
    registry: TypeRegistry | None = None,
    max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
    producer_version: str | None = None,
) -> EventStore:
    """Make a store for ``url``; open it with ``async with store:``.

    ``url`` defaults to ``$EVENTFOLD_URL``, then to ``sqlite:///eventfold.db``. SQLite
    takes ``?synchronous=NORMAL`` to trade durability on power loss for speed (the
    default, FULL, loses nothing that was acknowledged). ``max_event_size`` bounds one
    event's encoded data plus metadata; ``producer_version`` goes into every event's
    metadata.
    """
    url = url or os.environ.get("EVENTFOLD_URL") or DEFAULT_URL
    if not isinstance(url, str):
        raise ConfigurationError(f"the store URL must be a str, got {type(url).__name__}")
    if (
        isinstance(max_event_size, bool)
        or not isinstance(max_event_size, int)
        or max_event_size < 1
    ):
        raise ConfigurationError(f"max_event_size must be an int >= 1, got {max_event_size!r}")
    codec = Codec(registry, max_event_size=max_event_size, producer_version=producer_version)
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ConfigurationError(f"cannot read the store URL {redact_url(url)!r}; use {_SCHEMES}")
    scheme = scheme.lower()
    if scheme == "memory":
        from .memory import MemoryStore

        return MemoryStore(codec)
    if scheme == "sqlite":
        parts = urlsplit(url)
        path = parts.path
        if parts.netloc not in ("", "localhost"):
            raise ConfigurationError(
                f"sqlite URL {url!r} names a host; use sqlite:///relative.db or "
                "sqlite:////absolute/path.db"
            )
        path = path[1:] if path.startswith("/") else path
        if not path:
            raise ConfigurationError(
                f"sqlite URL {url!r} names no file; use sqlite:///eventfold.db"
            )
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
        from .sqlite import SQLiteStore

        return SQLiteStore(path, codec, synchronous=synchronous)
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStore

        return PostgresStore(url, codec)
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
