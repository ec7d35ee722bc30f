"""Recording the code's schemas in the store's registry."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from .._events import Event, NewEvent, TypeRegistry, default_registry
from ..errors import WrongExpectedVersion
from ..store.ports import SupportsCodec
from ..store.protocol import EventStore
from ._compat import IncompatibleSchema, check
from ._registry import (
    SchemaRecord,
    SchemaRegistered,
    fingerprint,
    history,
    load,
    schema_of,
    schema_stream,
)

__all__ = ["publish"]

_NAMESPACE = uuid.UUID("0b5c7a52-3f0e-4d1e-9a55-5e2f1c7d9e11")
_ATTEMPTS = 5


async def publish(
    store: EventStore,
    types: Iterable[type[Event]] | TypeRegistry,
    *,
    registry: TypeRegistry | None = None,
    force: bool = False,
) -> list[SchemaRecord]:
    """Record the JSON Schema of each of ``types`` (classes, or a registry's classes).

    Idempotent: a schema already recorded as its version's newest appends nothing. First
    runs `eventfold.schema.check` against what the store holds and raises
    `IncompatibleSchema` if the code could not read it (``force=True`` records anyway).
    ``registry`` holds the upcasters the check uses (default: the store's, or
    eventfold's default registry). Returns the records appended.
    """
    if isinstance(types, TypeRegistry):
        registry = registry or types
        classes = [c for n in types.names() if (c := types.resolve(n)) and not n.startswith("$")]
    else:
        classes = list(types)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, Event)):
            raise TypeError(f"publish takes Event subclasses, got {cls!r}")
    if registry is None:
        registry = store.codec.registry if isinstance(store, SupportsCodec) else default_registry
    if not force:
        report = check(classes, await load(store, install=False), registry)
        if not report.ok:
            raise IncompatibleSchema(report.problems)
    appended: list[SchemaRecord] = []
    for cls in classes:
        record = await _publish_one(store, cls)
        if record is not None:
            appended.append(record)
    return appended


async def _publish_one(store: EventStore, cls: type[Event]) -> SchemaRecord | None:
    name, version = cls.__event_type__, cls.__schema_version__
    schema = schema_of(cls)
    print_ = fingerprint(schema)
    stream = schema_stream(name)
    for attempt in range(_ATTEMPTS):
        records = await history(store, name)
        same_version = [r for r in records if r.version == version]
        if same_version and same_version[-1].fingerprint == print_:
            return None
        revision = len(records) + 1
        # The id follows from the record's place and content: two processes publishing
        # the same schema at once store it once (the second append is a retry).
        event_id = uuid.uuid5(_NAMESPACE, f"{name}\n{revision}\n{print_}")
        body = SchemaRegistered(type=name, version=version, schema=schema, fingerprint=print_)
        try:
            await store.append(
                stream, [NewEvent(body, event_id=event_id)], expected_version=len(records)
            )
        except WrongExpectedVersion:
            if attempt == _ATTEMPTS - 1:
                raise
            continue
        return (await history(store, name))[revision - 1]
    return None  # pragma: no cover - the loop returns or raises
