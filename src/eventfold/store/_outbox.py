"""What every backend's unit of work and outbox share: declared destinations, and the
checks and encoding of a message before it is stored (so that bad input fails at
``publish``, before anything is written)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import msgspec

from .._position import Position
from ..errors import InvalidInput, StoreError, UnknownDestination

__all__ = [
    "NOTHING_PUBLISHED",
    "PENDING",
    "ROLLED_BACK",
    "Destinations",
    "Outgoing",
    "Published",
    "QueuedMessages",
    "decode_headers",
    "prepare_message",
    "unit_headers",
]

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,200}")
_MAX_KEY = 1024

_encode = msgspec.json.Encoder().encode
_decode_headers = msgspec.json.Decoder(dict[str, str]).decode


class Outgoing(NamedTuple):
    """A message checked and encoded, waiting for its unit of work to commit."""

    message_id: bytes
    destination: str
    key: str | None
    payload: bytes
    headers: bytes
    """The headers as a JSON object of strings."""


class Published:
    """The outbox positions of a unit's messages, known once it commits (the unit's
    `outbox_position`); `PENDING` until then, `ROLLED_BACK` if it does not commit."""

    __slots__ = ("_positions", "rolled_back")

    def __init__(
        self, positions: dict[bytes, Position] | None = None, *, rolled_back: bool = False
    ) -> None:
        self._positions = positions
        self.rolled_back = rolled_back

    @classmethod
    def of(cls, pairs: Iterable[tuple[bytes, Position]]) -> Published:
        """The committed positions (message id, position), in any order; a message id
        published twice in the unit gets its later position."""
        positions: dict[bytes, Position] = {}
        for mid, position in pairs:
            known = positions.get(mid)
            if known is None or known < position:
                positions[mid] = position
        return cls(positions)

    def position(self, message_id: uuid.UUID) -> Position:
        if not isinstance(message_id, uuid.UUID):
            raise InvalidInput(
                f"outbox_position takes the uuid.UUID that publish returned, got {message_id!r}"
            )
        positions = self._positions
        if positions is None:
            if self.rolled_back:
                raise StoreError(
                    f"message {message_id} has no outbox position: its unit of work rolled "
                    "back (or failed before its commit was confirmed), so nothing it "
                    "published is known to be stored"
                )
            raise StoreError(
                f"message {message_id} has no outbox position yet: a position is given at "
                "the commit; ask after the unit's `async with` block has ended"
            )
        found = positions.get(message_id.bytes)
        if found is None:
            raise InvalidInput(
                f"message {message_id} was not published in this unit of work; ask the unit "
                "that published it"
            )
        return found


PENDING = Published()
"""A unit's positions before it commits (shared: a unit allocates nothing for them)."""
ROLLED_BACK = Published(rolled_back=True)
NOTHING_PUBLISHED = Published({})
"""A committed unit's positions when it published nothing."""


class Destinations:
    """The destinations a store allows outbox messages for."""

    __slots__ = ("names",)

    def __init__(self) -> None:
        self.names: frozenset[str] = frozenset()

    def declare(self, name: str) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidInput(
                f"outbox destination {name!r} is not a valid name; use 1 to 200 letters, "
                "digits, '_', '-' or '.' (e.g. 'billing')"
            )
        self.names = self.names | {name}


def unit_headers(
    correlation_id: str | uuid.UUID | None,
    causation_id: str | uuid.UUID | None,
    traceparent: str | None,
) -> dict[str, str]:
    """The headers a unit of work gives each of its messages."""
    headers: dict[str, str] = {}
    for name, value in (
        ("correlation_id", correlation_id),
        ("causation_id", causation_id),
        ("traceparent", traceparent),
    ):
        if value is None:
            continue
        if isinstance(value, uuid.UUID):
            value = str(value)
        if not isinstance(value, str) or not value:
            raise InvalidInput(
                f"unit of work {name}={value!r} must be a non-empty str (or a UUID for ids)"
            )
        headers[name] = value
    return headers


def prepare_message(
    destinations: Destinations,
    defaults: Mapping[str, str],
    destination: str,
    payload: object,
    key: str | None,
    headers: Mapping[str, str] | None,
    message_id: uuid.UUID | None,
) -> tuple[uuid.UUID, Outgoing]:
    """Check and encode one message (raises `InvalidInput` on anything wrong)."""
    if destination not in destinations.names:
        if not isinstance(destination, str):
            raise InvalidInput(f"outbox destination must be a str, got {destination!r}")
        raise UnknownDestination(destination, destinations.names)
    if key is not None and (not isinstance(key, str) or len(key) > _MAX_KEY):
        raise InvalidInput(
            f"outbox message key must be a str of at most {_MAX_KEY} characters or None, "
            f"got {key!r}"
        )
    if message_id is None:
        message_id = uuid.uuid4()
    elif not isinstance(message_id, uuid.UUID):
        raise InvalidInput(f"outbox message_id must be a uuid.UUID, got {message_id!r}")
    merged = dict(defaults)
    if headers is not None:
        if not isinstance(headers, Mapping):
            raise InvalidInput(f"outbox headers must be a mapping of str to str, got {headers!r}")
        for name, value in headers.items():
            if not isinstance(name, str) or not name or not isinstance(value, str):
                raise InvalidInput(
                    f"outbox header {name!r}: {value!r} is not a non-empty str name with a "
                    "str value; convert it to str"
                )
            merged[name] = value
    return message_id, Outgoing(
        message_id.bytes, destination, key, encode_payload(payload), _encode(merged)
    )


def encode_payload(payload: object) -> bytes:
    """bytes as they are, a str as UTF-8, anything else as msgspec's JSON."""
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    try:
        return _encode(payload)
    except (TypeError, ValueError, msgspec.EncodeError) as exc:
        raise InvalidInput(
            f"outbox payload of type {type(payload).__name__} cannot be encoded as JSON "
            f"({exc}); pass bytes, a str, or a value msgspec can encode (a Struct, dict, "
            "list, number, ...)"
        ) from exc


def decode_headers(data: Any) -> dict[str, str]:
    """The stored headers back as a dict."""
    return _decode_headers(bytes(data))


class QueuedMessages:
    """`UnitOfWork.publish` and `outbox_position` for a unit that keeps its messages in a
    list until its commit writes them (the memory and PostgreSQL units): the unit sets
    ``_destinations``, ``_headers``, ``messages`` and ``published``, and refuses work in
    ``_check`` once it is over."""

    _destinations: Destinations
    _headers: Mapping[str, str]
    messages: list[Outgoing]
    published: Published
    _check: Callable[[], object]
    """The unit's own check that it is still open (raises once it is over)."""

    def publish(
        self,
        destination: str,
        payload: object,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        message_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        self._check()
        mid, message = prepare_message(
            self._destinations, self._headers, destination, payload, key, headers, message_id
        )
        self.messages.append(message)
        return mid

    def outbox_position(self, message_id: uuid.UUID) -> Position:
        return self.published.position(message_id)
