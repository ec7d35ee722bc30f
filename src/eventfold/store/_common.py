"""Input checks and append rules that every backend shares."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, overload

from .._codec import Codec, EncodedEvent
from .._events import Event, NewEvent, name_problem
from .._position import START, ExpectedVersion, Position, check_expected_version
from ..errors import (
    DuplicateEventId,
    InvalidInput,
    InvalidPosition,
    InvalidStreamId,
    SchemaTooNew,
    StoreError,
    TransformConflict,
)
from .protocol import AppendResult, StreamInfo

if TYPE_CHECKING:
    from .ports import TransactionParticipant

__all__ = [
    "MAX_STORED_INT",
    "MAX_STREAM_ID_LENGTH",
    "PAGE_SIZE",
    "CommitListeners",
    "bounded",
    "category_names",
    "category_of",
    "check_event_ids",
    "check_from_version",
    "check_limit",
    "check_recorded",
    "check_retry",
    "check_stream_id",
    "check_unmigrated",
    "duplicate_in_batch",
    "explicit_ids",
    "log_start",
    "participant_failed",
    "participant_order",
    "prepare_append",
    "switch_refused",
    "type_names",
]

MAX_STREAM_ID_LENGTH = 256
"""Longest stream id, in characters."""

PAGE_SIZE = 1000
"""Rows fetched per round trip by the paging readers."""

MAX_STORED_INT = 2**63 - 1
"""The largest integer a version or position column holds (a signed 64-bit integer).

A bound past it (a version or a time to read up to or from) is taken as this, which no
stored value reaches: every backend then answers "past the end" alike, where SQLite would
raise OverflowError and PostgreSQL "bigint out of range"."""


class CommitListeners:
    """Callbacks run on the event loop's thread after each append this process commits.

    A store's ``committed`` attribute: subscribers in the same process use it to wake at
    once instead of polling (`eventfold.projections.StoreWakeUps`). A callback must be quick
    and must not raise; it learns only that the log has grown.
    """

    __slots__ = ("_callbacks",)

    def __init__(self) -> None:
        self._callbacks: list[Callable[[], None]] = []

    def add(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` after every commit; returns the function that removes it."""
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    def __bool__(self) -> bool:
        return bool(self._callbacks)

    def fire(self) -> None:
        """Run every callback (the store calls this after a commit)."""
        for callback in tuple(self._callbacks):
            callback()


def check_stream_id(stream_id: object) -> str:
    """Return ``stream_id`` if valid; raise `InvalidStreamId` saying why not."""
    if not isinstance(stream_id, str):
        raise InvalidStreamId(stream_id, f"must be a str, got {type(stream_id).__name__}")
    problem = name_problem(stream_id, MAX_STREAM_ID_LENGTH)
    if problem is not None:
        shown = stream_id if len(stream_id) <= MAX_STREAM_ID_LENGTH else stream_id[:40] + "…"
        raise InvalidStreamId(shown, problem)
    return stream_id


def category_of(stream_id: str) -> str:
    """The stream's category: the part of its id before the first ``-``."""
    return stream_id.partition("-")[0]


def check_limit(limit: object, name: str = "limit") -> int | None:
    """Validate an optional non-negative row limit."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidInput(f"{name} must be None or an int >= 0, got {limit!r}")
    return limit


def check_unmigrated(found: int, known: int, where: str) -> None:
    """Raise unless a store opened read-only (so never migrated) is at migration ``known``,
    the one this code reads; ``found`` is its own (at least 1)."""
    if found > known:
        raise SchemaTooNew(found, known)
    if found < known:
        raise StoreError(
            f"the eventfold store at {where} is at migration {found}, older than this "
            f"eventfold's {known}, and a read-only store is not migrated; open it once "
            "without read_only=True (as the application does) to migrate it"
        )


@overload
def bounded(value: int) -> int: ...
@overload
def bounded(value: None) -> None: ...
def bounded(value: int | None) -> int | None:
    """``value`` capped at `MAX_STORED_INT` (see there); None stays None."""
    return value if value is None or value <= MAX_STORED_INT else MAX_STORED_INT


def check_from_version(from_version: object) -> int | None:
    """Validate `read_stream`'s ``from_version`` (None or an int >= 0), capped."""
    return bounded(check_limit(from_version, "from_version"))


def log_start(after: Position | str | None, *, paired: bool) -> Position:
    """Where a read of the global log starts: ``after`` checked against the store's form.

    ``paired`` is True for a store whose positions are ``tx:seq`` pairs (PostgreSQL), False
    for one that numbers its log 1, 2, 3 … (``tx`` always 0). A position in the other
    store's form is refused: a checkpoint taken from another store is a bug, and reading
    from it would silently start at the wrong place.
    """
    if after is None:
        return START
    position = Position.parse(after)
    parts = (position.tx, position.seq)
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in parts):
        raise InvalidPosition(after, "tx and seq must be ints >= 0")
    if not paired and position.tx != 0:
        raise InvalidPosition(
            str(after),
            "this store numbers its log 1, 2, 3 …, and 'tx:seq' is a PostgreSQL store's "
            "position; pass a plain number such as '42' (a checkpoint from another store "
            "does not apply here)",
        )
    if paired and position.tx == 0 and position.seq != 0:
        raise InvalidPosition(
            str(after),
            "a PostgreSQL store's positions are 'tx:seq' such as '7301:42' (a plain number "
            "is a SQLite or memory store's position, which does not apply here); take one "
            "from a RecordedEvent.position or head(), or pass '0' to read from the start",
        )
    if position.tx > MAX_STORED_INT or position.seq > MAX_STORED_INT:
        return Position(min(position.tx, MAX_STORED_INT), min(position.seq, MAX_STORED_INT))
    return position


def prepare_append(
    codec: Codec,
    stream_id: str,
    events: Sequence[Event | NewEvent],
    expected_version: object,
) -> tuple[list[EncodedEvent], ExpectedVersion]:
    """Validate an append's arguments and encode its events; nothing is stored on error."""
    check_stream_id(stream_id)
    expected = check_expected_version(expected_version)
    encoded = codec.encode(stream_id, events)
    duplicate_in_batch(stream_id, encoded)
    return encoded, expected


def type_names(types: Sequence[str | type[Event]] | None) -> list[str] | None:
    """Normalise a ``types`` filter to stable type names."""
    if types is None:
        return None
    if isinstance(types, str):
        types = [types]
    names: list[str] = []
    for t in types:
        if isinstance(t, str):
            names.append(t)
        elif isinstance(t, type) and issubclass(t, Event):
            names.append(t.__event_type__)
        else:
            raise InvalidInput(f"types holds {t!r}; pass type names or Event subclasses")
    return names


def category_names(categories: Sequence[str] | None) -> list[str] | None:
    """Normalise a ``categories`` filter (a bare string is one category)."""
    if categories is None:
        return None
    if isinstance(categories, str):
        return [categories]
    names = list(categories)
    for name in names:
        if not isinstance(name, str):
            raise InvalidInput(f"categories holds {name!r}; pass category names (str)")
    return names


StoredCopy = tuple[int, str, bytes, Position]
"""An already stored event found by id: (version, type, data, position)."""


def check_retry(
    stream_id: str, encoded: Sequence[EncodedEvent], found: Mapping[bytes, StoredCopy]
) -> AppendResult | None:
    """Decide whether an append is a retry of one already stored.

    ``found`` maps the append's explicit event ids that are already in the stream to
    their stored copies. None found: not a retry. All found, consecutive, in order and
    with the same type and data: a retry, so return the first append's result. Anything
    else: `DuplicateEventId`.
    """
    if not found:
        return None
    first = found.get(encoded[0].event_id)
    if first is not None and len(found) == len(encoded):
        for offset, enc in enumerate(encoded):
            copy = found.get(enc.event_id)
            if (
                copy is None
                or copy[0] != first[0] + offset
                or copy[1] != enc.type
                or copy[2] != enc.data
            ):
                break
        else:
            last = found[encoded[-1].event_id]
            return AppendResult(last[0], last[3], retry=True)
    dup = next(enc.event_id for enc in encoded if enc.event_id in found)
    raise DuplicateEventId(stream_id, uuid.UUID(bytes=dup))


def check_event_ids(event_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Validate a list of event ids to look up."""
    if isinstance(event_ids, (str, bytes, uuid.UUID)) or not isinstance(event_ids, Sequence):
        raise InvalidInput(f"event_ids must be a list of uuid.UUID, got {event_ids!r}")
    for event_id in event_ids:
        if not isinstance(event_id, uuid.UUID):
            raise InvalidInput(f"event_ids holds {event_id!r}; pass uuid.UUID values")
    return list(event_ids)


def explicit_ids(encoded: Sequence[EncodedEvent]) -> list[bytes]:
    """The ids the caller chose (only these can collide with stored events)."""
    return [e.event_id for e in encoded if e.explicit_id]


def duplicate_in_batch(stream_id: str, encoded: Sequence[EncodedEvent]) -> None:
    """Reject one append that carries the same event id twice."""
    ids = explicit_ids(encoded)
    if len(set(ids)) != len(ids):
        seen: set[bytes] = set()
        for i in ids:
            if i in seen:
                raise DuplicateEventId(stream_id, uuid.UUID(bytes=i), repeated=True)
            seen.add(i)


def check_recorded(recorded_us: Sequence[int], count: int) -> list[int]:
    """Validate the recorded times a transformation's copies keep: one int per event."""
    stamps = list(recorded_us)
    if len(stamps) != count or not all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in stamps
    ):
        raise InvalidInput(
            f"recorded_us must hold one int >= 0 (microseconds since the epoch) per event: "
            f"{count} events, got {stamps[:5]!r}{'…' if len(stamps) > 5 else ''}"
        )
    return stamps


def switch_refused(
    source: StreamInfo, target: StreamInfo, version: int, target_version: int
) -> TransformConflict:
    """Why a transformation's switch of ``source`` to ``target`` matched nothing."""
    sid, tid = source.stream_id, target.stream_id
    if source.replaced_by is not None:
        reason = f"it was already replaced by {source.replaced_by!r}"
    elif target.replaced_by is not None:
        reason = f"the target was itself replaced by {target.replaced_by!r}"
    elif target.version != target_version:
        reason = (
            f"the target gained events it was not given (it holds {target.version}, "
            f"{target_version} were copied)"
        )
    elif source.version != version:
        reason = ""
    else:
        reason = "the switch matched no stream row"
    return TransformConflict(sid, tid, version, source.version, reason)


def participant_order(participant: TransactionParticipant) -> tuple[int, str]:
    """Where a transaction participant runs among the others: by order, then name."""
    return participant.order, participant.name


def participant_failed(participant: TransactionParticipant, exc: Exception) -> StoreError:
    """The error the appends a participant was given fail with when it raised ``exc``
    (anything but an eventfold or driver error); raise it ``from exc``."""
    return StoreError(
        f"transaction participant {participant.name!r} raised {exc!r}; the appends it was "
        "given were not stored"
    )
