"""Recorded events, projection statuses and schema records as response bodies."""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import uuid
from typing import Any

import msgspec

from .._events import RecordedEvent
from .._personal import PERSONAL_KEY
from .._undecodable import UndecodedPayload
from ..projections import BuildProgress, ParkedEvent, ProjectionStatus
from ..schema import SchemaRecord
from ..store.kit import Codec, Row
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
    "rows_out",
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

    event_id: uuid.UUID
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
    erased: list[str] | None = None


_SEALED = b'"' + PERSONAL_KEY.encode() + b'"'
"""What stored metadata holding sealed personal fields contains (`eventfold.privacy`)."""
_pack = msgspec.msgpack.Encoder().encode
_as_uuids = msgspec.msgpack.Decoder(list[uuid.UUID]).decode
_NO_METADATA = msgspec.Raw(b"{}")


def _uuids(raw: list[bytes]) -> list[uuid.UUID]:
    """Stored 16-byte ids as UUIDs, a page's in one call: msgspec reads a 16-byte
    MessagePack bin as a UUID, and writes a UUID as JSON as ``str`` does, both in C (a
    third of the time of formatting each id's text in Python)."""
    return _as_uuids(_pack(raw))


def _ids(meta: bytes) -> tuple[str | None, str | None]:
    """The correlation and causation ids of stored metadata, decoded only when it may
    hold one."""
    if b"correlation_id" not in meta and b"causation_id" not in meta:
        return None, None
    decoded = msgspec.json.decode(meta)
    correlation = decoded.get("correlation_id")
    causation = decoded.get("causation_id")
    return (
        None if correlation is None else str(correlation),
        None if causation is None else str(causation),
    )


def events_out(events: list[RecordedEvent], sealed: list[int] | None = None) -> list[Any]:
    """`event_out` of every event of a page, encoded the same and built faster: the
    stored metadata is not decoded unless it may hold a correlation or causation id,
    and events recorded in the same microsecond share their time's text. The indexes of
    the events whose metadata holds sealed personal fields go into ``sealed``."""
    out: list[Any] = []
    append = out.append
    last_us = -1
    last_at = ""
    ids = _uuids([e.raw_event_id for e in events])
    for e, event_id in zip(events, ids, strict=True):
        data = e.data
        undecodable = None
        if isinstance(data, UndecodedPayload):
            undecodable, data = str(data.error), None
        meta = e.raw_metadata
        if meta == b"{}":
            metadata, correlation, causation = _NO_METADATA, None, None
        else:
            metadata, (correlation, causation) = msgspec.Raw(meta), _ids(meta)
            if sealed is not None and _SEALED in meta:
                sealed.append(len(out))
        us = e.recorded_us
        if us != last_us:
            last_us, last_at = us, _iso_us(us)
        tx = e.raw_tx
        upcast = e.upcast_from
        append(
            _PageEvent(
                event_id,
                e.stream_id,
                e.version,
                str(e.raw_seq) if tx == 0 else f"{tx}:{e.raw_seq}",
                e.type,
                e.schema_version,
                data,
                metadata,
                last_at,
                correlation,
                causation,
                None if upcast is None else upcast[0],
                None if upcast is None else upcast[1],
                undecodable,
            )
        )
    return out


_as_json = msgspec.json.Decoder(msgspec.Raw).decode
"""Stored JSON checked to be one JSON value and nothing else, kept as its bytes."""
_NOT_JSON = (msgspec.DecodeError, RecursionError)


def rows_out(codec: Codec, rows: list[Row], sealed: list[int] | None = None) -> list[Any]:
    """`events_out` of the events stored as ``rows``, the same JSON, built without
    decoding the payloads that need no decoding: a payload the codec reads as it is stored
    (`Codec.reads_as_stored`: a type with no class, nothing to upcast) is checked to be
    JSON and written out as stored. The codec decodes the others (and one that is not
    JSON, which then reads as undecodable), as a read of the events does. ``sealed`` is
    filled as `events_out` fills it."""
    out: list[Any] = []
    append = out.append
    decoded: list[int] = []
    as_stored = codec.reads_as_stored
    last_type, last_sv, plain = "", 0, False
    last_us = -1
    last_at = ""
    ids = _uuids([row[0] for row in rows])
    for row, event_id in zip(rows, ids, strict=True):
        _, sid, version, typ, sv, data, meta, us, tx, seq = row
        if typ != last_type or sv != last_sv:
            last_type, last_sv, plain = typ, sv, as_stored(typ, sv)
        if plain:
            try:
                payload = _as_json(data)
            except _NOT_JSON:
                pass
            else:
                if meta == b"{}":
                    metadata, correlation, causation = _NO_METADATA, None, None
                else:
                    metadata, (correlation, causation) = msgspec.Raw(meta), _ids(meta)
                    if sealed is not None and _SEALED in meta:
                        sealed.append(len(out))
                if us != last_us:
                    last_us, last_at = us, _iso_us(us)
                append(
                    _PageEvent(
                        event_id,
                        sid,
                        version,
                        str(seq) if tx == 0 else f"{tx}:{seq}",
                        typ,
                        sv,
                        payload,
                        metadata,
                        last_at,
                        correlation,
                        causation,
                    )
                )
                continue
        decoded.append(len(out))
        append(row)
    if decoded:
        events = codec.decode_rows([out[i] for i in decoded])
        among: list[int] | None = None if sealed is None else []
        for i, event in zip(decoded, events_out(events, among), strict=True):
            out[i] = event
        if among:
            assert sealed is not None
            sealed.extend(decoded[j] for j in among)
            sealed.sort()
    return out


def _iso_us(us: int) -> str:
    """Microseconds since the epoch as ISO 8601 text with a ``Z`` (no fraction when
    there is none, as `datetime.isoformat` writes it)."""
    seconds, fraction = divmod(us, 1_000_000)
    head = _second_text(seconds)
    return f"{head}.{fraction:06d}Z" if fraction else head + "Z"


@functools.lru_cache(maxsize=256)
def _second_text(seconds: int) -> str:
    # Events of a page mostly share their seconds: their text is built once.
    return (_NAIVE_EPOCH + _dt.timedelta(seconds=seconds)).isoformat()


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
