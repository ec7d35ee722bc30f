"""Recorded events, projection statuses and schema records as response bodies."""

from __future__ import annotations

import base64
import datetime as _dt
from typing import Any

import msgspec

from .._events import RecordedEvent
from .._undecodable import UndecodedPayload
from ..projections import BuildProgress, ParkedEvent, ProjectionStatus
from ..schema import SchemaRecord
from ._types import (
    CheckpointOut,
    EventDetail,
    EventOut,
    ParkedOut,
    ProgressOut,
    ProjectionOut,
    SchemaRecordOut,
    StoredPayload,
)

__all__ = [
    "event_detail",
    "event_out",
    "iso",
    "parked_out",
    "progress_out",
    "projection_out",
    "schema_record_out",
]

_encoder = msgspec.json.Encoder()
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_NAIVE_EPOCH = _dt.datetime(1970, 1, 1)  # read as UTC: written with a Z


def iso(when: _dt.datetime) -> str:
    """A UTC time as ISO 8601 with a ``Z``."""
    return when.astimezone(_dt.UTC).isoformat().replace("+00:00", "Z")


def event_out(event: RecordedEvent) -> EventOut:
    """The envelope and decoded data of ``event``."""
    data = event.data
    undecodable = None
    if isinstance(data, UndecodedPayload):
        undecodable, data = str(data.error), None
    metadata = event.metadata
    correlation = metadata.get("correlation_id")
    causation = metadata.get("causation_id")
    # ``data`` stays the typed event: msgspec encodes it as it stored it, with no copy.
    return EventOut(
        event_id=str(event.event_id),
        stream_id=event.stream_id,
        version=event.version,
        position=str(event.position),
        type=event.type,
        schema_version=event.schema_version,
        data=data,
        metadata=metadata,
        recorded_at=_iso_us(event.recorded_us),
        correlation_id=None if correlation is None else str(correlation),
        causation_id=None if causation is None else str(causation),
        stored_type=event.stored_type,
        stored_schema_version=event.stored_schema_version,
        undecodable=undecodable,
    )


def _iso_us(us: int) -> str:
    return (_NAIVE_EPOCH + _dt.timedelta(microseconds=us)).isoformat() + "Z"


def event_detail(event: RecordedEvent) -> EventDetail:
    """``event`` with its stored payload."""
    data = event.data
    if isinstance(data, UndecodedPayload):
        raw, exact = data.raw, True
        try:
            value: Any = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            value = None
    else:
        raw, exact = _encoder.encode(data), False
        value = msgspec.json.decode(raw)
    out = event_out(event)
    stored = StoredPayload(
        encoding="json", json=value, base64=base64.b64encode(raw).decode(), exact=exact
    )
    fields = {f: getattr(out, f) for f in EventOut.__struct_fields__}
    return EventDetail(**fields, stored=stored)


def projection_out(status: ProjectionStatus) -> ProjectionOut:
    """A projection version's status."""
    return ProjectionOut(
        name=status.name,
        version=status.version,
        active_version=status.active_version,
        state=str(status.state),
        position=str(status.position),
        head=str(status.head),
        lag_events=status.lag_events,
        lag_exact=status.lag_exact,
        lag_seconds=round(status.lag_seconds, 6),
        last_error=status.last_error,
        parked=status.parked,
        partitions=[
            CheckpointOut(
                partition=c.partition, position=str(c.position), state=str(c.state), error=c.error
            )
            for c in status.partitions
        ],
    )


def parked_out(parked: ParkedEvent) -> ParkedOut:
    """One parked event."""
    return ParkedOut(
        position=str(parked.position),
        partition=parked.partition,
        stream_id=parked.stream_id,
        event_id=parked.event_id,
        type=parked.type,
        error=parked.error,
        attempts=parked.attempts,
        parked_at=iso(_EPOCH + _dt.timedelta(microseconds=parked.parked_us)),
    )


def progress_out(p: BuildProgress) -> ProgressOut:
    """One partition's rebuild progress."""
    return ProgressOut(
        partition=p.partition,
        position=str(p.position),
        head=str(p.head),
        done=p.done,
        total=p.total,
        rate=round(p.rate, 3),
        eta=None if p.eta is None else round(p.eta, 3),
    )


def schema_record_out(record: SchemaRecord) -> SchemaRecordOut:
    """One recorded schema."""
    return SchemaRecordOut(
        type=record.type,
        version=record.version,
        revision=record.revision,
        schema=record.schema,
        fingerprint=record.fingerprint,
        recorded_at=iso(record.recorded_at),
        producer_version=record.producer_version,
    )
