"""Event types and the envelopes the store takes and gives back."""

from __future__ import annotations

import datetime as _dt
import os
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import msgspec

from ._position import Position
from .errors import EventTypeError, InvalidEvent, InvalidInput
from .schema._upcasting import Upcaster, Upcasters

__all__ = [
    "MAX_EVENT_TYPE_LENGTH",
    "Event",
    "NewEvent",
    "RecordedEvent",
    "TypeRegistry",
    "check_event_type",
    "default_registry",
    "event_type_name",
    "name_problem",
    "new_event_id",
]

MAX_EVENT_TYPE_LENGTH = 256
"""Longest event type name, in characters (the same limit as a stream id's)."""


def name_problem(name: str, limit: int) -> str | None:
    """What is wrong with ``name`` as a stream id or event type name, or None.

    Names are printed by every tool that lists events, so they must be printable text (no
    newline, escape or NUL), and ``"order-1 "`` must not be a second ``"order-1"``.
    """
    if not name:
        return "must not be empty"
    if len(name) > limit:
        return f"is {len(name)} characters, over the limit of {limit}"
    if not name.isprintable():
        bad = next(c for c in name if not c.isprintable())
        return f"contains the control or unprintable character {bad!r}; use printable text"
    if name.strip() != name:
        if not name.strip():
            return "must not be blank"
        return "has leading or trailing spaces; remove them"
    return None


def check_event_type(name: object, what: str = "event type") -> str:
    """Return ``name`` if it is a valid event type name; raise `InvalidEvent` saying why not."""
    if not isinstance(name, str):
        raise InvalidEvent(f"{what} must be a str, got {type(name).__name__} {name!r}")
    problem = name_problem(name, MAX_EVENT_TYPE_LENGTH)
    if problem is not None:
        shown = name if len(name) <= MAX_EVENT_TYPE_LENGTH else name[:40] + "…"
        raise InvalidEvent(f"invalid {what} {shown!r}: {problem}")
    return name


if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**_: Any) -> Any:
        return lambda cls: cls


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(msgspec.field,))
class _EventMeta(msgspec.StructMeta):
    # msgspec's kw_only applies to the fields of the class that sets it, not to its
    # subclasses' fields; this makes every event type keyword-only without each one
    # having to say so. It changes nothing else.
    def __new__(
        mcls, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any
    ) -> _EventMeta:
        kwargs.setdefault("kw_only", True)
        return super().__new__(mcls, name, bases, namespace, **kwargs)


class Event(msgspec.Struct, metaclass=_EventMeta, frozen=True):
    """Base class for domain events: frozen, keyword-only, encoded with msgspec.

    The stable type name stored with each event defaults to the class name (never an
    import path); set ``__event_type__`` to choose another, and ``__schema_version__``
    (default 1) when the payload's shape changes. Subclasses register themselves in the
    default registry so stores can decode them back into the class.

    ::

        class OrderPlaced(eventfold.Event):
            order_id: str
            total_cents: int
    """

    __event_type__: ClassVar[str]
    __schema_version__: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__event_type__" not in cls.__dict__:
            cls.__event_type__ = cls.__name__
        check_event_type(cls.__event_type__, f"{cls.__qualname__}.__event_type__")
        version = cls.__dict__.get("__schema_version__", cls.__schema_version__)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise EventTypeError(
                f"{cls.__qualname__}.__schema_version__ must be an int >= 1, got {version!r}"
            )
        default_registry.register(cls)


def event_type_name(cls: type[Event]) -> str:
    """The stable name a class's events are stored under."""
    return cls.__event_type__


_F = TypeVar("_F", bound=Upcaster)


class TypeRegistry:
    """Maps stable event type names to classes, both ways, and holds their upcasters.

    One registry per process is the default (`default_registry`); pass your own to
    `eventfold.connect` to keep separate applications apart. A store reading an event
    stored at an older schema version than its class's lifts it with the upcasters
    registered here (see `eventfold.upcasting`).
    """

    def __init__(self) -> None:
        self._by_name: dict[str, type[Event]] = {}
        self._changes = 0
        self.upcasters = Upcasters()
        """The upcaster chains: prefer `upcaster`, `rename` and `state_upcaster`."""

    @property
    def generation(self) -> int:
        """Changes with every registration, so caches built from the registry can tell."""
        return self._changes + self.upcasters.generation

    def register(self, cls: type[Event], name: str | None = None) -> type[Event]:
        """Register ``cls`` under ``name`` (default: its ``__event_type__``); return it.

        Registering the same class twice, or a class of the same module and qualified name
        (a reloaded module), is allowed; another class under a taken name is an error.
        """
        name = check_event_type(cls.__event_type__ if name is None else name)
        known = self._by_name.get(name)
        if known is not None and known is not cls:
            same_place = (known.__module__, known.__qualname__) == (
                cls.__module__,
                cls.__qualname__,
            )
            if not same_place:
                raise EventTypeError(
                    f"event type name {name!r} is taken by {known.__module__}.{known.__qualname__}"
                    f"; give {cls.__module__}.{cls.__qualname__} its own name with "
                    "__event_type__ = '...'"
                )
        if known is not cls:
            self._by_name[name] = cls
            self._changes += 1
        return cls

    def resolve(self, name: str) -> type[Event] | None:
        """The class registered under ``name``, or None (such events read back as dicts)."""
        return self._by_name.get(name)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._by_name)

    def current_version(self, name: str) -> int | None:
        """The schema version of the class registered under ``name`` (None: no class)."""
        cls = self._by_name.get(name)
        return None if cls is None else cls.__schema_version__

    def upcaster(
        self,
        type_name: str | type[Event],
        *,
        from_version: int,
        to_type: str | type[Event] | None = None,
        to_version: int | None = None,
    ) -> Callable[[_F], _F]:
        """Register the decorated pure function as one step of an upcaster chain.

        It takes the payload stored as ``type_name`` at ``from_version`` (a dict, as
        decoded from JSON) and returns the payload of the next version (default
        ``from_version + 1``), or of ``to_type`` at ``to_version`` when the step also
        changes the type name::

            @registry.upcaster("OrderPlaced", from_version=1)
            def total_to_cents(data: dict[str, Any]) -> dict[str, Any]:
                rest = {k: v for k, v in data.items() if k != "total"}
                return {**rest, "total_cents": round(data["total"] * 100)}
        """

        def register(fn: _F) -> _F:
            self.upcasters.add(
                _name_of(type_name),
                from_version,
                fn,
                to_type=None if to_type is None else _name_of(to_type),
                to_version=to_version,
            )
            return fn

        return register

    def rename(self, old: str, *, to: str | type[Event]) -> None:
        """Read events stored under the type name ``old`` as ``to`` (a class or its name).

        The schema version is kept: an ``old`` event at version 1 continues as ``to``'s
        version 1 and through ``to``'s upcasters. Old events keep their stored name
        (`RecordedEvent.stored_type`); new ones are written under the new name.
        """
        self.upcasters.rename(old, _name_of(to))

    def state_upcaster(self, state_type: str, *, from_version: int) -> Callable[[_F], _F]:
        """Register the decorated pure function as one step of a snapshot state's chain.

        ``state_type`` is the decider's `Decider.state_type`; the function lifts the
        state's encoded fields (a dict) from ``from_version`` to ``from_version + 1``.
        """

        def register(fn: _F) -> _F:
            self.upcasters.add_state(state_type, from_version, fn)
            return fn

        return register


def _name_of(type_or_name: str | type[Event]) -> str:
    if isinstance(type_or_name, str):
        return type_or_name
    if isinstance(type_or_name, type) and issubclass(type_or_name, Event):
        return type_or_name.__event_type__
    raise InvalidInput(f"expected an event type name or Event subclass, got {type_or_name!r}")


default_registry = TypeRegistry()


def new_event_id() -> uuid.UUID:
    """A fresh random event id (UUID version 4)."""
    return uuid.UUID(bytes=_random_id_bytes(os.urandom(16)), version=4)


def _random_id_bytes(raw: bytes) -> bytes:
    # Version 4 and the RFC 4122 variant, set by hand so ids can be made in bulk from
    # one os.urandom call without building a UUID object per event.
    b = bytearray(raw)
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    return bytes(b)


def fresh_id_bytes(n: int) -> list[bytes]:
    """``n`` random version-4 event ids as 16-byte strings."""
    raw = os.urandom(16 * n)
    return [_random_id_bytes(raw[i : i + 16]) for i in range(0, 16 * n, 16)]


class NewEvent:
    """An event to append, with the envelope fields the caller chooses.

    ``data`` is an `Event`, or a mapping together with ``type`` (for tools and producers
    without Python classes). An explicit ``event_id`` makes a client retry safe: appending
    the same ids again, in the same order, returns the first append's result.

    ``schema_version`` says which version of the type's schema a mapping is in (default:
    the current one). A producer still on an older version can keep writing it: the
    payload is checked by lifting a copy through the upcasters, and stored as given.

    A ``type`` is 1 to 256 printable characters without leading or trailing spaces (as a
    stream id); anything else raises `InvalidEvent` here.
    """

    __slots__ = (
        "causation_id",
        "correlation_id",
        "data",
        "event_id",
        "metadata",
        "schema_version",
        "type",
    )

    def __init__(
        self,
        data: Event | Mapping[str, Any],
        *,
        event_id: uuid.UUID | None = None,
        type: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        correlation_id: str | uuid.UUID | None = None,
        causation_id: str | uuid.UUID | None = None,
        schema_version: int | None = None,
    ) -> None:
        self.data = data
        self.event_id = event_id
        self.type = type if type is None else check_event_type(type)
        self.metadata = metadata
        self.correlation_id = correlation_id
        self.causation_id = causation_id
        self.schema_version = schema_version

    def __repr__(self) -> str:
        return f"NewEvent({self.data!r}, event_id={self.event_id!r}, type={self.type!r})"


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


class RecordedEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as stored: the typed payload plus its place in its stream and in the log.

    Fields that cost time to build (the UUID, the position, the metadata mapping, the
    timestamp) are kept in their stored form and built when first asked for, so reading
    the log stays close to the raw driver's speed.

    ``type``, ``schema_version`` and ``data`` are the event as the code knows it today:
    an event stored at an older version (or under an old name) has been upcast, and
    `stored_type` and `stored_schema_version` say how it was written.
    """

    stream_id: str
    version: int
    type: str
    """The type name the event reads as (after any rename)."""
    schema_version: int
    """The schema version of ``data``: the class's current one once upcast."""
    data: Any
    """The typed event (an `Event`), or a dict when no class is registered for ``type``."""
    raw_event_id: bytes
    raw_tx: int
    raw_seq: int
    raw_metadata: bytes
    recorded_us: int
    """Microseconds since the Unix epoch, UTC, as set by the store."""
    upcast_from: tuple[str, int] | None = None
    """The stored (type name, schema version) when the event was upcast, else None."""

    @property
    def stored_type(self) -> str:
        """The type name the event was stored under."""
        return self.type if self.upcast_from is None else self.upcast_from[0]

    @property
    def stored_schema_version(self) -> int:
        """The schema version the event was written with."""
        return self.schema_version if self.upcast_from is None else self.upcast_from[1]

    @property
    def event_id(self) -> uuid.UUID:
        """The event's id, unique within its stream."""
        return uuid.UUID(bytes=self.raw_event_id)

    @property
    def position(self) -> Position:
        """The event's place in the global log."""
        return Position(self.raw_tx, self.raw_seq)

    @property
    def metadata(self) -> dict[str, Any]:
        """The caller's keys plus ``correlation_id``, ``causation_id``, ``producer_version``."""
        if self.raw_metadata == b"{}":
            return {}
        result: dict[str, Any] = msgspec.json.decode(self.raw_metadata)
        return result

    @property
    def correlation_id(self) -> str | None:
        """The id that ties this event to the conversation it belongs to, if set."""
        value = self.metadata.get("correlation_id")
        return None if value is None else str(value)

    @property
    def causation_id(self) -> str | None:
        """The id of the command or event that caused this one, if set."""
        value = self.metadata.get("causation_id")
        return None if value is None else str(value)

    @property
    def producer_version(self) -> str | None:
        """The version of the code that wrote the event (``name version``), if known."""
        value = self.metadata.get("producer_version")
        return None if value is None else str(value)

    @property
    def recorded_at(self) -> _dt.datetime:
        """When the store recorded the event (UTC)."""
        return _EPOCH + _dt.timedelta(microseconds=self.recorded_us)

    def __repr__(self) -> str:
        return (
            f"RecordedEvent(stream_id={self.stream_id!r}, version={self.version}, "
            f"position={self.position}, type={self.type!r}, data={self.data!r})"
        )
