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
from typing import Any

import msgspec

from ..errors import InvalidInput

__all__ = [
    "SnapshotContext",
    "SnapshotStrategy",
    "decode_state",
    "encode_state",
    "every",
    "older_than",
    "on_replay",
    "when",
]


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
    from ._aggregate import Aggregate

    if isinstance(state, Aggregate):
        return msgspec.json.encode(
            {k: v for k, v in vars(state).items() if k != "_eventfold_pending"}
        )
    return msgspec.json.encode(state)


def decode_state(data: bytes, like: Any) -> Any:
    """Decode a snapshot's state into the type of ``like`` (the initial state).

    Aggregates get each field converted to its class annotation when it has one.
    """
    from ._aggregate import Aggregate

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
