"""The limit on how deeply a stored payload may nest objects and arrays.

msgspec encodes and decodes nested values recursively, so how deep a value it can handle
depends on how much of the interpreter's stack the caller already uses: a payload written
from a shallow stack could fail to decode in a daemon or a CLI command with a deeper one,
on every read, forever. A fixed limit well under the interpreter's recursion limit, checked
on the encoded bytes before anything is stored, keeps every stored event readable from
any reader.
"""

from __future__ import annotations

from .errors import InvalidEvent

__all__ = ["MAX_NESTING_DEPTH", "nesting_depth_exceeds", "too_deep_error"]

MAX_NESTING_DEPTH = 100
"""How many objects and arrays a stored payload (or metadata) may nest inside each other."""

_OTHER = bytes(c for c in range(256) if c not in b'[]{}"')


def nesting_depth_exceeds(data: bytes, limit: int = MAX_NESTING_DEPTH) -> bool:
    """Whether the JSON in ``data`` nests objects and arrays more than ``limit`` deep.

    Iterative, so it works whatever the caller's stack. Almost every event costs a length
    check or two counts in C: a depth over ``limit`` needs more than ``limit`` opening
    brackets, and twice as many bytes. ``data`` is JSON as msgspec encodes it.
    """
    if len(data) <= 2 * limit or data.count(b"{") + data.count(b"[") <= limit:
        return False
    # Escaped backslashes and quotes go first, then everything but brackets and quotes.
    # Two adjacent quotes enclose nothing (or join two strings): dropping them keeps the
    # rest paired. What is left between quotes is a string's content.
    marks = data.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _OTHER)
    marks = marks.replace(b'""', b"")
    brackets = b"".join(marks.split(b'"')[::2]) if b'"' in marks else marks
    # Each pass removes the innermost pairs (one level) with a few scans in C.
    for _ in range(limit):
        brackets = brackets.replace(b"{}", b"!").replace(b"[]", b"!").translate(None, b"!")
        if not brackets:
            return False
    return True


def too_deep_error(stream_id: str, index: int, what: str) -> InvalidEvent:
    """The error for event ``index`` of an append whose ``what`` is nested too deeply."""
    return InvalidEvent(
        f"event {index} for stream {stream_id!r}: its {what} nests objects and arrays more "
        f"than {MAX_NESTING_DEPTH} levels deep, the limit for stored events (deeper values "
        "could not be read back reliably); flatten it, e.g. a tree as a list of nodes with "
        "parent ids (nothing was stored)"
    )
