"""Snapshots: a stream's folded state at a version, kept to shorten loads.

Snapshots are derived and disposable (invariant 5): one that is outdated, of another
schema version, corrupt, or from a stream that was replaced is ignored with a warning and
rebuilt from the events. A snapshot names the event it was folded up to (version, id and
recorded time), so a load can check the stream still holds that very event.

When to take one is a `SnapshotStrategy`; strategies combine with ``|``::

    strategy = every(100) | older_than(timedelta(hours=1)) | on_replay(500)
"""

from __future__ import annotations

import datetime as dt
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import msgspec

from .errors import InvalidInput

__all__ = [
    "MemorySnapshotStore",
    "Snapshot",
    "SnapshotContext",
    "SnapshotStore",
    "SnapshotStrategy",
    "decode_state",
    "encode_state",
    "every",
    "older_than",
    "on_replay",
    "when",
]


class Snapshot(msgspec.Struct, frozen=True):
    """A stream's encoded state after the event at ``version``."""

    stream_id: str
    state_type: str
    version: int
    schema_version: int
    data: bytes
    event_id: bytes
    """The id of the event at ``version`` (16 bytes): detects a replaced stream."""
    recorded_us: int
    """When the event at ``version`` was recorded (microseconds since the epoch, UTC)."""
    taken_us: int
    """When the snapshot was taken."""


@runtime_checkable
class SnapshotStore(Protocol):
    """Where a backend keeps snapshots (a table beside its events)."""

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` (replacing one of the same stream, state type and version)."""

    async def load_snapshot(
        self,
        stream_id: str,
        state_type: str,
        *,
        max_version: int | None = None,
        max_recorded_us: int | None = None,
    ) -> Snapshot | None:
        """The newest snapshot at or before the bounds, or None."""


class MemorySnapshotStore:
    """Snapshots in a dict: for the memory backend and tests."""

    def __init__(self) -> None:
        self._by_stream: dict[tuple[str, str], dict[int, Snapshot]] = {}

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        self._by_stream.setdefault((snapshot.stream_id, snapshot.state_type), {})[
            snapshot.version
        ] = snapshot

    async def load_snapshot(
        self,
        stream_id: str,
        state_type: str,
        *,
        max_version: int | None = None,
        max_recorded_us: int | None = None,
    ) -> Snapshot | None:
        found = [
            s
            for s in self._by_stream.get((stream_id, state_type), {}).values()
            if (max_version is None or s.version <= max_version)
            and (max_recorded_us is None or s.recorded_us <= max_recorded_us)
        ]
        return max(found, key=lambda s: s.version, default=None)


@dataclass(frozen=True)
class SnapshotContext:
    """What a strategy sees after a command's append."""

    stream_id: str
    state: Any
    new_events: Sequence[Any]
    version: int
    """The stream's version after the append."""
    snapshot_version: int
    """The version of the snapshot the load started from (0: none)."""
    snapshot_taken: dt.datetime | None
    """When that snapshot was taken (None: there was none)."""
    replayed: int
    """How many events the load had to fold on top of the snapshot."""
    now: dt.datetime


class SnapshotStrategy:
    """Decides after each command whether to take a snapshot; combine with ``|``."""

    def __init__(self, test: Callable[[SnapshotContext], bool], description: str) -> None:
        self._test = test
        self.description = description

    def __call__(self, context: SnapshotContext) -> bool:
        return self._test(context)

    def __or__(self, other: SnapshotStrategy) -> SnapshotStrategy:
        return SnapshotStrategy(
            lambda c: self(c) or other(c), f"{self.description} | {other.description}"
        )

    def __repr__(self) -> str:
        return f"SnapshotStrategy({self.description})"


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{name} must be an int >= 1, got {value!r}")


def every(n: int) -> SnapshotStrategy:
    """Snapshot when the stream's version crosses a multiple of ``n``."""
    _positive("every(n)", n)
    return SnapshotStrategy(
        lambda c: c.version // n > (c.version - len(c.new_events)) // n, f"every({n})"
    )


def older_than(age: dt.timedelta) -> SnapshotStrategy:
    """Snapshot when the newest snapshot is older than ``age`` (or there is none)."""
    if not isinstance(age, dt.timedelta) or age <= dt.timedelta(0):
        raise InvalidInput(f"older_than takes a positive timedelta, got {age!r}")
    return SnapshotStrategy(
        lambda c: c.snapshot_taken is None or c.now - c.snapshot_taken > age,
        f"older_than({age})",
    )


def when(predicate: Callable[[Any, Sequence[Any]], bool]) -> SnapshotStrategy:
    """Snapshot when ``predicate(new_state, new_events)`` holds (e.g. on a transition)."""
    return SnapshotStrategy(lambda c: bool(predicate(c.state, c.new_events)), "when(...)")


def on_replay(k: int) -> SnapshotStrategy:
    """Snapshot when the load had to fold more than ``k`` events past its snapshot."""
    _positive("on_replay(k)", k)
    return SnapshotStrategy(lambda c: c.replayed > k, f"on_replay({k})")


def encode_state(state: Any) -> bytes:
    """Encode a state for a snapshot (msgspec; an aggregate's instance fields)."""
    from .aggregate import Aggregate

    if isinstance(state, Aggregate):
        return msgspec.json.encode(
            {k: v for k, v in vars(state).items() if k != "_eventfold_pending"}
        )
    return msgspec.json.encode(state)


def decode_state(data: bytes, like: Any) -> Any:
    """Decode a snapshot's state into the type of ``like`` (the initial state).

    Aggregates get each field converted to its class annotation when it has one.
    """
    from .aggregate import Aggregate

    cls = type(like)
    if isinstance(like, Aggregate):
        raw = msgspec.json.decode(data)
        if not isinstance(raw, dict):
            raise msgspec.ValidationError(f"expected an object of {cls.__name__}'s fields")
        hints = typing.get_type_hints(cls)
        obj = object.__new__(cls)
        for key, value in raw.items():
            obj.__dict__[key] = msgspec.convert(value, hints[key]) if key in hints else value
        return obj
    return msgspec.json.decode(data, type=cls)
