"""Read-model rows as records: the decoders both SQL read-model stores share (their
queries select the same columns in the same order)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..position import Position
from .store import Checkpoint, ParkedEvent, PartitionState, VersionRecord, VersionState

__all__ = ["checkpoint_of", "ordered", "parked_of", "version_of"]


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


def ordered(rows: Iterable[tuple[str, bytes]], ids: Sequence[str]) -> dict[str, bytes]:
    """Found documents in the order their ids were asked for."""
    found = dict(rows)
    return {i: found[i] for i in ids if i in found}
