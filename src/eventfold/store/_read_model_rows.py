"""What the SQL read-model stores share: row decoders and encoders (their statements
name the same columns in the same order) and the end-or-failed guard of a transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .._position import Position
from ..errors import InvalidInput
from ._read_model_port import (
    Checkpoint,
    ParkedEvent,
    PartitionState,
    ProjectionSummary,
    VersionRecord,
    VersionState,
)

__all__ = [
    "TransactionGuard",
    "checkpoint_of",
    "ordered",
    "parked_of",
    "parked_row",
    "summaries_of",
    "version_of",
]


def checkpoint_of(row: Sequence[Any]) -> Checkpoint:
    """A `Checkpoint` from a row of ``sql.GET_CHECKPOINT``'s columns."""
    name, version, part, tx, seq, state, error, updated_us = row
    return Checkpoint(
        name, version, part, Position(tx, seq), PartitionState(state), error, updated_us
    )


def version_of(row: Sequence[Any]) -> VersionRecord:
    """A `VersionRecord` from a row of ``sql.GET_VERSION``'s columns."""
    name, version, state, changed_us = row
    return VersionRecord(name, version, VersionState(state), changed_us)


def parked_of(row: Sequence[Any]) -> ParkedEvent:
    """A `ParkedEvent` from a row of ``sql.PARKED``'s columns."""
    name, version, part, tx, seq, stream_id, event_id, type_, error, attempts, parked_us = row
    return ParkedEvent(
        name,
        version,
        part,
        Position(tx, seq),
        stream_id,
        event_id,
        type_,
        error,
        attempts,
        parked_us,
    )


def parked_row(event: ParkedEvent) -> tuple[Any, ...]:
    """The parameters of ``sql.PARK`` (the columns `parked_of` reads back) for ``event``."""
    at = event.position
    return (
        event.name,
        event.version,
        event.partition,
        at.tx,
        at.seq,
        event.stream_id,
        event.event_id,
        event.type,
        event.error,
        event.attempts,
        event.parked_us,
    )


def summaries_of(
    slots: Sequence[tuple[str, int]], rows: Iterable[Sequence[Any]]
) -> list[ProjectionSummary]:
    """`ProjectionSummary` values from the rows of a summaries statement: each row is
    ``(ord, kind, a, b, c, d, e, f)``, ``ord`` the slot's place (from 1), ``kind`` 0 for
    a checkpoint ``(part, tx, seq, state, error, updated_us)``, 1 for the parked events
    ``(count, oldest parked_us)``, 2 for the version's record ``(state in d, changed_us
    in f)`` and 3 for the name's active version ``(a)``."""
    checkpoints: list[list[Checkpoint]] = [[] for _ in slots]
    parked: list[tuple[int, int | None]] = [(0, None)] * len(slots)
    records: list[VersionRecord | None] = [None] * len(slots)
    active: list[int | None] = [None] * len(slots)
    for ord_, kind, a, b, c, d, e, f in rows:
        i = int(ord_) - 1
        name, version = slots[i]
        if kind == 0:
            checkpoints[i].append(
                Checkpoint(name, version, int(a), Position(b, c), PartitionState(d), e, f)
            )
        elif kind == 1:
            parked[i] = (int(a), b)
        elif kind == 2:
            records[i] = VersionRecord(name, version, VersionState(d), f)
        else:
            active[i] = int(a)
    return [
        ProjectionSummary(
            name=name,
            version=version,
            checkpoints=tuple(sorted(checkpoints[i], key=lambda cp: cp.partition)),
            parked=parked[i][0],
            oldest_parked_us=parked[i][1],
            active_version=active[i],
            record=records[i],
        )
        for i, (name, version) in enumerate(slots)
    ]


def ordered(rows: Iterable[tuple[str, bytes]], ids: Sequence[str]) -> dict[str, bytes]:
    """Found documents in the order their ids were asked for."""
    found = dict(rows)
    return {i: found[i] for i in ids if i in found}


class TransactionGuard:
    """A transaction that refuses use once it has ended or once any call in it failed
    (it will be rolled back, even if the handler caught the error)."""

    _closed: bool = False
    _failed: BaseException | None = None

    def _check(self) -> None:
        if self._closed:
            raise InvalidInput("this read-model transaction has ended; open a new one")
        if self._failed is not None:
            raise InvalidInput(
                f"this read-model transaction already failed ({self._failed}) and will be "
                "rolled back; leave the block and retry in a new transaction"
            )

    def _fail(self, error: BaseException) -> BaseException:
        if self._failed is None:
            self._failed = error
        return error
