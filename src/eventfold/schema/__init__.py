"""Schema evolution: versioned event types, upcasters, the schema registry, compatibility.

- **Versions.** Each event class has a current ``__schema_version__``; stored events keep
  the version they were written with, and every event's metadata names the code that wrote
  it (``producer_version``; see `eventfold.connect`).
- **Upcasting**: pure functions registered on the `TypeRegistry`
  (``@registry.upcaster(name, from_version=n)``, ``registry.rename(old, to=cls)``) lift old
  payloads on read, so code only sees the current shape; snapshots' states have chains of
  their own (``@registry.state_upcaster``, `upcast_snapshot`, `upcast_state`).
- **The registry**: each type's JSON Schema, version by version, stored as
  ``$SchemaRegistered`` events in the system stream ``$schema-<type>``; recorded by
  `publish`, read by `load` and `history`.
- **Validation on write**: `Event` payloads are checked against their class, raw JSON of
  types without a class against the registry (after `load`); a violation raises
  `SchemaViolation` listing every bad field, and nothing is stored.
- **Transformation** (`transform`): copies streams into new ones through a function, then
  switches each source to its copy atomically.
- **Compatibility** (`check`, ``eventfold schema check``): which changes are breaking, and
  whether every stored version still has a way to the code's.

::

    await eventfold.schema.publish(store, [OrderPlaced, OrderShipped])
    report = eventfold.schema.check(types, await eventfold.schema.load(store), registry)
"""

from __future__ import annotations

from .._codec import SchemaViolation
from ._compat import Change, CompatReport, IncompatibleSchema, TypeCheck, check, diff_schemas
from ._publish import publish
from ._registry import (
    SCHEMA_CATEGORY,
    SCHEMA_EVENT_TYPE,
    SCHEMA_STREAM_PREFIX,
    SchemaRecord,
    SchemaRegistered,
    StoredSchemas,
    app_types,
    fingerprint,
    history,
    load,
    schema_of,
    schema_stream,
)
from ._state import can_upcast_state, upcast_snapshot, upcast_state
from ._transform import (
    TRANSFORM_NAMESPACE,
    StreamReport,
    TransformFn,
    TransformProgress,
    TransformReport,
    transform,
    transformed_event_id,
)
from ._upcasting import MissingUpcaster, Upcasters, UpcastFailed
from ._validation import type_from_schema, validator_for

__all__ = [
    "SCHEMA_CATEGORY",
    "SCHEMA_EVENT_TYPE",
    "SCHEMA_STREAM_PREFIX",
    "TRANSFORM_NAMESPACE",
    "Change",
    "CompatReport",
    "IncompatibleSchema",
    "MissingUpcaster",
    "SchemaRecord",
    "SchemaRegistered",
    "SchemaViolation",
    "StoredSchemas",
    "StreamReport",
    "TransformFn",
    "TransformProgress",
    "TransformReport",
    "TypeCheck",
    "UpcastFailed",
    "Upcasters",
    "app_types",
    "can_upcast_state",
    "check",
    "diff_schemas",
    "fingerprint",
    "history",
    "load",
    "publish",
    "schema_of",
    "schema_stream",
    "transform",
    "transformed_event_id",
    "type_from_schema",
    "upcast_snapshot",
    "upcast_state",
    "validator_for",
]
