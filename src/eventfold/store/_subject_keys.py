"""Checks every backend's `SubjectKeys` applies to what it is given, and the clock its
keys are stamped with: the same input is refused alike everywhere, before anything is
stored."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from .._events import name_problem
from ..errors import InvalidInput

__all__ = [
    "MAX_KEY_ID_BYTES",
    "MAX_MATERIAL_BYTES",
    "MAX_SUBJECT_LENGTH",
    "check_key_id",
    "check_key_ids",
    "check_material",
    "check_new_key",
    "check_retry",
    "check_subject",
    "created_us",
]

MAX_SUBJECT_LENGTH = 256
"""Longest subject, in characters (as long as a stream id, which a subject often is)."""
MAX_KEY_ID_BYTES = 64
"""Longest key id, in bytes."""
MAX_MATERIAL_BYTES = 1024
"""Most bytes of key material (a key, perhaps wrapped by a master key)."""


def _as_bytes(value: object, what: str, limit: int) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InvalidInput(f"{what} must be bytes, got {type(value).__name__}")
    data = bytes(value)
    if not data:
        raise InvalidInput(f"{what} must not be empty")
    if len(data) > limit:
        raise InvalidInput(f"{what} is {len(data)} bytes, over the limit of {limit}")
    return data


def check_key_id(key_id: object) -> bytes:
    """``key_id`` as bytes, or `InvalidInput` saying what is wrong with it."""
    return _as_bytes(key_id, "a subject key's id", MAX_KEY_ID_BYTES)


def check_key_ids(key_ids: object) -> list[bytes]:
    """``key_ids`` as a list of distinct ids (in their first order), or `InvalidInput`."""
    if isinstance(key_ids, bytes | bytearray | memoryview | str) or not isinstance(
        key_ids, Sequence
    ):
        raise InvalidInput(
            f"key_ids must be a sequence of bytes ids, got {type(key_ids).__name__}; "
            "for one id pass [key_id]"
        )
    return list(dict.fromkeys(check_key_id(key_id) for key_id in key_ids))


def check_subject(subject: object) -> str:
    """``subject`` if it is a valid subject (printable text, at most `MAX_SUBJECT_LENGTH`
    characters, no leading or trailing spaces), or `InvalidInput`."""
    if not isinstance(subject, str):
        raise InvalidInput(f"a subject must be a str, got {type(subject).__name__}")
    problem = name_problem(subject, MAX_SUBJECT_LENGTH)
    if problem is not None:
        shown = subject if len(subject) <= MAX_SUBJECT_LENGTH else subject[:40] + "…"
        raise InvalidInput(f"invalid subject {shown!r}: {problem}")
    return subject


def check_material(material: object) -> bytes:
    """``material`` as bytes, or `InvalidInput`."""
    return _as_bytes(material, "a subject key's material", MAX_MATERIAL_BYTES)


def created_us() -> int:
    """Now, in microseconds since the epoch (a key's ``created_us``; the backends keep a
    subject's keys in strictly increasing order even when the clock steps back)."""
    return time.time_ns() // 1000


def check_retry(key_id: bytes, subject: str, material: bytes, found: Any) -> None:
    """After an add found ``key_id`` taken by ``found`` (its stored (subject, material);
    None when the add stored it): the same key again is a retry and does nothing, another
    key under the same id is refused."""
    if found is not None and (found[0], bytes(found[1])) != (subject, material):
        raise InvalidInput(
            f"subject key id {key_id.hex()} is already taken by another key; "
            "make a new random id for each key"
        )


def check_new_key(key_id: object, subject: object, material: object) -> tuple[bytes, bytes]:
    """The key id and material of a key to add, checked with its subject (as `add` and
    `add_in` take them)."""
    key = check_key_id(key_id)
    check_subject(subject)
    return key, check_material(material)
