"""The schema registry: every event type's JSON Schema, version by version, in the store.

The registry lives in the event store itself, as events, so it has a history and travels
with the data. Each event type has a **system stream** ``$schema-<type name>``; each
schema recorded for the type is one ``$SchemaRegistered`` event in it, with data
``{type, version, schema, fingerprint}``. ``schema`` is what ``msgspec.json.schema(cls)``
generates; ``fingerprint`` is the SHA-256 of its canonical JSON. Stream ids starting with
``$`` are eventfold's own: the category ``$schema`` holds the registry, and projections
should skip ``$`` streams and ``$`` types.

A version may be recorded more than once: when a class gains an optional field without a
version bump (a compatible change), publishing appends the new schema under the same
version, and the newest record of a version is its schema. Recording is explicit —
`eventfold/schema/_publish.py` or ``eventfold schema publish`` — a step of deploying, after
``eventfold schema check`` passed; it is never a side effect of an append.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from .._events import Event, RecordedEvent, TypeRegistry
from ..store.ports import SupportsCodec
from ..store.protocol import EventStore
from ._exact import exact_schema
from ._validation import validator_for
from ._violations import ForeignType

__all__ = [
    "SCHEMA_CATEGORY",
    "SCHEMA_EVENT_TYPE",
    "SCHEMA_STREAM_PREFIX",
    "SchemaRecord",
    "SchemaRegistered",
    "StoredSchemas",
    "app_types",
    "fingerprint",
    "history",
    "load",
    "schema_of",
    "schema_stream",
]

SCHEMA_CATEGORY = "$schema"
"""The category of the registry's streams."""
SCHEMA_STREAM_PREFIX = SCHEMA_CATEGORY + "-"
SCHEMA_EVENT_TYPE = "$SchemaRegistered"


class SchemaRegistered(Event):
    """A schema recorded for one version of an event type (in ``$schema-<type>``)."""

    __event_type__ = SCHEMA_EVENT_TYPE

    type: str
    version: int
    schema: dict[str, Any]
    fingerprint: str


class SchemaRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One recorded schema, with where and when it was recorded."""

    type: str
    version: int
    schema: dict[str, Any]
    fingerprint: str
    revision: int
    """Its place in the type's registry stream (1 for the type's first record)."""
    recorded_at: dt.datetime
    producer_version: str | None = None


def schema_of(cls: type[Event]) -> dict[str, Any]:
    """The JSON Schema of an event class, as the registry records it: msgspec's, plus the
    decode rules it leaves out (see `eventfold/schema/_exact.py`)."""
    return exact_schema(cls)


def fingerprint(schema: Mapping[str, Any]) -> str:
    """SHA-256 of the schema's canonical JSON (sorted keys): equal schemas, equal prints."""
    return hashlib.sha256(msgspec.json.encode(schema, order="sorted")).hexdigest()


def schema_stream(type_name: str) -> str:
    """The registry stream of an event type: ``$schema-<type name>``."""
    return SCHEMA_STREAM_PREFIX + type_name


def app_types(registry: TypeRegistry, package: str | None = None) -> list[type[Event]]:
    """The event classes of an application, sorted by type name.

    Every class in ``registry`` whose module is in ``package`` (a top-level package name,
    or a dotted module whose top-level package is used), else every class outside
    eventfold itself. ``$`` types are the system's own and never included.
    """
    top = package.partition(".")[0] if package else None
    found: list[type[Event]] = []
    for name in registry.names():
        cls = registry.resolve(name)
        if cls is None or name.startswith("$"):
            continue
        module_top = cls.__module__.partition(".")[0]
        if (top is None and module_top != "eventfold") or module_top == top:
            found.append(cls)
    return found


class StoredSchemas:
    """What the store's registry holds: each type's records, oldest first."""

    def __init__(self, records: Mapping[str, list[SchemaRecord]]) -> None:
        self._records = {name: list(recs) for name, recs in records.items() if recs}

    def types(self) -> list[str]:
        """Every type with a recorded schema, sorted."""
        return sorted(self._records)

    def history(self, type_name: str) -> list[SchemaRecord]:
        """Every record of the type, oldest first (empty when none)."""
        return list(self._records.get(type_name, ()))

    def versions(self, type_name: str) -> dict[int, SchemaRecord]:
        """The newest record of each recorded version of the type."""
        out: dict[int, SchemaRecord] = {}
        for record in self._records.get(type_name, ()):
            out[record.version] = record
        return dict(sorted(out.items()))

    def latest(self, type_name: str) -> SchemaRecord | None:
        """The record of the type's highest version (its newest record of that version)."""
        versions = self.versions(type_name)
        return versions[max(versions)] if versions else None

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._records

    def __len__(self) -> int:
        return len(self._records)


def _record(event: RecordedEvent) -> SchemaRecord:
    data = event.data
    if isinstance(data, msgspec.Struct):
        data = msgspec.structs.asdict(data)
    body = msgspec.convert(data, SchemaRegistered)
    return SchemaRecord(
        type=body.type,
        version=body.version,
        schema=body.schema,
        fingerprint=body.fingerprint,
        revision=event.version,
        recorded_at=event.recorded_at,
        producer_version=event.producer_version,
    )


async def history(store: EventStore, type_name: str) -> list[SchemaRecord]:
    """Every schema recorded for ``type_name``, oldest first."""
    return [
        _record(e)
        async for e in store.read_stream(schema_stream(type_name))
        if e.type == SCHEMA_EVENT_TYPE
    ]


async def load(store: EventStore, *, install: bool = True) -> StoredSchemas:
    """Read the store's whole schema registry.

    With ``install`` (the default), types that have no Python class in the store's type
    registry get validators from their recorded schemas, so appends of raw JSON for them
    (``NewEvent(mapping, type=...)``, ``eventfold append``) are checked from now on.
    """
    records: dict[str, list[SchemaRecord]] = {}
    streams = [s.stream_id async for s in store.streams(category=SCHEMA_CATEGORY)]
    for stream_id in streams:
        name = stream_id[len(SCHEMA_STREAM_PREFIX) :]
        records[name] = await history(store, name)
    stored = StoredSchemas(records)
    if install:
        install_validators(store, stored)
    return stored


def install_validators(store: EventStore, stored: StoredSchemas) -> None:
    """Give the store's codec a validator for each stored type that has no class."""
    if not isinstance(store, SupportsCodec):
        return
    codec = store.codec
    for name in stored.types():
        if codec.registry.resolve(name) is not None:
            continue
        versions = stored.versions(name)
        codec.foreign[name] = ForeignType(
            max(versions), {v: validator_for(r.schema) for v, r in versions.items()}
        )


def records_by_type(records: Iterable[SchemaRecord]) -> dict[str, list[SchemaRecord]]:
    """Group records by type name, keeping their order."""
    out: dict[str, list[SchemaRecord]] = {}
    for record in records:
        out.setdefault(record.type, []).append(record)
    return out
