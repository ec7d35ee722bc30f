"""Stored events that no longer decode: how a read reports them, or keeps them as JSON.

Events are never changed in place, so a payload that does not decode into its class (a
write that bypassed validation, a class changed without an upcaster, a payload stored
before the nesting limit existed) stays in the log. Every read path reports it with one
error, `UndecodableEvent`, naming where it is and what is wrong, so a consumer can park
it and an operator can repair it. An operator's tool that must show the log as it is
reads inside `keep_undecodable`: such an event then reads back with an `UndecodedPayload`
as its data instead of stopping the read.
"""

from __future__ import annotations

from contextlib import ContextDecorator
from contextvars import ContextVar
from dataclasses import dataclass

from ._position import Position
from .errors import UndecodableEvent

__all__ = ["UndecodedPayload", "keep_undecodable", "keeping_undecodable", "undecodable"]

_KEEP: ContextVar[bool] = ContextVar("eventfold_keep_undecodable", default=False)


@dataclass(frozen=True)
class UndecodedPayload:
    """The data of an event read inside `keep_undecodable` that does not decode."""

    raw: bytes
    """The stored JSON, as stored."""
    error: UndecodableEvent
    """Why it does not decode."""

    @property
    def text(self) -> str:
        """The stored JSON as text (undecodable bytes replaced)."""
        return self.raw.decode("utf-8", "replace")


class keep_undecodable(ContextDecorator):
    """Within this block, reads return undecodable events with `UndecodedPayload` data.

    Scoped to the current context (and the tasks it starts), so an inspection command
    can show every stored event while every other reader keeps failing loudly.
    """

    # A class, not a generator: the HTTP API enters it on every request, and a class is
    # entered and left with less work.

    def __enter__(self) -> None:
        self._token = _KEEP.set(True)

    def __exit__(self, *exc: object) -> None:
        _KEEP.reset(self._token)

    def _recreate_cm(self) -> keep_undecodable:
        return keep_undecodable()  # a decorated function's calls may overlap


def keeping_undecodable() -> bool:
    """Whether reads in this context keep undecodable events instead of raising."""
    return _KEEP.get()


def undecodable(
    stream_id: str,
    version: int,
    event_type: str,
    schema_version: int,
    position: Position | None,
    data: bytes,
    cause: BaseException | str,
    prefix: str = "",
) -> UndecodableEvent:
    """The error for one stored event's payload that failed to decode because of ``cause``."""
    if isinstance(cause, RecursionError):
        text = "nested too deeply for a reader to follow"
    else:
        text = str(cause)
    detail, sep, path = text.rpartition(" - at `")
    field: str | None = None
    if sep and path.endswith("`"):
        field = path[:-1].removeprefix("$").removeprefix(".") or None
    else:
        detail = text
    return UndecodableEvent(
        stream_id,
        version,
        event_type,
        schema_version,
        position,
        prefix + detail,
        field=field,
        raw=bytes(data),
    )
