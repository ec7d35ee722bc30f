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
    "events_out",
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
    upcast = event.upcast_from
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
        stored_type=None if upcast is None else upcast[0],
        stored_schema_version=None if upcast is None else upcast[1],
        undecodable=undecodable,
    )


class _PageEvent(msgspec.Struct, gc=False, omit_defaults=True):
    """`EventOut` as a page writes it: the same fields in the same order, the same ones
    left out (so the same JSON), built positionally, with the stored metadata passed
    through as raw JSON."""

    event_id: str
    stream_id: str
    version: int
    position: str
    type: str
    schema_version: int
    data: Any
    metadata: msgspec.Raw
    recorded_at: str
    correlation_id: str | None = None
    causation_id: str | None = None
    stored_type: str | None = None
    stored_schema_version: int | None = None
    undecodable: str | None = None


def _uuid_text(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def events_out(events: list[RecordedEvent]) -> list[Any]:
    """`event_out` of every event of a page, encoded the same and built faster: the
    stored metadata is not decoded unless it may hold a correlation or causation id,
    and events recorded in the same microsecond share their time's text."""
    out: list[Any] = []
    append = out.append
    last_us = -1
    last_at = ""
    for e in events:
        data = e.data
        undecodable = None
        if isinstance(data, UndecodedPayload):
            undecodable, data = str(data.error), None
        meta = e.raw_metadata
        correlation = causation = None
        if meta != b"{}" and (b"correlation_id" in meta or b"causation_id" in meta):
            decoded = e.metadata
            found = decoded.get("correlation_id")
            correlation = None if found is None else str(found)
            found = decoded.get("causation_id")
            causation = None if found is None else str(found)
        us = e.recorded_us
        if us != last_us:
            last_us, last_at = us, _iso_us(us)
        tx = e.raw_tx
        upcast = e.upcast_from
        append(
            _PageEvent(
                _uuid_text(e.raw_event_id),
                e.stream_id,
                e.version,
                str(e.raw_seq) if tx == 0 else f"{tx}:{e.raw_seq}",
                e.type,
                e.schema_version,
                data,
                msgspec.Raw(meta),
                last_at,
                correlation,
                causation,
                None if upcast is None else upcast[0],
                None if upcast is None else upcast[1],
                undecodable,
            )
        )
    return out


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
