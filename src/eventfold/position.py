"""Positions in the global log, and the expected-version constants."""

from __future__ import annotations

import enum
from typing import Final, TypeAlias

import msgspec

from .errors import InvalidExpectedVersion, InvalidPosition

__all__ = [
    "ANY",
    "NO_STREAM",
    "START",
    "STREAM_EXISTS",
    "ExpectedVersion",
    "Position",
    "StreamState",
    "check_expected_version",
]


class Position(msgspec.Struct, frozen=True, order=True):
    """A place in the global log; totally ordered, and what checkpoints store.

    The embedded backends number events 1, 2, 3 … in commit order, so ``tx`` is 0 and
    ``seq`` is that number. On PostgreSQL the order is ``(transaction id, sequence)``: a
    row becomes readable only when every older writing transaction has finished, so a
    reader never skips an event that commits late (see the PostgreSQL backend).

    The string form is ``"seq"`` when ``tx`` is 0 and ``"tx:seq"`` otherwise;
    ``Position.parse(str(p)) == p``.
    """

    tx: int = 0
    seq: int = 0

    def __str__(self) -> str:
        return str(self.seq) if self.tx == 0 else f"{self.tx}:{self.seq}"

    @classmethod
    def parse(cls, text: str | Position) -> Position:
        """Parse the string form back; raise `InvalidPosition` naming the bad text."""
        if isinstance(text, Position):
            return text
        if not isinstance(text, str):
            raise InvalidPosition(text)
        head, sep, tail = text.strip().partition(":")
        try:
            if sep:
                tx, seq = int(head), int(tail)
            else:
                tx, seq = 0, int(head)
        except ValueError:
            raise InvalidPosition(text) from None
        if tx < 0 or seq < 0 or (sep and not (head.isdigit() and tail.isdigit())):
            raise InvalidPosition(text)
        return cls(tx, seq)


START: Final = Position(0, 0)
"""The position before the first event: ``read_all(after=START)`` reads everything."""


class StreamState(enum.Enum):
    """Expected-version constants that are not a plain version number."""

    ANY = "any"
    """No check: append whatever the stream's version."""
    NO_STREAM = "no_stream"
    """The stream must have no events yet (the same as version 0)."""
    STREAM_EXISTS = "stream_exists"
    """The stream must have at least one event."""

    def __str__(self) -> str:
        return self.name


ANY: Final = StreamState.ANY
NO_STREAM: Final = StreamState.NO_STREAM
STREAM_EXISTS: Final = StreamState.STREAM_EXISTS

ExpectedVersion: TypeAlias = int | StreamState


def check_expected_version(expected: object) -> ExpectedVersion:
    """Return ``expected`` if it is a valid expected version, else raise a clear error."""
    if isinstance(expected, StreamState):
        return expected
    if isinstance(expected, bool) or not isinstance(expected, int) or expected < 0:
        raise InvalidExpectedVersion(expected)
    return expected


def version_matches(expected: ExpectedVersion, actual: int) -> bool:
    """Whether a stream at ``actual`` satisfies ``expected`` (shared by every backend)."""
    if expected is ANY:
        return True
    if expected is NO_STREAM:
        return actual == 0
    if expected is STREAM_EXISTS:
        return actual > 0
    return expected == actual
