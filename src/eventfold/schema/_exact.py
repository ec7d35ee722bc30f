"""The decode rules msgspec's JSON Schema leaves out, written back into it.

``msgspec.json.schema`` describes a plain ``datetime`` or ``time`` (time zone optional, or
forbidden) as any string, says nothing of a ``dict``'s non-string keys, and gives a
``bytes`` length in base64 characters. Raw JSON checked against such a schema could hold
what the class refuses (``"paid_at": "not a date"``), and events cannot be deleted. So
the registry records the schema with extension keywords (ignored by other JSON Schema
tools) that say exactly what the class decodes:

- ``"x-msgspec": "datetime" | "naive-datetime" | "time"`` on such a string;
- ``"x-msgspec-keys": {schema}`` on an object whose keys are not plain strings;
- ``"x-msgspec-bytes": {"min": n, "max": m}`` on base64 data with a length in bytes.

`eventfold/schema/_validation.py` reads them back. They are found by walking msgspec's type
information beside the schema it generated, in the order its generator lays it out.
"""

from __future__ import annotations

from typing import Any

import msgspec
import msgspec.inspect as mi

__all__ = ["exact_schema"]

_BYTES = (mi.BytesType, mi.ByteArrayType, mi.MemoryViewType)
_RECORDS = (mi.StructType, mi.DataclassType, mi.TypedDictType, mi.NamedTupleType)


def exact_schema(cls: Any) -> dict[str, Any]:
    """msgspec's JSON Schema of ``cls``, with the rules it cannot express added."""
    schema: dict[str, Any] = msgspec.json.schema(cls)
    _Annotator(schema.get("$defs", {})).walk(mi.type_info(cls), schema)
    return schema


class _Annotator:
    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs
        self.seen: set[str] = set()

    def walk(self, t: mi.Type, node: Any) -> None:
        while isinstance(t, mi.Metadata):
            t = t.type
        if not isinstance(node, dict):
            return
        if "$ref" in node:
            name = str(node["$ref"]).rpartition("/")[2]
            if name in self.seen or name not in self.defs:
                return  # done already (a shared or recursive type)
            self.seen.add(name)
            node = self.defs[name]
        if isinstance(t, mi.DateTimeType) and t.tz is not True:
            node["x-msgspec"] = "datetime" if t.tz is None else "naive-datetime"
        elif isinstance(t, mi.TimeType) and t.tz is None:
            node["x-msgspec"] = "time"
        elif isinstance(t, _BYTES) and (t.min_length is not None or t.max_length is not None):
            node["x-msgspec-bytes"] = {"min": t.min_length, "max": t.max_length}
        elif isinstance(t, mi.CollectionType):
            self.walk(t.item_type, node.get("items"))
        elif isinstance(t, mi.TupleType):
            self.items(t.item_types, node)
        elif isinstance(t, (mi.DictType, mi.FrozenDictType)):
            keys = _key_schema(t.key_type)
            if keys is not None:
                node["x-msgspec-keys"] = keys
            self.walk(t.value_type, node.get("additionalProperties"))
        elif isinstance(t, mi.UnionType):
            self.union(t, node)
        elif isinstance(t, _RECORDS):
            types = [f.type for f in t.fields]
            if "properties" in node:
                properties = node["properties"]
                for field in t.fields:
                    self.walk(field.type, properties.get(field.encode_name))
            else:
                tagged = isinstance(t, mi.StructType) and t.tag_field is not None
                self.items([mi.AnyType(), *types] if tagged else types, node)

    def items(self, types: Any, node: dict[str, Any]) -> None:
        for sub, item in zip(types, node.get("prefixItems", ()), strict=False):
            self.walk(sub, item)

    def union(self, t: mi.UnionType, node: dict[str, Any]) -> None:
        # Mirrors msgspec's layout: other members first, then the object types, then null.
        structs: list[mi.Type] = []
        other: list[mi.Type] = []
        for sub in t.types:
            real = sub
            while isinstance(real, mi.Metadata):
                real = real.type
            if isinstance(real, mi.StructType) and not real.array_like:
                structs.append(real)
            elif not isinstance(real, mi.NoneType):
                other.append(sub)
        options = node.get("anyOf", [])
        for sub, option in zip(other, options, strict=False):
            self.walk(sub, option)
        if not structs:
            return
        if len(structs) == 1:
            if len(options) > len(other):
                self.walk(structs[0], options[len(other)])
            return
        group = node if "discriminator" in node else (options[len(other) :] or [None])[0]
        if isinstance(group, dict):
            for sub, option in zip(structs, group.get("anyOf", ()), strict=False):
                self.walk(sub, option)


def _key_schema(t: mi.Type) -> dict[str, Any] | None:
    """The schema of a dict's key type when msgspec's schema drops it, else None."""
    while isinstance(t, mi.Metadata):
        t = t.type
    if isinstance(t, mi.IntType):
        bounds = {"minimum": t.ge, "maximum": t.le, "exclusiveMinimum": t.gt}
        bounds |= {"exclusiveMaximum": t.lt, "multipleOf": t.multiple_of}
        return {"type": "integer", **{k: v for k, v in bounds.items() if v is not None}}
    if isinstance(t, mi.EnumType | mi.LiteralType):
        values = (
            [m.value for m in t.cls.__members__.values()]
            if isinstance(t, mi.EnumType)
            else list(t.values)
        )
        return None if all(isinstance(v, str) for v in values) else {"enum": values}
    formats = {mi.UUIDType: "uuid", mi.DateType: "date", mi.DecimalType: "decimal"}
    found = formats.get(type(t))
    if found is not None:
        return {"type": "string", "format": found}
    if isinstance(t, mi.DateTimeType):
        return {"type": "string", "x-msgspec": "datetime"}
    return None
