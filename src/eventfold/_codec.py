"""Turning events into stored bytes and back, with msgspec.

Every backend stores the same encoded form (JSON bytes for data and metadata) and hands
rows back in one shape, `Row`, so encoding rules, size limits and decoding are the same
everywhere and live only here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, NamedTuple, TypeVar

import msgspec

from ._events import Event, NewEvent, RecordedEvent, TypeRegistry, default_registry, fresh_id_bytes
from ._nesting import MAX_NESTING_DEPTH, nesting_depth_exceeds, too_deep_error
from ._personal import (
    PERSONAL_KEY,
    PersonalFields,
    Protector,
    open_fields,
    personal_fields,
    seal_fields,
    sealed_key_ids,
)
from ._position import Position
from ._undecodable import UndecodedPayload, keeping_undecodable, undecodable
from .errors import (
    ConfigurationError,
    DecodeError,
    EncodingError,
    EventTooLarge,
    EventTypeError,
    InvalidEvent,
    UndecodableEvent,
)
from .schema._upcasting import MissingUpcaster, Step, run_steps
from .schema._violations import (
    ForeignType,
    SchemaViolation,
    field_violations,
    nonfinite_violations,
)

__all__ = [
    "DEFAULT_MAX_EVENT_SIZE",
    "MAX_NESTING_DEPTH",
    "Codec",
    "EncodedEvent",
    "Row",
    "SchemaViolation",
]

DEFAULT_MAX_EVENT_SIZE = 1024 * 1024
"""Default limit on one event's encoded data plus metadata, in bytes (1 MiB)."""

_EMPTY_META = b"{}"
_PERSONAL_BYTES = b'"' + PERSONAL_KEY.encode() + b'"'

LoadRow = tuple[int, Any, int]
"""One event as a load folds it: its version, its (upcast) payload, and its recorded time in
microseconds (0 unless the load was asked for ``max_recorded_us``)."""
_MAX_CACHED_VERSION = 64
"""Decoders are cached per schema version up to this one (a guard against odd rows)."""


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


_T = TypeVar("_T")
_Lift = tuple[
    tuple[Callable[[dict[str, Any]], dict[str, Any]], ...],
    str,
    int,
    type[Any],
    tuple[str, int] | None,
]
"""A cached upcast: the chain's functions, the final type and version, the type to convert
the result into (the class, or dict when there is none), and the stored (type, version)
(None: nothing to upcast)."""


class Codec:
    """Encodes appends and decodes stored rows for one store.

    On write every payload is checked against its type's schema: an `Event` by decoding
    its encoded bytes with the class's typed decoder (msgspec does not check types when a
    Struct is built), a mapping by converting it into its class, and a mapping of a type
    with no class here against the store's schema registry (`foreign`), when loaded. Set
    ``validate=False`` to skip the check for `Event` instances (bulk imports of trusted
    data). On read, events stored at an older schema version are upcast (see
    `eventfold.upcasting`) before they are built into their class.

    Events of a class with personal fields (`eventfold.Personal`) are sealed on write by
    the attached `protector` (see `eventfold.privacy.enable`): the stored data holds
    their replacement values, the metadata key ``"$personal"`` the ciphertexts. On read
    the protector opens them again; a row whose key is gone keeps its replacement values.
    Rows of other classes never meet this: personal classes are kept out of the fast
    path's tables instead of testing every row.
    """

    # Caches built from the registry (see `_reset`).
    _decoders: dict[str, Callable[[bytes], Any]]
    _tables: list[dict[str, Callable[[bytes], Any]]]
    """``_tables[v][name]``: the decoder for events of ``name`` stored at version ``v``
    that need no upcasting: one list index and one dict lookup per row on reads."""
    _plans: dict[tuple[str, int], tuple[list[Step], str, int]]
    _lifts: list[dict[str, _Lift]]
    """``_lifts[v][name]``: how to upcast events of ``name`` stored at version ``v``."""
    _checkers: dict[type[Event], Callable[[bytes], Any] | None]
    """Per class, the typed decoder that checks its encoded instances (None: no check)."""
    _as_stored: dict[tuple[str, int], bool]
    """Per stored (type, schema version), whether its payloads read back as stored."""

    def __init__(
        self,
        registry: TypeRegistry | None = None,
        *,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        producer_version: str | None = None,
        validate: bool = True,
    ) -> None:
        self.registry = registry if registry is not None else default_registry
        self.max_event_size = max_event_size
        self.producer_version = producer_version
        self._validate = validate
        self.foreign: dict[str, ForeignType] = {}
        """Schemas of types with no class here, from the store's registry (by type name)."""
        self._encoder = msgspec.json.Encoder()
        self._generic = msgspec.json.Decoder()
        self._generation = -1
        self._protector: Protector | None = None
        self._reset()

    @property
    def protector(self) -> Protector | None:
        """What seals and opens personal fields (None: events with personal fields are
        refused on write and read with their replacement values)."""
        return self._protector

    @protector.setter
    def protector(self, value: Protector | None) -> None:
        self._protector = value
        # The fast path's tables may hold personal classes, read without opening.
        self._reset()

    @property
    def validate(self) -> bool:
        """Whether `Event` instances are checked against their class on write."""
        return self._validate

    @validate.setter
    def validate(self, value: bool) -> None:
        self._validate = bool(value)
        self._checkers = {}

    def _reset(self) -> None:
        # Everything cached from the registry: rebuilt when the registry changes.
        self._generation = self.registry.generation
        self._decoders = {}
        self._tables = [{}]
        self._plans = {}
        self._lifts = [{}]
        self._openers: dict[tuple[str, int], _Lift] = {}
        self._checkers = {}
        self._as_stored = {}

    # -- writing ---------------------------------------------------------------------

    def encode(self, stream_id: str, events: Sequence[Event | NewEvent]) -> list[EncodedEvent]:
        """Encode one append's events; raise a clear `InvalidInput` on the first bad one."""
        if isinstance(events, (Event, NewEvent)) or not isinstance(events, Sequence):
            raise InvalidEvent(
                f"append to {stream_id!r} takes a list of events, got {type(events).__name__}"
            )
        if not events:
            raise InvalidEvent(f"append to {stream_id!r} got no events; pass at least one")
        if self._generation != self.registry.generation:
            self._reset()
        ids = fresh_id_bytes(len(events))
        out: list[EncodedEvent] = []
        encode = self._encoder.encode
        checkers = self._checkers
        meta_base = {"producer_version": self.producer_version} if self.producer_version else None
        meta_plain = encode(meta_base) if meta_base else _EMPTY_META
        index = 0
        try:
            for index, item in enumerate(events):
                if type(item) is not NewEvent and isinstance(item, Event):
                    cls = type(item)
                    name = cls.__event_type__
                    check = checkers.get(cls, _UNSEEN)
                    if check is _UNSEEN:
                        check = self._checker(name, cls)
                        checkers = self._checkers
                    if check is _PERSONAL:
                        enc = self._encode_new(
                            stream_id, index, NewEvent(item), ids[index], meta_base
                        )
                    else:
                        try:
                            data = encode(item)
                        except (TypeError, ValueError, msgspec.EncodeError) as exc:
                            raise EncodingError(stream_id, index, name, str(exc)) from exc
                        if nesting_depth_exceeds(data):
                            raise too_deep_error(stream_id, index, "data")
                        if check is not None:
                            try:
                                check(data)
                            except msgspec.ValidationError as exc:
                                raise self._violation(
                                    stream_id, index, cls, data, exc, item
                                ) from None
                        enc = EncodedEvent(
                            ids[index], name, cls.__schema_version__, data, meta_plain, False
                        )
                elif isinstance(item, NewEvent):
                    enc = self._encode_new(stream_id, index, item, ids[index], meta_base)
                else:
                    raise InvalidEvent(
                        f"event {index} for stream {stream_id!r} is a {type(item).__name__}; "
                        "pass an eventfold.Event subclass instance or "
                        "eventfold.NewEvent(data, type=...)"
                    )
                size = len(enc.data) + len(enc.metadata)
                if size > self.max_event_size:
                    raise EventTooLarge(stream_id, index, size, self.max_event_size)
                out.append(enc)
        except RecursionError:
            # msgspec gave up before the nesting check could see the bytes: far too deep.
            raise too_deep_error(stream_id, index, "data or metadata") from None
        return out

    def _checker(self, name: str, cls: type[Event]) -> Callable[[bytes], Any] | None:
        """Register ``cls`` if need be; return its typed decoder (None: not validating)."""
        if self.registry.resolve(name) is not cls:
            self.registry.register(cls, name)
            self._reset()
        try:
            check = self.decoder(name) if self._validate else None
        except TypeError as exc:
            raise EventTypeError(
                f"{cls.__qualname__} ({name!r}) has a field type msgspec cannot decode: {exc}; "
                "its events could not be read back, so none are written"
            ) from exc
        if personal_fields(cls) is not None:
            # Sealed through `_encode_new`, which checks with the typed decoder itself.
            check = _PERSONAL
        self._checkers[cls] = check
        return check

    def _violation(
        self,
        stream_id: str,
        index: int,
        cls: type[Event],
        data: bytes,
        exc: msgspec.ValidationError,
        value: Any,
    ) -> SchemaViolation:
        """The error for encoded ``data`` (from ``value``) that its class's decoder refused."""
        found = (
            nonfinite_violations(value)
            or field_violations(cls, self._generic.decode(data))
            or [str(exc)]
        )
        return SchemaViolation(stream_id, index, cls.__event_type__, cls.__schema_version__, found)

    def _encode_new(
        self,
        stream_id: str,
        index: int,
        item: NewEvent,
        fresh_id: bytes,
        meta_base: Mapping[str, Any] | None,
    ) -> EncodedEvent:
        payload = item.data
        wanted = item.schema_version
        if wanted is not None and (
            isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 1
        ):
            raise InvalidEvent(
                f"event {index} for stream {stream_id!r}: schema_version must be None or an "
                f"int >= 1, got {wanted!r}"
            )
        if isinstance(payload, Event):
            cls: type[Event] | None = type(payload)
            assert cls is not None
            name = item.type or cls.__event_type__
            if item.type and item.type != cls.__event_type__:
                raise InvalidEvent(
                    f"event {index} for stream {stream_id!r}: type {item.type!r} does not match "
                    f"the payload's class {cls.__qualname__} ({cls.__event_type__!r})"
                )
            if wanted is not None and wanted != cls.__schema_version__:
                raise InvalidEvent(
                    f"event {index} for stream {stream_id!r}: a {cls.__qualname__} instance is "
                    f"in schema version {cls.__schema_version__}, not {wanted}; pass an old "
                    "version's payload as a mapping"
                )
            schema_version = cls.__schema_version__
            check = self._checkers.get(cls, _UNSEEN)
            if check is _UNSEEN:
                check = self._checker(name, cls)
            if check is _PERSONAL:
                check = self.decoder(name) if self._validate else None
            data = self._encode_payload(stream_id, index, name, payload)
            if check is not None:
                try:
                    check(data)
                except msgspec.ValidationError as exc:
                    raise self._violation(stream_id, index, cls, data, exc, payload) from None
        elif isinstance(payload, Mapping):
            if not item.type or not isinstance(item.type, str):
                raise InvalidEvent(
                    f"event {index} for stream {stream_id!r} has a mapping as data but no type; "
                    "pass NewEvent(data, type='OrderPlaced')"
                )
            name = item.type
            schema_version, data = self._check_mapping(stream_id, index, name, wanted, payload)
        else:
            raise InvalidEvent(
                f"event {index} for stream {stream_id!r}: NewEvent data is a "
                f"{type(payload).__name__}; pass an eventfold.Event or a mapping with type=..."
            )
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
        # Sealed entries never come from the caller: a copy of a stored event (a stream
        # transformation) is sealed afresh, keeping only the entries of forgotten keys.
        old = meta_dict.pop(PERSONAL_KEY, None)
        event_id = fresh_id if item.event_id is None else None
        if isinstance(item.event_id, uuid.UUID):
            event_id = item.event_id.bytes
        resolved = self.registry.resolve(name)
        found = personal_fields(resolved) if resolved is not None else None
        if found is not None and event_id is not None:
            assert resolved is not None
            if schema_version != resolved.__schema_version__:
                raise InvalidEvent(
                    f"event {index} for stream {stream_id!r}: {name!r} has personal fields, "
                    f"so only its current schema version ({resolved.__schema_version__}) can "
                    f"be appended, not {schema_version}"
                )
            data, meta_dict[PERSONAL_KEY] = self._seal(
                stream_id, index, name, schema_version, found, data, event_id, old
            )
        try:
            meta = self._encoder.encode(meta_dict) if meta_dict else _EMPTY_META
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            raise EncodingError(stream_id, index, name, f"metadata: {exc}") from exc
        if nesting_depth_exceeds(meta):
            raise too_deep_error(stream_id, index, "metadata")
        if item.event_id is None:
            return EncodedEvent(fresh_id, name, schema_version, data, meta, False)
        if not isinstance(item.event_id, uuid.UUID):
            raise InvalidEvent(
                f"event {index} for stream {stream_id!r}: event_id must be a uuid.UUID, got "
                f"{item.event_id!r}"
            )
        return EncodedEvent(item.event_id.bytes, name, schema_version, data, meta, True)

    def _seal(
        self,
        stream_id: str,
        index: int,
        name: str,
        schema_version: int,
        found: PersonalFields,
        data: bytes,
        event_id: bytes,
        old: Any,
    ) -> tuple[bytes, list[dict[str, Any]]]:
        """``data`` with its personal fields replaced, and the entries that seal them."""
        protector = self._protector
        if protector is None:
            raise ConfigurationError(
                f"event {index} for stream {stream_id!r}: {name!r} has personal fields; "
                "call eventfold.privacy.enable(store) first so they are stored encrypted "
                "(nothing was stored)"
            )
        raw = self._generic.decode(data)
        where = f"event {index} for stream {stream_id!r}"
        entries = seal_fields(protector, found, raw, event_id, name, schema_version, old, where)
        return self._encoder.encode(raw), entries

    def _page(self, metas: Iterable[bytes]) -> AbstractContextManager[None]:
        """The keys a page's sealed rows name, looked up at once, at hand in the block."""
        protector = self._protector
        assert protector is not None
        marked = [meta for meta in metas if _PERSONAL_BYTES in meta]
        return protector.page(sealed_key_ids(marked)) if marked else nullcontext()

    def _open(
        self,
        eid: bytes,
        sid: str,
        version: int,
        typ: str,
        sv: int,
        data: bytes,
        meta: bytes,
        position: Position | None,
    ) -> dict[str, Any]:
        """A sealed row's payload as a dict, its fields opened where their keys exist."""
        protector = self._protector
        assert protector is not None
        try:
            raw = self._generic.decode(data)
            if not isinstance(raw, dict):
                raise ValueError("the stored payload is not a JSON object")
            open_fields(protector, raw, self._generic.decode(meta)[PERSONAL_KEY], eid, typ, sv)
        except (ValueError, KeyError, TypeError, msgspec.DecodeError) as exc:
            cause = f"its personal fields cannot be opened ({exc or type(exc).__name__})"
            raise undecodable(sid, version, typ, sv, position, data, cause) from exc
        return raw

    def _encode_payload(self, stream_id: str, index: int, name: str, payload: Any) -> bytes:
        try:
            data: bytes = self._encoder.encode(payload)
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            raise EncodingError(stream_id, index, name, str(exc)) from exc
        if nesting_depth_exceeds(data):
            raise too_deep_error(stream_id, index, "data")
        return data

    def _check_mapping(
        self,
        stream_id: str,
        index: int,
        name: str,
        wanted: int | None,
        payload: Mapping[str, Any],
    ) -> tuple[int, bytes]:
        """Validate a mapping payload; return its schema version and the bytes to store.

        Whatever the route, the last word is the read path's own decode of the bytes that
        will be stored, so nothing is stored that its readers could not decode.
        """
        cls = self.registry.resolve(name)
        if cls is not None and wanted in (None, cls.__schema_version__):
            version = cls.__schema_version__
            try:
                instance = msgspec.convert(dict(payload), cls, str_keys=True)
            except msgspec.ValidationError as exc:
                found = field_violations(cls, payload) or [str(exc)]
                raise SchemaViolation(stream_id, index, name, version, found) from None
            data = self._encode_payload(stream_id, index, name, instance)
            try:
                self.decoder(name)(data)
            except msgspec.ValidationError as exc:
                raise self._violation(stream_id, index, cls, data, exc, payload) from None
            return version, data
        data = self._encode_payload(stream_id, index, name, payload)
        if cls is not None or self.registry.upcasters.renamed_to(name) is not None:
            # An old version (or an old name) of a type the code knows: store it as given,
            # once a copy lifted through the upcasters fits the current class.
            if wanted is None:
                target = self.registry.upcasters.renamed_to(name)
                raise InvalidEvent(
                    f"event {index} for stream {stream_id!r}: type {name!r} was renamed to "
                    f"{target!r}; append {target!r}, or pass schema_version= for an old shape"
                )
            self._check_old_mapping(stream_id, index, name, wanted, data, payload)
            return wanted, data
        foreign = self.foreign.get(name)
        if foreign is None:
            return wanted or 1, data
        version = wanted or foreign.latest
        validator = foreign.validators.get(version)
        if validator is None:
            raise SchemaViolation(
                stream_id,
                index,
                name,
                version,
                [
                    f"the schema registry has no version {version} of {name!r} (it has "
                    f"{', '.join(map(str, sorted(foreign.validators)))})"
                ],
            )
        found = validator(self._generic.decode(data))
        if found:
            raise SchemaViolation(
                stream_id, index, name, version, nonfinite_violations(payload) or found
            )
        return version, data

    def _check_old_mapping(
        self,
        stream_id: str,
        index: int,
        name: str,
        version: int,
        data: bytes,
        payload: Mapping[str, Any],
    ) -> None:
        """Check ``data`` (``payload`` encoded) the way a reader lifts and converts it."""
        try:
            steps, final, final_version = self._plan(name, version, "")
            lifted = run_steps(steps, name, version, self._generic.decode(data))
        except DecodeError as exc:
            raise SchemaViolation(stream_id, index, name, version, [str(exc)]) from None
        cls = self.registry.resolve(final)
        if cls is None:
            return
        try:
            msgspec.convert(lifted, cls)
        except msgspec.ValidationError as exc:
            found = nonfinite_violations(payload) or field_violations(cls, lifted) or [str(exc)]
            raise SchemaViolation(
                stream_id,
                index,
                name,
                version,
                [f"once upcast to {final} v{final_version}, {v}" for v in found],
            ) from None

    # -- reading ---------------------------------------------------------------------

    def decoder(self, type_name: str) -> Callable[[bytes], Any]:
        """The decode function for a type name: typed when registered, else to a dict."""
        if self._generation != self.registry.generation:
            self._reset()
        found = self._decoders.get(type_name)
        if found is None:
            cls = self.registry.resolve(type_name)
            found = msgspec.json.Decoder(cls).decode if cls is not None else self._generic.decode
            self._decoders[type_name] = found
        return found

    def reads_as_stored(self, type_name: str, schema_version: int) -> bool:
        """Whether a payload stored as ``type_name`` at ``schema_version`` reads back as
        the JSON value it is: no class to build and nothing to upcast, so the stored JSON
        may be passed on as it is, once checked to be JSON (a payload that is not reads
        as undecodable, as `decode_rows` says)."""
        if self._generation != self.registry.generation:
            self._reset()
        key = (type_name, schema_version)
        found = self._as_stored.get(key)
        if found is None:
            try:
                steps, _, _ = self._plan(type_name, schema_version, "")
            except (MissingUpcaster, EventTypeError):
                found = False  # `decode_rows` names what is wrong
            else:
                found = not steps and self.registry.resolve(type_name) is None
            self._as_stored[key] = found
        return found

    def stored_type_names(self, names: Sequence[str]) -> list[str]:
        """``names`` plus every old name whose events read back as one of them.

        A backend filtering ``read_all(types=...)`` in its query should match these, so
        a filter on a renamed type also finds the events stored under its old name.
        """
        out = list(names)
        for name in names:
            out.extend(n for n in self.registry.upcasters.old_names(name) if n not in out)
        return out

    def decode_rows(self, rows: Iterable[Row]) -> list[RecordedEvent]:
        """Build `RecordedEvent`s from stored rows (one page of a read).

        A row at its type's current schema version costs one list index and one dict
        lookup before its typed decode, as it did before upcasting existed. A row to
        upcast takes a second lookup, then decode to a dict, the chain's functions and a
        conversion into the class. Anything unusual (a type seen for the first time, a
        failing upcaster) goes through `_decode_other`, which also names the problem.
        """
        if self._generation != self.registry.generation:
            self._reset()
        if self._protector is not None:
            rows = rows if isinstance(rows, list) else list(rows)
            with self._page(row[6] for row in rows):
                return self._decode_rows(rows, _PERSONAL_BYTES)
        return self._decode_rows(rows, None)

    def _decode_rows(self, rows: Iterable[Row], sealed: bytes | None) -> list[RecordedEvent]:
        """`decode_rows`, with ``sealed`` the bytes that mark a sealed row's metadata
        (None: no protector, nothing to open)."""
        tables = self._tables
        lifts = self._lifts
        generic = self._generic.decode
        convert = msgspec.convert
        openers = self._openers
        out: list[RecordedEvent] = []
        append = out.append
        for eid, sid, version, typ, sv, data, meta, rec_us, tx, seq in rows:
            try:
                dec = tables[sv].get(typ)
            except IndexError:
                dec = None
            if dec is not None:
                try:
                    payload = dec(data)
                except _UNDECODABLE as exc:
                    at = Position(tx, seq) if tx or seq else None
                    payload = self._undecoded(undecodable(sid, version, typ, sv, at, data, exc))
                append(RecordedEvent(sid, version, typ, sv, payload, eid, tx, seq, meta, rec_us))
                continue
            # A sealed row is opened, one to upcast decoded; then the plan's upcasters
            # and the conversion into its class.
            opening = sealed is not None and sealed in meta
            if opening:
                plan = openers.get((typ, sv))
            else:
                try:
                    plan = lifts[sv].get(typ)
                except IndexError:
                    plan = None
            if plan is not None:
                fns, final, final_version, target, stored = plan
                try:
                    if opening:
                        raw = self._open(eid, sid, version, typ, sv, data, meta, None)
                    else:
                        raw = generic(data)
                    for fn in fns:
                        raw = fn(raw)
                    payload = convert(raw, target)
                except Exception:
                    pass  # redone below, where the error is named
                else:
                    append(
                        RecordedEvent(
                            sid,
                            version,
                            final,
                            final_version,
                            payload,
                            eid,
                            tx,
                            seq,
                            meta,
                            rec_us,
                            stored,
                        )
                    )
                    continue
            # Upcasters are pure, so redoing the work here to find the failing step is safe.
            try:
                event = self._decode_other(eid, sid, version, typ, sv, data, meta, rec_us, tx, seq)
            except UndecodableEvent as exc:
                payload = self._undecoded(exc)
                event = RecordedEvent(sid, version, typ, sv, payload, eid, tx, seq, meta, rec_us)
            append(event)
        return out

    @staticmethod
    def _undecoded(error: UndecodableEvent) -> UndecodedPayload:
        """What an undecodable row reads as inside `keep_undecodable`; else raise ``error``."""
        if not keeping_undecodable():
            raise error
        return UndecodedPayload(error.raw, error)

    def decode_loaded(self, stream_id: str, rows: Iterable[Sequence[Any]]) -> list[LoadRow]:
        """A load's rows of one stream, ``(version, type, schema_version, data,
        recorded_us, …)`` (further columns are ignored, but for the last of a longer row:
        the event id and metadata of a sealed row, None for others), as `LoadRow`s: what
        a fold reads, without building `RecordedEvent`s.

        A row at its type's current schema version is decoded right here; any other goes
        through `decode_rows` (upcast, or named in its error).
        """
        if self._generation != self.registry.generation:
            self._reset()
        if self._protector is not None:
            rows = rows if isinstance(rows, list) else list(rows)
            # A sealed row's last column holds its event id (16 bytes), then its metadata.
            with self._page(row[-1][16:] for row in rows if len(row) > 5 and row[-1]):
                return self._decode_loaded(stream_id, rows)
        return self._decode_loaded(stream_id, rows)

    def _decode_loaded(self, stream_id: str, rows: Iterable[Sequence[Any]]) -> list[LoadRow]:
        tables = self._tables
        out: list[LoadRow] = []
        append = out.append
        for row in rows:
            version, typ, sv, data, rec_us = row[0], row[1], row[2], row[3], row[4]
            try:
                dec = tables[sv].get(typ)
            except IndexError:
                dec = None
            if dec is None:
                # A sealed row's last column (beyond the five) is its event id and
                # metadata: opening it needs both.
                sealed = row[-1] if len(row) > 5 else None
                eid, meta = (sealed[:16], sealed[16:]) if sealed else (b"", _EMPTY_META)
                row = (eid, stream_id, version, typ, sv, data, meta, rec_us, 0, 0)
                append((version, self.decode_rows((row,))[0].data, rec_us))
                continue
            try:
                payload = dec(data)
            except _UNDECODABLE as exc:
                # A fold reads no positions; the stream and version say where it is.
                raise undecodable(stream_id, version, typ, sv, None, data, exc) from exc
            append((version, payload, rec_us))
        return out

    def _plan(self, typ: str, sv: int, where: str) -> tuple[list[Step], str, int]:
        key = (typ, sv)
        plan = self._plans.get(key)
        if plan is None:
            try:
                plan = self.registry.upcasters.plan(typ, sv, self.registry.current_version)
            except MissingUpcaster as exc:
                raise MissingUpcaster(typ, sv, exc.step, exc.current, where) from None
            self._plans[key] = plan
        return plan

    def _cache(self, tables: list[dict[str, _T]], sv: int, typ: str, value: _T) -> None:
        if 1 <= sv <= _MAX_CACHED_VERSION:
            while len(tables) <= sv:
                tables.append({})
            tables[sv][typ] = value

    def _decode_other(
        self,
        eid: bytes,
        sid: str,
        version: int,
        typ: str,
        sv: int,
        data: bytes,
        meta: bytes,
        rec_us: int,
        tx: int,
        seq: int,
    ) -> RecordedEvent:
        """A row off the fast path: cache how to read its kind, then read it carefully."""
        where = f"{sid}@{version}"
        position = Position(tx, seq) if tx or seq else None
        opened: dict[str, Any] | None = None
        if self._protector is not None and _PERSONAL_BYTES in meta:
            opened = self._open(eid, sid, version, typ, sv, data, meta, position)
        steps, final, final_version = self._plan(typ, sv, where)
        if not steps and opened is not None:
            found_cls = self.registry.resolve(typ)
            target: type[Any] = found_cls if found_cls is not None else dict
            self._openers[(typ, sv)] = ((), typ, sv, target, None)
            try:
                payload = msgspec.convert(opened, found_cls if found_cls is not None else dict)
            except (msgspec.ValidationError, RecursionError) as exc:
                raise undecodable(sid, version, typ, sv, position, data, exc) from exc
            return RecordedEvent(sid, version, typ, sv, payload, eid, tx, seq, meta, rec_us)
        if not steps:
            dec = self.decoder(typ)
            found_cls = self.registry.resolve(typ)
            if self._protector is None or found_cls is None or personal_fields(found_cls) is None:
                self._cache(self._tables, sv, typ, dec)
            try:
                payload = dec(data)
            except _UNDECODABLE as exc:
                raise undecodable(sid, version, typ, sv, position, data, exc) from exc
            return RecordedEvent(sid, version, typ, sv, payload, eid, tx, seq, meta, rec_us)
        cls = self.registry.resolve(final)
        fns = tuple(step.fn for step in steps if step.fn is not None)
        # Without a class the payload stays a dict: converting to dict checks it is one.
        target = cls if cls is not None else dict
        if opened is not None:
            self._openers[(typ, sv)] = (fns, final, final_version, target, (typ, sv))
        else:
            self._cache(self._lifts, sv, typ, (fns, final, final_version, target, (typ, sv)))
        try:
            raw = opened if opened is not None else self._generic.decode(data)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise undecodable(sid, version, typ, sv, position, data, exc) from exc
        if not isinstance(raw, dict):
            cause = "the stored payload is not a JSON object"
            raise undecodable(sid, version, typ, sv, position, data, cause)
        raw = run_steps(steps, typ, sv, raw, where)
        payload = raw
        if cls is not None:
            try:
                payload = msgspec.convert(raw, cls)
            except (msgspec.ValidationError, RecursionError) as exc:
                upcast = f"once upcast to {final!r} version {final_version}: "
                raise undecodable(sid, version, typ, sv, position, data, exc, upcast) from exc
        return RecordedEvent(
            sid, version, final, final_version, payload, eid, tx, seq, meta, rec_us, (typ, sv)
        )


_UNSEEN: Any = object()
_PERSONAL: Any = object()
"""In `Codec._checkers`: a class with personal fields, encoded through `_encode_new`."""


_UNDECODABLE = (msgspec.ValidationError, msgspec.DecodeError, RecursionError)
"""What a typed decode of a stored payload raises when it does not fit (a payload nested
deeper than the reader's stack allows raises RecursionError)."""
