"""Upcasting: old stored payloads lifted to the current schema version, on read.

A stored event keeps the type name and schema version it was written with; the store never
rewrites it (invariant 1). When the code's class has moved on, the codec passes the stored
payload — a dict, as decoded from its JSON — through a chain of **upcasters**, pure
functions that each lift one version to the next, until it has the current shape, and only
then builds the typed event. Deciders and projections only ever see the current shape.

Upcasters are registered on the `TypeRegistry` the store decodes with::

    @registry.upcaster("OrderPlaced", from_version=1)
    def total_to_cents(data: dict[str, Any]) -> dict[str, Any]:
        rest = {k: v for k, v in data.items() if k != "total"}
        return {**rest, "total_cents": round(data["total"] * 100)}

    registry.rename("OrderCreated", to=OrderPlaced)   # old name, same versions

A step may also change the type name (``to_type=``), e.g. when one event was split out of
another. Snapshots' states have chains of their own, keyed by state type
(`TypeRegistry.state_upcaster`, `eventfold.schema.upcast_snapshot`).

This module is core: it knows names, versions and functions, not classes or stores, so the
codec (which walks chains) and the schema tools (which check that chains exist) share it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import EventTypeError, InvalidInput, MissingUpcaster, UpcastFailed

__all__ = [
    "MissingUpcaster",
    "Step",
    "UpcastFailed",
    "Upcaster",
    "Upcasters",
    "run_steps",
]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""A pure function from one schema version's payload to the next version's."""

CurrentVersion = Callable[[str], "int | None"]
"""The code's current schema version of a type name (None: no class for it)."""


@dataclass(frozen=True, slots=True)
class Step:
    """One link of a chain: ``type`` at ``from_version`` becomes ``to_type`` at ``to_version``.

    ``fn`` is None for a rename (the payload is unchanged).
    """

    type: str
    from_version: int
    to_type: str
    to_version: int
    fn: Upcaster | None

    @property
    def name(self) -> str:
        """The upcaster's qualified name, or ``rename`` for a rename."""
        if self.fn is None:
            return f"rename to {self.to_type!r}"
        return getattr(self.fn, "__qualname__", repr(self.fn))

    def apply(self, data: dict[str, Any]) -> dict[str, Any]:
        """This step's payload from the previous one's."""
        return data if self.fn is None else self.fn(data)


def _check_version(what: str, version: object) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidInput(f"{what} must be an int >= 1, got {version!r}")
    return version


def _same_function(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    # A reloaded module registers new function objects of the same place: allowed.
    place = ("__module__", "__qualname__")
    return a is b or all(getattr(a, p, None) == getattr(b, p, object()) for p in place)


class Upcasters:
    """The upcaster chains of one `TypeRegistry`: steps, renames, and state steps."""

    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], Step] = {}
        self._renames: dict[str, str] = {}
        self._state_steps: dict[tuple[str, int], Upcaster] = {}
        self.generation = 0
        """Bumped on every change, so caches built from the chains know to start over."""

    def add(
        self,
        type_name: str,
        from_version: int,
        fn: Upcaster,
        *,
        to_type: str | None = None,
        to_version: int | None = None,
    ) -> None:
        """Register ``fn`` as the step from ``type_name`` at ``from_version``."""
        if not isinstance(type_name, str) or not type_name:
            raise InvalidInput(f"an upcaster needs a type name, got {type_name!r}")
        _check_version("from_version", from_version)
        if not callable(fn):
            raise InvalidInput(f"upcaster for {type_name!r} v{from_version} is not callable")
        target = to_type or type_name
        version = (
            from_version + 1 if to_version is None else _check_version("to_version", to_version)
        )
        if target == type_name and version <= from_version:
            raise InvalidInput(
                f"upcaster for {type_name!r} must lift from_version={from_version} to a higher "
                f"version, not {version}"
            )
        key = (type_name, from_version)
        known = self._steps.get(key)
        if known is not None and known.fn is not None and not _same_function(known.fn, fn):
            raise EventTypeError(
                f"{type_name!r} version {from_version} already has an upcaster "
                f"({known.name}); one step per version: compose the two functions"
            )
        self._steps[key] = Step(type_name, from_version, target, version, fn)
        self.generation += 1

    def rename(self, old: str, new: str) -> None:
        """Read events stored under the name ``old`` as ``new`` (same schema versions)."""
        if not old or not new or old == new:
            raise InvalidInput(f"rename needs two different type names, got {old!r} -> {new!r}")
        known = self._renames.get(old)
        if known is not None and known != new:
            raise EventTypeError(f"{old!r} is already renamed to {known!r}, not {new!r}")
        self._renames[old] = new
        self.generation += 1

    def add_state(self, state_type: str, from_version: int, fn: Upcaster) -> None:
        """Register ``fn`` as the step lifting snapshots of ``state_type`` from a version."""
        _check_version("from_version", from_version)
        known = self._state_steps.get((state_type, from_version))
        if known is not None and not _same_function(known, fn):
            raise EventTypeError(
                f"state {state_type!r} version {from_version} already has an upcaster"
            )
        self._state_steps[(state_type, from_version)] = fn
        self.generation += 1

    def renamed_to(self, old: str) -> str | None:
        """The name events stored as ``old`` are read as, if it was renamed."""
        return self._renames.get(old)

    def old_names(self, name: str) -> list[str]:
        """Every stored name whose events read back as ``name`` (renames and type steps).

        A store's ``types=`` filter on ``name`` should also match these.
        """
        sources = {old for old, new in self._renames.items() if new == name}
        sources |= {s.type for s in self._steps.values() if s.to_type == name and s.type != name}
        found: set[str] = set()
        while sources:
            old = sources.pop()
            if old not in found and old != name:
                found.add(old)
                sources |= set(self.old_names(old)) - found
        return sorted(found)

    def steps(self) -> list[Step]:
        """Every registered step (renames not included), by type and version."""
        return sorted(self._steps.values(), key=lambda s: (s.type, s.from_version))

    def renames(self) -> dict[str, str]:
        """Old name -> new name, for every rename."""
        return dict(self._renames)

    def plan(
        self, type_name: str, version: int, current: CurrentVersion, where: str = ""
    ) -> tuple[list[Step], str, int]:
        """The steps that lift ``type_name`` at ``version`` to the code's current version.

        Returns ``(steps, final type, final version)``; no steps when the stored version
        is current, or when the type has no class and no upcasters (it reads as a dict).
        A type without a class is lifted as far as its upcasters go. Raises
        `MissingUpcaster` when a class exists but no chain reaches its version.
        """
        steps: list[Step] = []
        name, at = type_name, version
        seen: set[tuple[str, int]] = set()
        while True:
            target = current(name)
            if target == at:
                return steps, name, at
            if (name, at) in seen:
                raise EventTypeError(
                    f"the upcasters of {type_name!r} version {version} go round in a loop at "
                    f"{name!r} version {at}"
                )
            seen.add((name, at))
            step = self._steps.get((name, at))
            if step is None and name in self._renames:
                step = Step(name, at, self._renames[name], at, None)
            if step is not None:
                steps.append(step)
                name, at = step.to_type, step.to_version
                continue
            if target is None:
                return steps, name, at
            raise MissingUpcaster(type_name, version, (name, at), target, where)

    def upcast(
        self, type_name: str, version: int, data: dict[str, Any], current: CurrentVersion
    ) -> tuple[str, int, dict[str, Any]]:
        """``data`` stored as ``type_name`` at ``version``, lifted to the current version."""
        steps, name, at = self.plan(type_name, version, current)
        return name, at, run_steps(steps, type_name, version, data)

    def upcast_state(
        self, state_type: str, from_version: int, data: dict[str, Any], to_version: int
    ) -> dict[str, Any]:
        """A snapshot state stored at ``from_version`` lifted to ``to_version``."""
        at = from_version
        while at < to_version:
            fn = self._state_steps.get((state_type, at))
            if fn is None:
                raise MissingUpcaster(state_type, from_version, (state_type, at), to_version)
            data = run_steps([Step(state_type, at, state_type, at + 1, fn)], state_type, at, data)
            at += 1
        if at != to_version:
            raise MissingUpcaster(state_type, from_version, (state_type, at), to_version)
        return data

    def has_state_path(self, state_type: str, from_version: int, to_version: int) -> bool:
        """Whether `upcast_state` can lift ``state_type`` from one version to the other."""
        return from_version <= to_version and all(
            (state_type, v) in self._state_steps for v in range(from_version, to_version)
        )


def run_steps(
    steps: list[Step], type_name: str, version: int, data: dict[str, Any], where: str = ""
) -> dict[str, Any]:
    """Apply ``steps`` to ``data`` in turn; raise `UpcastFailed` naming a step that fails."""
    for step in steps:
        try:
            data = step.apply(data)
        except Exception as exc:
            cause = f"{type(exc).__name__}: {exc}"
            raise UpcastFailed(
                type_name, version, (step.type, step.from_version), step.name, cause, where
            ) from exc
        if not isinstance(data, dict):
            raise UpcastFailed(
                type_name,
                version,
                (step.type, step.from_version),
                step.name,
                f"it returned a {type(data).__name__}",
                where,
            )
    return data
