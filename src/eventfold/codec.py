"""Turning events into stored bytes and back, with msgspec.

Every backend stores the same encoded form (JSON bytes for data and metadata) and hands
rows back in one shape, `Row`, so encoding rules, size limits and decoding are the same
everywhere and live only here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import msgspec

from .errors import DecodeError, EncodingError, EventTooLarge, InvalidEvent
from .events import Event, NewEvent, RecordedEvent, TypeRegistry, default_registry, fresh_id_bytes

__all__ = ["DEFAULT_MAX_EVENT_SIZE", "Codec", "EncodedEvent", "Row"]

DEFAULT_MAX_EVENT_SIZE = 1024 * 1024
"""Default limit on one event's encoded data plus metadata, in bytes (1 MiB)."""

_EMPTY_META = b"{}"


class EncodedEvent(NamedTuple):
    """One event ready to store."""

    event_id: bytes
    type: str
    schema_version: int
    data: bytes
    metadata: bytes
    explicit_id: bool
    """Whether the caller chose the id (only then can the append be a retry)."""


Row = tuple[bytes, str, int, str, int, bytes, bytes, int, int, int]
"""A stored event as backends return it: (event_id, stream_id, version, type,
schema_version, data, metadata, recorded_us, tx, seq)."""


class Codec:
    """Encodes appends and decodes stored rows for one store."""

    def __init__(
        self,
        registry: TypeRegistry | None = None,
        *,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        producer_version: str | None = None,
    ) -> None:
        self.registry = registry if registry is not None else default_registry
        self.max_event_size = max_event_size
        self.producer_version = producer_version
        self._encoder = msgspec.json.Encoder()
        self._generic = msgspec.json.Decoder()
        self._decoders: dict[str, Callable[[bytes], Any]] = {}

    # -- writing ---------------------------------------------------------------------

    def encode(self, stream_id: str, events: Sequence[Event | NewEvent]) -> list[EncodedEvent]:
        """Encode one append's events; raise a clear `InvalidInput` on the first bad one."""
        if isinstance(events, (Event, NewEvent)) or not isinstance(events, Sequence):
            raise InvalidEvent(
                f"append to {stream_id!r} takes a list of events, got {type(events).__name__}"
            )
        if not events:
            raise InvalidEvent(f"append to {stream_id!r} got no events; pass at least one")
        ids = fresh_id_bytes(len(events))
        out: list[EncodedEvent] = []
        encode = self._encoder.encode
        meta_base = {"producer_version": self.producer_version} if self.producer_version else None
        for index, item in enumerate(events):
            if type(item) is not NewEvent and isinstance(item, Event):
                cls = type(item)
                name = cls.__event_type__
                self._ensure_registered(name, cls)
                try:
                    data = encode(item)
                except (TypeError, ValueError, msgspec.EncodeError) as exc:
                    raise EncodingError(stream_id, index, name, str(exc)) from exc
                meta = encode(meta_base) if meta_base else _EMPTY_META
                enc = EncodedEvent(ids[index], name, cls.__schema_version__, data, meta, False)
            elif isinstance(item, NewEvent):
                enc = self._encode_new(stream_id, index, item, ids[index], meta_base)
            else:
                raise InvalidEvent(
                    f"event {index} for stream {stream_id!r} is a {type(item).__name__}; pass an "
                    "eventfold.Event subclass instance or eventfold.NewEvent(data, type=...)"
                )
            size = len(enc.data) + len(enc.metadata)
            if size > self.max_event_size:
                raise EventTooLarge(stream_id, index, size, self.max_event_size)
            out.append(enc)
        return out

    def _ensure_registered(self, name: str, cls: type[Event]) -> None:
        if self.registry.resolve(name) is not cls:
            self.registry.register(cls, name)
            self._decoders.pop(name, None)

    def _encode_new(
        self,
        stream_id: str,
        index: int,
        item: NewEvent,
        fresh_id: bytes,
        meta_base: Mapping[str, Any] | None,
    ) -> EncodedEvent:
        payload = item.data
        if isinstance(payload, Event):
            cls: type[Event] | None = type(payload)
            assert cls is not None
            name = item.type or cls.__event_type__
            if item.type and item.type != cls.__event_type__:
                raise InvalidEvent(
                    f"event {index} for stream {stream_id!r}: type {item.type!r} does not match "
                    f"the payload's class {cls.__qualname__} ({cls.__event_type__!r})"
                )
            self._ensure_registered(name, cls)
        elif isinstance(payload, Mapping):
            if not item.type or not isinstance(item.type, str):
                raise InvalidEvent(
                    f"event {index} for stream {stream_id!r} has a mapping as data but no type; "
                    "pass NewEvent(data, type='OrderPlaced')"
                )
            name = item.type
            cls = self.registry.resolve(name)
            if cls is not None:
                try:
                    payload = msgspec.convert(payload, cls)
                except msgspec.ValidationError as exc:
                    raise EncodingError(stream_id, index, name, str(exc)) from exc
        else:
            raise InvalidEvent(
                f"event {index} for stream {stream_id!r}: NewEvent data is a "
                f"{type(payload).__name__}; pass an eventfold.Event or a mapping with type=..."
            )
        schema_version = cls.__schema_version__ if cls is not None else 1
        try:
            data = self._encoder.encode(payload)
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            raise EncodingError(stream_id, index, name, str(exc)) from exc
        meta_dict: dict[str, Any] = dict(meta_base) if meta_base else {}
        if item.metadata:
            if not isinstance(item.metadata, Mapping):
                raise InvalidEvent(
                    f"event {index} for stream {stream_id!r}: metadata must be a mapping, got "
                    f"{type(item.metadata).__name__}"
                )
            meta_dict.update(item.metadata)
        if item.correlation_id is not None:
            meta_dict["correlation_id"] = str(item.correlation_id)
        if item.causation_id is not None:
            meta_dict["causation_id"] = str(item.causation_id)
        try:
            meta = self._encoder.encode(meta_dict) if meta_dict else _EMPTY_META
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            raise EncodingError(stream_id, index, name, f"metadata: {exc}") from exc
        if item.event_id is None:
            return EncodedEvent(fresh_id, name, schema_version, data, meta, False)
        if not isinstance(item.event_id, uuid.UUID):
            raise InvalidEvent(
                f"event {index} for stream {stream_id!r}: event_id must be a uuid.UUID, got "
                f"{item.event_id!r}"
            )
        return EncodedEvent(item.event_id.bytes, name, schema_version, data, meta, True)

    # -- reading ---------------------------------------------------------------------

    def decoder(self, type_name: str) -> Callable[[bytes], Any]:
        """The decode function for a type name: typed when registered, else to a dict."""
        found = self._decoders.get(type_name)
        if found is None:
            cls = self.registry.resolve(type_name)
            found = msgspec.json.Decoder(cls).decode if cls is not None else self._generic.decode
            self._decoders[type_name] = found
        return found

    def decode_rows(self, rows: Iterable[Row]) -> list[RecordedEvent]:
        """Build `RecordedEvent`s from stored rows (one page of a read)."""
        decoders = self._decoders
        out: list[RecordedEvent] = []
        append = out.append
        for eid, sid, version, typ, sv, data, meta, rec_us, tx, seq in rows:
            dec = decoders.get(typ) or self.decoder(typ)
            try:
                payload = dec(data)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise DecodeError(typ, sv, str(exc), f"{sid}@{version}") from exc
            append(RecordedEvent(sid, version, typ, sv, payload, eid, tx, seq, meta, rec_us))
        return out
