"""Positions in the global log, and the expected-version constants."""

from __future__ import annotations

import enum
import re
from typing import Final, TypeAlias

import msgspec

from .errors import InvalidExpectedVersion, InvalidPosition

__all__ = [
    "ANY",
    "MAX_POSITION_PART",
    "NO_STREAM",
    "START",
    "STREAM_EXISTS",
    "ExpectedVersion",
    "Position",
    "StreamState",
    "check_expected_version",
]


MAX_POSITION_PART: Final = 2**63 - 1
"""The largest ``tx`` or ``seq`` a position string may hold (a signed 64-bit integer)."""

# ASCII digits only: int() would also take " 5 ", "1_000", "+5" and other scripts' digits,
# and a checkpoint that is not exactly what a store wrote is a bug to hear about.
_FORM = re.compile(r"(?:([0-9]+):)?([0-9]+)")
_MAX_DIGITS = len(str(MAX_POSITION_PART))


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
        """Parse the string form back; raise `InvalidPosition` naming the bad text.

        Only the exact form: ASCII digits, no sign, space or ``_``, each number at most
        `MAX_POSITION_PART`.
        """
        if isinstance(text, Position):
            return text
        if not isinstance(text, str):
            raise InvalidPosition(text)
        found = _FORM.fullmatch(text)
        if found is None:
            raise InvalidPosition(text)
        parts = (found[1] or "0", found[2])
        # Length first: int() refuses strings of thousands of digits with a ValueError.
        if any(len(part.lstrip("0")) > _MAX_DIGITS for part in parts) or any(
            int(part) > MAX_POSITION_PART for part in parts
        ):
            raise InvalidPosition(text, f"its numbers must be at most {MAX_POSITION_PART}")
        tx, seq = int(parts[0]), int(parts[1])
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
