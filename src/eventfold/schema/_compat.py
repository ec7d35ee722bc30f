"""Compatibility: what changed between the store's schemas and the code's, and whether the
code can still read every event the store holds.

A change is **compatible** when old payloads still decode into the new class: an added
optional field, a field made optional, a widened type (``int`` to ``int | None``, an enum
with more values), a changed default. It is **breaking** otherwise: a removed or renamed
field, a changed type, a newly required field. A breaking change is fine once the code
bumps ``__schema_version__`` and registers upcasters that lift every stored version to the
current one; `check` fails a type when

- its schema changed incompatibly at the same version (old payloads would not decode),
- a stored version has no chain of upcasters to the code's version (the step is named),
- the store holds a newer version than the code knows (the code is older than the data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from .._events import Event, TypeRegistry
from ..errors import IncompatibleSchema
from ._registry import schema_of
from ._upcasting import CurrentVersion, MissingUpcaster

if TYPE_CHECKING:
    from ._registry import StoredSchemas

__all__ = [
    "Change",
    "CompatReport",
    "IncompatibleSchema",
    "TypeCheck",
    "check",
    "diff_schemas",
]

_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment"})


class Change(msgspec.Struct, frozen=True, kw_only=True):
    """One difference between a stored schema and the code's."""

    type: str
    field: str
    """The field's dotted path (``""`` for the type as a whole)."""
    kind: str
    """added optional field, added required field, removed field, renamed field,
    changed type, widened type, now required, now optional, changed default, new type,
    new version, renamed type, removed type."""
    breaking: bool
    detail: str = ""


class TypeCheck(msgspec.Struct, frozen=True, kw_only=True):
    """One event type's changes and, when it fails, why."""

    type: str
    code_version: int | None
    """The class's ``__schema_version__`` (None: no class in the code)."""
    stored_version: int | None
    """The highest version in the store's registry, under this name or, for a renamed
    type with no records of its own, an old one (None: never recorded)."""
    changes: list[Change]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


class CompatReport(msgspec.Struct, frozen=True):
    """The outcome of `check`: one entry per type, code and store together."""

    types: list[TypeCheck]

    @property
    def ok(self) -> bool:
        """True when the code can read every stored version of every type."""
        return all(t.ok for t in self.types)

    @property
    def problems(self) -> list[str]:
        return [p for t in self.types for p in t.problems]

    @property
    def changes(self) -> list[Change]:
        return [c for t in self.types for c in t.changes]


# -- diffing two schemas ---------------------------------------------------------------


def _defs(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    defs = schema.get("$defs", {})
    return defs if isinstance(defs, Mapping) else {}


def _deref(node: Any, defs: Mapping[str, Any]) -> Any:
    seen: set[str] = set()
    while isinstance(node, Mapping) and "$ref" in node:
        name = str(node["$ref"]).rpartition("/")[2]
        if name in seen or name not in defs:
            break
        seen.add(name)
        node = defs[name]
    return node


def _normal(node: Any, defs: Mapping[str, Any], depth: int = 0) -> Any:
    """``node`` with references inlined and annotations dropped, for comparing."""
    if depth > 20:
        return node
    node = _deref(node, defs)
    if isinstance(node, Mapping):
        # Extension keywords (``x-msgspec``) are left out: schemas recorded before they
        # existed must still compare equal to the code's.
        return {
            k: _normal(v, defs, depth + 1)
            for k, v in sorted(node.items())
            if k not in _ANNOTATIONS and not k.startswith("x-")
        }
    if isinstance(node, list):
        return [_normal(v, defs, depth + 1) for v in node]
    return node


def _describe(node: Any) -> str:
    if not isinstance(node, Mapping):
        return "any"
    if "anyOf" in node:
        return " | ".join(_describe(n) for n in node["anyOf"])
    if "enum" in node:
        return "one of " + ", ".join(map(repr, node["enum"]))
    if "const" in node:
        return repr(node["const"])
    kind = node.get("type")
    if kind == "array":
        return f"array of {_describe(node.get('items', {}))}"
    if kind == "object" and "properties" in node:
        return f"object {node.get('title', '')}".strip()
    if kind == "string" and "format" in node:
        return f"string ({node['format']})"
    return str(kind) if kind else "any"


def _widens(old: Any, new: Any) -> bool:
    """Whether every value ``old`` accepts, ``new`` accepts too (as far as we can tell)."""
    if old == new:
        return True
    if isinstance(new, Mapping) and "anyOf" in new:
        members = old["anyOf"] if isinstance(old, Mapping) and "anyOf" in old else [old]
        return all(any(_widens(m, n) for n in new["anyOf"]) for m in members)
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        if old.get("type") == "integer" and new.get("type") == "number":
            return set(old) - {"type"} <= set(new) - {"type"}
        if "enum" in old and "enum" in new:
            return set(map(repr, old["enum"])) <= set(map(repr, new["enum"]))
    return False


def _default(node: Any) -> Any:
    return node.get("default") if isinstance(node, Mapping) else None


def _is_object(node: Any) -> bool:
    return isinstance(node, Mapping) and node.get("type") == "object" and "properties" in node


def diff_schemas(type_name: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """Every field-level change from schema ``old`` to schema ``new`` of one type."""
    old_defs, new_defs = _defs(old), _defs(new)
    return _diff_objects(
        type_name, _deref(old, old_defs), old_defs, _deref(new, new_defs), new_defs, "", 0
    )


def _diff_objects(
    type_name: str,
    old: Any,
    old_defs: Mapping[str, Any],
    new: Any,
    new_defs: Mapping[str, Any],
    prefix: str,
    depth: int,
) -> list[Change]:
    if not (_is_object(old) and _is_object(new)) or depth > 10:
        before, after = _normal(old, old_defs), _normal(new, new_defs)
        if before == after:
            return []
        widened = _widens(before, after)
        return [
            Change(
                type=type_name,
                field=prefix.rstrip("."),
                kind="widened type" if widened else "changed type",
                breaking=not widened,
                detail=f"{_describe(old)} -> {_describe(new)}",
            )
        ]
    old_props: Mapping[str, Any] = old["properties"]
    new_props: Mapping[str, Any] = new["properties"]
    old_req, new_req = set(old.get("required", ())), set(new.get("required", ()))
    changes: list[Change] = []

    def change(name: str, kind: str, breaking: bool, detail: str = "") -> None:
        changes.append(
            Change(type=type_name, field=prefix + name, kind=kind, breaking=breaking, detail=detail)
        )

    removed = [f for f in old_props if f not in new_props]
    added = [f for f in new_props if f not in old_props]
    for gone in list(removed):
        shape = _normal(old_props[gone], old_defs)
        twin = next((a for a in added if _normal(new_props[a], new_defs) == shape), None)
        if twin is not None:
            removed.remove(gone)
            added.remove(twin)
            change(gone, "renamed field", True, f"{prefix}{gone} -> {prefix}{twin}")
    for name in removed:
        change(name, "removed field", True, _describe(_deref(old_props[name], old_defs)))
    for name in added:
        described = _describe(_deref(new_props[name], new_defs))
        if name in new_req:
            change(name, "added required field", True, f"{described}, no default")
        else:
            change(name, "added optional field", False, described)
    for name in old_props:
        if name not in new_props:
            continue
        o, n = _deref(old_props[name], old_defs), _deref(new_props[name], new_defs)
        changes.extend(
            _diff_objects(type_name, o, old_defs, n, new_defs, f"{prefix}{name}.", depth + 1)
        )
        if name in new_req and name not in old_req:
            change(name, "now required", True, "old payloads may lack it")
        elif name in old_req and name not in new_req:
            change(name, "now optional", False)
        old_default = _default(old_props[name])
        new_default = _default(new_props[name])
        if old_default != new_default and name not in new_req and name not in old_req:
            change(name, "changed default", False, f"{old_default!r} -> {new_default!r}")
    return changes


# -- checking code against the store ----------------------------------------------------


def _paths(
    registry: TypeRegistry,
    current: CurrentVersion,
    name: str,
    versions: Sequence[int],
    target: str,
) -> list[str]:
    """Problems reading ``name``'s stored versions with the code's upcasters."""
    problems: list[str] = []
    for version in versions:
        try:
            registry.upcasters.plan(name, version, current)
        except MissingUpcaster as exc:
            step_name, step_version = exc.step
            if step_version > exc.current:
                problems.append(
                    f"{name}: the store has version {version}, newer than the code's "
                    f"{exc.current} of {step_name}: this code is older than the data"
                )
            else:
                problems.append(
                    f"{name}: stored version {version} cannot be read as {target} v"
                    f"{exc.current}: no upcaster from {step_name} v{step_version}; register "
                    f"@registry.upcaster({step_name!r}, from_version={step_version})"
                )
    return problems


def check(
    types: Sequence[type[Event]], stored: StoredSchemas, registry: TypeRegistry
) -> CompatReport:
    """Compare the code's ``types`` (with ``registry``'s upcasters) to the stored schemas."""
    results: list[TypeCheck] = []
    covered: set[str] = set()
    code_versions = {cls.__event_type__: cls.__schema_version__ for cls in types}

    def current(name: str) -> int | None:
        # The classes checked are the code, whether or not ``registry`` holds them.
        found = code_versions.get(name)
        return found if found is not None else registry.current_version(name)

    for cls in types:
        name, version = cls.__event_type__, cls.__schema_version__
        code_schema = schema_of(cls)
        covered.add(name)
        versions = stored.versions(name)
        changes: list[Change] = []
        problems: list[str] = []
        sources = [old for old in registry.upcasters.old_names(name) if old in stored]
        if not versions and not sources:
            changes.append(Change(type=name, field="", kind="new type", breaking=False))
        if versions:
            below = [v for v in versions if v <= version]
            base = versions[max(below)] if below else versions[min(versions)]
            changes.extend(diff_schemas(name, base.schema, code_schema))
            if base.version < version:
                changes.insert(
                    0,
                    Change(
                        type=name,
                        field="",
                        kind="new version",
                        breaking=False,
                        detail=f"v{base.version} -> v{version}",
                    ),
                )
            if base.version == version and any(c.breaking for c in changes):
                problems.append(
                    f"{name}: breaking change at the same version {version} "
                    f"({', '.join(sorted({c.kind for c in changes if c.breaking}))}); set "
                    f"__schema_version__ = {version + 1} and register "
                    f"@registry.upcaster({name!r}, from_version={version})"
                )
            others = sorted(set(versions) - {version})
            problems.extend(_paths(registry, current, name, others, name))
        latest_stored = max(versions) if versions else None
        for old in sources:
            covered.add(old)
            old_versions = stored.versions(old)
            newest = old_versions[max(old_versions)]
            if not versions:
                latest_stored = max(latest_stored or 0, newest.version)
            changes.append(
                Change(
                    type=name,
                    field="",
                    kind="renamed type",
                    breaking=False,
                    detail=f"{old} -> {name}",
                )
            )
            for c in diff_schemas(name, newest.schema, code_schema):
                changes.append(msgspec.structs.replace(c, detail=f"{c.detail} (from {old})"))
            problems.extend(_paths(registry, current, old, sorted(old_versions), name))
        results.append(
            TypeCheck(
                type=name,
                code_version=version,
                stored_version=latest_stored,
                changes=changes,
                problems=problems,
            )
        )
    for name in stored.types():
        if name in covered or name.startswith("$"):
            continue
        target = registry.upcasters.renamed_to(name)
        versions = stored.versions(name)
        if target is not None and current(target) is not None:
            detail = f"renamed to {target}"
            problems = _paths(registry, current, name, sorted(versions), target)
        else:
            detail = "no class in the code: its events read back as dicts"
            problems = []
        results.append(
            TypeCheck(
                type=name,
                code_version=None,
                stored_version=max(versions),
                changes=[
                    Change(type=name, field="", kind="removed type", breaking=False, detail=detail)
                ],
                problems=problems,
            )
        )
    return CompatReport(sorted(results, key=lambda t: t.type))
