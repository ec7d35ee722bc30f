"""Checking payloads on write: every field that does not fit its schema, by name.

The codec checks each event against its type's schema before anything is stored (see
`eventfold.store.kit.Codec`); this module holds what the check reports and how it finds every
violation rather than msgspec's first one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import msgspec

from ..errors import SchemaViolation

__all__ = [
    "ForeignType",
    "PayloadValidator",
    "SchemaViolation",
    "field_violations",
    "nonfinite_violations",
]


PayloadValidator = Callable[[Any], list[str]]
"""Checks a decoded payload against a schema; returns the violations (empty: valid)."""


class ForeignType(NamedTuple):
    """A type with no Python class here but a schema in the store's registry."""

    latest: int
    """The newest schema version registered for it: a mapping without one is in it."""
    validators: dict[int, PayloadValidator]
    """A validator per registered schema version."""


def field_violations(cls: type[msgspec.Struct], raw: Any) -> list[str]:
    """Every field of ``raw`` (a decoded JSON value) that does not fit ``cls``, by name.

    msgspec stops at the first error; this checks each field on its own so that a
    rejected payload's error lists all of them.
    """
    if not isinstance(raw, Mapping):
        kind = "null" if raw is None else type(raw).__name__
        return [f"expected a JSON object, got {kind}"]
    out: list[str] = []
    known: set[str] = set()
    for field in msgspec.structs.fields(cls):
        name = field.encode_name
        known.add(name)
        if name not in raw:
            if field.required:
                out.append(f"`{name}`: missing required field")
            continue
        try:
            # str_keys: JSON object keys are strings, and the class's decoder parses them.
            msgspec.convert(raw[name], field.type, str_keys=True)
        except msgspec.ValidationError as exc:
            text = str(exc)
            text = text.replace(" - at `$", f" - at `$.{name}") if " - at `$" in text else text
            out.append(f"`{name}`: {text}")
    config = cls.__struct_config__
    if config.forbid_unknown_fields:
        known.add(str(config.tag_field))
        out.extend(f"`{key}`: unknown field" for key in raw if key not in known)
    return out


def nonfinite_violations(value: Any, path: str = "$") -> list[str]:
    """Every NaN or infinite float in ``value`` (Python values, nested), by JSON path.

    JSON has no such numbers: msgspec writes them as ``null``, which a ``float`` field
    then refuses with a message about ``null`` the caller never sent.
    """
    if isinstance(value, msgspec.Struct):
        value = msgspec.structs.asdict(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return []
        shown = path.removeprefix("$.") if path != "$" else path
        return [
            f"`{shown}`: {value} cannot be stored (JSON has no NaN or infinity; it would be "
            "written as null); use a finite number, or None in an optional field"
        ]
    if isinstance(value, Mapping):
        items: Any = ((f"{path}.{k}", v) for k, v in value.items())
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return []
    return [found for sub, v in items for found in nonfinite_violations(v, sub)]
