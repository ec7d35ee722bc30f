"""Upcasting snapshots: a state stored at an old version lifted to the decider's current one.

Snapshots are disposable (invariant 5), so without a chain an old one is simply rebuilt
from the events; with one, a long stream need not be folded again after a state change::

    @registry.state_upcaster("Account", from_version=1)
    def add_overdraft(state: dict[str, Any]) -> dict[str, Any]:
        return {**state, "overdraft": 0}
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

import msgspec

from .._events import TypeRegistry, default_registry
from ..errors import DecodeError, InvalidInput

__all__ = ["SnapshotLike", "can_upcast_state", "upcast_snapshot", "upcast_state"]


class SnapshotLike(Protocol):
    """What `upcast_snapshot` reads of a snapshot (an `eventfold.Snapshot`)."""

    @property
    def state_type(self) -> str: ...
    @property
    def schema_version(self) -> int: ...
    @property
    def data(self) -> bytes: ...


_S = TypeVar("_S", bound=SnapshotLike)


def upcast_state(
    state_type: str,
    from_version: int,
    data: dict[str, Any],
    *,
    to_version: int,
    registry: TypeRegistry | None = None,
) -> dict[str, Any]:
    """A snapshot's decoded state lifted from ``from_version`` to ``to_version``.

    Raises `MissingUpcaster` naming the missing step, `UpcastFailed` when a step fails.
    """
    upcasters = (registry or default_registry).upcasters
    return upcasters.upcast_state(state_type, from_version, data, to_version)


def can_upcast_state(
    state_type: str, from_version: int, to_version: int, registry: TypeRegistry | None = None
) -> bool:
    """Whether a chain lifts ``state_type`` from ``from_version`` to ``to_version``."""
    upcasters = (registry or default_registry).upcasters
    return upcasters.has_state_path(state_type, from_version, to_version)


def upcast_snapshot(snapshot: _S, *, to_version: int, registry: TypeRegistry | None = None) -> _S:
    """``snapshot`` (an `eventfold.Snapshot`) with its state lifted to ``to_version``.

    Decodes the stored state to a dict, runs the state's chain and encodes it again; the
    caller decodes the result into the state type as for any current snapshot. Raises
    `MissingUpcaster` or `UpcastFailed` (both `DecodeError`) when it cannot: the snapshot
    is then unusable and the stream is folded from its events.
    """
    if not isinstance(snapshot, msgspec.Struct):
        raise InvalidInput(f"upcast_snapshot takes an eventfold.Snapshot, got {snapshot!r}")
    state_type, version = snapshot.state_type, snapshot.schema_version
    try:
        raw = msgspec.json.decode(snapshot.data)
    except msgspec.DecodeError as exc:
        raise DecodeError(state_type, version, f"the snapshot's state: {exc}") from exc
    if not isinstance(raw, dict):
        raise DecodeError(state_type, version, "the snapshot's state is not a JSON object")
    lifted = upcast_state(state_type, version, raw, to_version=to_version, registry=registry)
    replaced: _S = msgspec.structs.replace(
        snapshot, data=msgspec.json.encode(lifted), schema_version=to_version
    )
    return replaced
