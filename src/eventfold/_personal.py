"""Personal fields: the marker on an event's fields and what the codec needs to seal them.

Core knows only the shape: which fields of a class are personal, whose they are (the data
subject, named by another field) and what they read as once their subject is forgotten.
The cipher and the keys live in `eventfold.privacy`, which attaches a `Protector` to a
store's codec; the codec seals and opens through it (see `Codec`).
"""

from __future__ import annotations

import base64
import binascii
import functools
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from .errors import InvalidEvent

__all__ = [
    "PERSONAL_KEY",
    "Personal",
    "PersonalFields",
    "Protector",
    "SubjectGroup",
    "SubjectScan",
    "associated_data",
    "b64decode",
    "b64encode",
    "open_fields",
    "personal_fields",
    "redacted",
    "seal_fields",
    "sealed_bytes",
    "sealed_key_ids",
    "sealed_text",
]

PERSONAL_KEY = "$personal"
"""The reserved metadata key that holds an event's sealed personal fields."""

_NO_REPLACEMENT: Any = object()

_marked = False
"""Whether any `Personal` marker was made in this process: until one is, no class has
personal fields (a class's markers are made as its annotations are evaluated, which
decoding or encoding one of its events does first), and `SubjectScan` skips its work."""


class Personal:
    """Marks a top-level field of an `Event` class as personal data of a data subject::

        class CustomerRegistered(eventfold.Event):
            customer_id: str
            name: Annotated[str, Personal(subject="customer_id", replacement="<erased>")]

    ``subject`` names another field of the same class whose value (``str()`` of it) is
    the data subject's id. ``replacement`` is what the field reads as once the subject is
    forgotten, and what the stored event data holds in its place; by default ``""`` for
    str, ``0`` for int, ``0.0`` for float, ``False`` for bool, ``None`` for an optional
    field, ``[]`` for a list and ``{}`` for a dict. Any other type needs one.
    """

    __slots__ = ("replacement", "subject")

    def __init__(self, subject: str, replacement: Any = _NO_REPLACEMENT) -> None:
        if not isinstance(subject, str) or not subject:
            raise InvalidEvent(
                f"Personal(subject=...) takes the name of the field that holds the data "
                f"subject's id, got {subject!r}"
            )
        self.subject = subject
        self.replacement = replacement
        global _marked
        _marked = True

    def __repr__(self) -> str:
        if self.replacement is _NO_REPLACEMENT:
            return f"Personal(subject={self.subject!r})"
        return f"Personal(subject={self.subject!r}, replacement={self.replacement!r})"


@dataclass(frozen=True, slots=True)
class SubjectGroup:
    """The personal fields of one subject in a class (by their encoded names)."""

    subject: str
    """The encoded name of the field holding the subject's id."""
    fields: tuple[str, ...]
    replacements: tuple[Any, ...]
    """One per field, as JSON-ready builtins."""


@dataclass(frozen=True, slots=True)
class PersonalFields:
    """Every personal field of one event class, grouped by subject."""

    groups: tuple[SubjectGroup, ...]
    names: tuple[str, ...]
    """Attribute names of the personal fields (for `redacted`)."""
    values: tuple[Any, ...]
    """Their replacement values as the class holds them."""


class Protector(Protocol):
    """What seals and opens personal fields for a codec (see `eventfold.privacy.enable`)."""

    def key_for(self, subject: str) -> bytes:
        """The id of ``subject``'s current key, made if it has none (stored at once, or
        by the transaction of the append that uses it)."""
        ...

    def seal(self, key_id: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """``plaintext`` encrypted under ``key_id``, bound to ``aad``."""
        ...

    def open(self, key_id: bytes, sealed: bytes, aad: bytes) -> bytes | None:
        """The plaintext, or None when the key no longer exists (forgotten); `ValueError`
        when ``sealed`` does not authenticate against ``aad``."""
        ...

    def exists(self, key_ids: list[bytes]) -> set[bytes]:
        """Those of ``key_ids`` that still exist."""
        ...

    def page(self, key_ids: list[bytes]) -> AbstractContextManager[None]:
        """Within this block (on this thread), the keys ``key_ids`` name are at hand: a
        page's keys looked up in one round trip, not one per row it opens."""
        ...

    def current_keys(self, subjects: Sequence[str]) -> dict[str, bytes]:
        """The ids of the current keys of those of ``subjects`` that have one. Never
        makes a key: a forgotten subject must not get a new one (a snapshot's seal)."""
        ...

    def seal_with(self, key_ids: Sequence[bytes], plaintext: bytes, aad: bytes) -> bytes:
        """``plaintext`` encrypted so that opening it needs every key of ``key_ids``
        (a snapshot's state, which may hold the fields of several subjects)."""
        ...

    def open_with(self, key_ids: Sequence[bytes], sealed: bytes, aad: bytes) -> bytes | None:
        """The plaintext of `seal_with`'s output, or None when any of the keys no longer
        exists; `ValueError` when ``sealed`` does not authenticate against ``aad``."""
        ...

    def on_forget(self, listener: Callable[[str], object]) -> Callable[[], None]:
        """Call ``listener(subject)`` each time this process learns that a data subject
        was forgotten (by a forget here, or one elsewhere a follower saw), so that what
        holds their plain values in memory drops it; returns what removes the listener.
        A listener may hear of one subject more than once, and runs on the event loop."""
        ...


_cache: dict[type[Any], PersonalFields | None] = {}


def personal_fields(cls: type[Any]) -> PersonalFields | None:
    """The personal fields of event class ``cls`` (None when it has none), its markers
    checked; a bad marker raises `InvalidEvent` naming the class and the field."""
    try:
        return _cache[cls]
    except KeyError:
        pass
    found = _inspect(cls)
    _cache[cls] = found
    return found


def _markers(tp: Any) -> list[Personal]:
    if typing.get_origin(tp) is typing.Annotated:
        return [m for m in tp.__metadata__ if isinstance(m, Personal)]
    return []


def _nested_marker(tp: Any, seen: set[int]) -> bool:
    """Whether a `Personal` marker hides anywhere inside type ``tp``."""
    if id(tp) in seen:
        return False
    seen.add(id(tp))
    if _markers(tp):
        return True
    if typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return any(_nested_marker(f.type, seen) for f in msgspec.structs.fields(tp))
    return any(_nested_marker(arg, seen) for arg in typing.get_args(tp))


def _default_replacement(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        return None
    if tp is type(None):
        return None
    base = origin or tp
    for kind, value in ((bool, False), (str, ""), (int, 0), (float, 0.0), (list, []), (dict, {})):
        if base is kind:
            return value
    return _NO_REPLACEMENT


def _inspect(cls: type[Any]) -> PersonalFields | None:
    fields = msgspec.structs.fields(cls)
    by_name = {f.name: f for f in fields}
    groups: dict[str, list[tuple[str, Any]]] = {}
    names: list[str] = []
    values: list[Any] = []
    personal: set[str] = set()
    where = f"{cls.__qualname__}"
    for field in fields:
        found = _markers(field.type)
        inner = typing.get_args(field.type)[0] if found else field.type
        if _nested_marker(inner, set()):
            raise InvalidEvent(
                f"{where}.{field.name} has a Personal marker inside its type; mark only "
                "top-level fields of an Event class (put the personal value in a field "
                "of its own)"
            )
        if not found:
            continue
        if len(found) > 1:
            raise InvalidEvent(f"{where}.{field.name} has more than one Personal marker")
        marker = found[0]
        personal.add(field.name)
        subject = by_name.get(marker.subject)
        if subject is None:
            raise InvalidEvent(
                f"{where}.{field.name}: Personal(subject={marker.subject!r}) names no field "
                f"of {cls.__qualname__}; name the field that holds the data subject's id "
                f"(one of {', '.join(sorted(by_name))})"
            )
        replacement = marker.replacement
        if replacement is _NO_REPLACEMENT:
            replacement = _default_replacement(inner)
            if replacement is _NO_REPLACEMENT:
                raise InvalidEvent(
                    f"{where}.{field.name} is personal and of type {inner!r}, which has no "
                    "default replacement; pass Personal(subject=..., replacement=...) with "
                    "the value it reads as once its subject is forgotten"
                )
        try:
            builtin = msgspec.to_builtins(replacement)
            value = msgspec.convert(builtin, inner)
        except (msgspec.ValidationError, TypeError, ValueError) as exc:
            raise InvalidEvent(
                f"{where}.{field.name}: replacement {replacement!r} is not a valid "
                f"{inner!r} ({exc}); pass a replacement of the field's type"
            ) from None
        groups.setdefault(subject.encode_name, []).append((field.encode_name, builtin))
        names.append(field.name)
        values.append(value)
    if not names:
        return None
    for field in fields:
        for marker in _markers(field.type):
            if marker.subject in personal:
                raise InvalidEvent(
                    f"{where}.{field.name}: its subject field {marker.subject!r} is itself "
                    "personal; the subject's id must be stored in clear to find its key"
                )
    return PersonalFields(
        tuple(
            SubjectGroup(subject, tuple(f for f, _ in pairs), tuple(r for _, r in pairs))
            for subject, pairs in groups.items()
        ),
        tuple(names),
        tuple(values),
    )


_SubjectPlan = tuple[tuple[str, tuple[str, ...], tuple[Any, ...]], ...]
"""Per subject field of a class (attribute name): its personal fields' attribute names
and their replacement values."""

_plans: dict[type[Any], _SubjectPlan | None] = {}
_UNSEEN: Any = object()


def _subject_plan(cls: type[Any]) -> _SubjectPlan | None:
    if cls in _plans:
        return _plans[cls]
    plan: _SubjectPlan | None
    try:
        found = personal_fields(cls) if issubclass(cls, msgspec.Struct) else None
    except InvalidEvent:
        found = None  # such a class was never stored sealed: its encode refused it
    if found is None:
        plan = None
    else:
        attr = {f.encode_name: f.name for f in msgspec.structs.fields(cls)}
        value = dict(zip(found.names, found.values, strict=True))
        plan = tuple(
            (attr[g.subject], names, tuple(value[n] for n in names))
            for g in found.groups
            for names in [tuple(attr[f] for f in g.fields)]
        )
    _plans[cls] = plan
    return plan


class SubjectScan:
    """The data subjects whose personal values a fold has seen (a snapshot of the state
    must be sealed for them), and whether some event's fields of a subject all read as
    their replacement values (a forgotten subject, or a sealed event read with no
    protector): such a subject is not noted, as the event holds nothing of theirs.

    An event of a class without personal fields costs one dict lookup by its class, and
    nothing at all in a process where no class has any.
    """

    __slots__ = ("replaced", "subjects")

    def __init__(self, subjects: frozenset[str] = frozenset(), replaced: bool = False) -> None:
        self.subjects = subjects
        """Replaced by a new set as a subject is added (a fold seldom adds any)."""
        self.replaced = replaced

    def rows(self, rows: Iterable[Sequence[Any]]) -> None:
        """Note the payloads of a fold's rows (``row[1]``, as `LoadRow`)."""
        if _marked:
            self.payloads(row[1] for row in rows)

    def payloads(self, payloads: Iterable[Any]) -> None:
        """Note events' payloads."""
        if not _marked:
            return
        plans = _plans
        for payload in payloads:
            plan = plans.get(type(payload), _UNSEEN)
            if plan is not None:
                self._note(payload, plan)

    def _note(self, payload: Any, plan: Any) -> None:
        if plan is _UNSEEN:
            plan = _subject_plan(type(payload))
            if plan is None:
                return
        for subject, names, replacements in plan:
            value = getattr(payload, subject)
            if value is None:
                continue
            if all(getattr(payload, n) == r for n, r in zip(names, replacements, strict=True)):
                self.replaced = True  # nothing of theirs here (or nothing readable)
                continue
            if not isinstance(value, str):
                built = msgspec.to_builtins(value)
                value = built if isinstance(built, str) else _encoder.encode(built).decode()
            if value not in self.subjects:
                self.subjects = self.subjects | {value}


def redacted(payload: Any) -> Any:
    """``payload`` with its personal fields (if any) set to their replacement values: the
    form that may leave the store for places erasure cannot reach (a message bus)."""
    if not isinstance(payload, msgspec.Struct):
        return payload
    found = personal_fields(type(payload))
    if found is None:
        return payload
    return msgspec.structs.replace(payload, **dict(zip(found.names, found.values, strict=True)))


def associated_data(
    event_id: bytes, type_name: str, schema_version: int, key_id: str, fields: Any
) -> bytes:
    """What a ciphertext is bound to: the event (id, type, schema version), the key and
    the field names. Not the stream: a transformation's copies keep their event ids."""
    return msgspec.json.encode([event_id.hex(), type_name, schema_version, key_id, fields])


def b64encode(raw: bytes) -> str:
    """URL-safe base64 without padding (key ids)."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@functools.lru_cache(maxsize=65_536)
def b64decode(text: str) -> bytes:
    """The bytes of `b64encode`'s text (cached: a key id recurs on every event it seals)."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sealed_text(raw: bytes) -> str:
    """Standard base64 (ciphertexts: the quickest to decode)."""
    return binascii.b2a_base64(raw, newline=False).decode("ascii")


def sealed_bytes(text: str) -> bytes:
    return binascii.a2b_base64(text)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def seal_fields(
    protector: Protector,
    found: PersonalFields,
    raw: dict[str, Any],
    event_id: bytes,
    type_name: str,
    schema_version: int,
    old: Any,
    where: str,
) -> list[dict[str, Any]]:
    """Seal the personal fields of ``raw`` (an event's data as a dict), one entry per
    subject, and put their replacement values in their place.

    ``old``: the sealed entries a copied event came with (a stream transformation); an
    entry whose key is gone is kept as it is rather than making its subject a new key.
    """
    kept = _forgotten_entries(protector, old)
    entries: list[dict[str, Any]] = []
    for group in found.groups:
        value = raw.get(group.subject)
        if value is None:
            raise InvalidEvent(
                f"{where}: {type_name}.{group.subject} is the data subject of "
                f"{', '.join(group.fields)} and must not be None"
            )
        subject = value if isinstance(value, str) else _encoder.encode(value).decode()
        plain = {f: raw[f] for f in group.fields if f in raw}
        for field, replacement in zip(group.fields, group.replacements, strict=True):
            raw[field] = replacement
        entry = kept.get(group.fields)
        if entry is not None and all(plain[f] == raw[f] for f in plain):
            entries.append(entry)  # already forgotten: the copy holds replacements
            continue
        key_id = protector.key_for(subject)
        kid = b64encode(key_id)
        aad = associated_data(event_id, type_name, schema_version, kid, group.fields)
        sealed = protector.seal(key_id, _encoder.encode(plain), aad)
        entries.append({"k": kid, "f": list(group.fields), "c": sealed_text(sealed)})
    return entries


class _Entry(msgspec.Struct):
    k: str


class _Sealed(msgspec.Struct):
    entries: list[_Entry] = msgspec.field(name=PERSONAL_KEY, default_factory=list)


_sealed_decoder = msgspec.json.Decoder(_Sealed)


def sealed_key_ids(metas: Iterable[bytes]) -> list[bytes]:
    """The key ids the sealed entries of these stored metadata name (metadata without
    any, or that does not read, names none: opening the row reports it)."""
    out: list[bytes] = []
    for meta in metas:
        try:
            entries = _sealed_decoder.decode(meta).entries
            out.extend(b64decode(entry.k) for entry in entries)
        except (msgspec.DecodeError, ValueError):
            continue
    return out


def open_fields(
    protector: Protector,
    raw: dict[str, Any],
    entries: Any,
    event_id: bytes,
    type_name: str,
    schema_version: int,
) -> None:
    """Merge the opened fields of ``entries`` into ``raw``; those whose key is gone keep
    their replacement values. A malformed or unauthentic entry raises `ValueError`,
    `KeyError`, `TypeError` or `msgspec.DecodeError`."""
    if not isinstance(entries, list):
        raise ValueError("the sealed entries are not a list")
    for entry in entries:
        kid, fields = entry["k"], entry["f"]
        aad = associated_data(event_id, type_name, schema_version, kid, fields)
        opened = protector.open(b64decode(kid), sealed_bytes(entry["c"]), aad)
        if opened is None:
            continue  # forgotten
        values = _decoder.decode(opened)
        if not isinstance(values, dict) or set(values) - set(fields):
            raise ValueError("a sealed entry opened to fields it does not name")
        raw.update(values)


def _forgotten_entries(protector: Protector, old: Any) -> dict[tuple[str, ...], dict[str, Any]]:
    """The entries of ``old`` whose keys are gone, by their field names."""
    if not isinstance(old, list) or not old:
        return {}
    try:
        by_id = {b64decode(e["k"]): (tuple(e["f"]), e) for e in old}
    except (KeyError, TypeError, ValueError):
        return {}
    alive = protector.exists(list(by_id))
    return dict(found for k, found in by_id.items() if k not in alive)
