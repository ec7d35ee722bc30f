"""Turning crypto-shredding on for a store, forgetting subjects, and asking what is gone."""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from .._events import RecordedEvent
from .._personal import PERSONAL_KEY, b64decode
from .._position import ANY
from ..errors import ConfigurationError, InvalidInput
from ..store import (
    AppendResult,
    EventStore,
    SubjectKeys,
    SupportsCodec,
    SupportsSubjectKeys,
    capability,
)
from ._audit import AUDIT_STREAM, SubjectForgotten

__all__ = [
    "MASTER_KEY_ENV",
    "ForgetResult",
    "Privacy",
    "enable",
    "erased_fields",
    "erased_in",
]

MASTER_KEY_ENV = "EVENTFOLD_MASTER_KEY"
"""The environment variable read for the master key (base64 of 32 bytes) when
`enable` is given none."""

_HINT = "crypto-shredding keeps per-subject keys in the store; use a backend that offers them"


@dataclass(frozen=True, slots=True)
class ForgetResult:
    """What `Privacy.forget` did."""

    subject: str
    keys_deleted: int
    """How many keys the subject had (0: nothing of theirs was sealed, or already forgotten)."""
    audit: AppendResult
    """The append of the `SubjectForgotten` event to `AUDIT_STREAM`."""


class Privacy:
    """Crypto-shredding on one store (made by `enable`)."""

    def __init__(self, store: EventStore, keys: SubjectKeys, ring: Any) -> None:
        self.store = store
        self._keys = keys
        self._ring = ring

    async def forget(
        self, subject: str, *, reason: str = "", actor: str | None = None
    ) -> ForgetResult:
        """Delete every key of ``subject``, so all their personal fields read as
        replacement values from now on, then append a `SubjectForgotten` event (with no
        personal data) to `AUDIT_STREAM`.

        Other processes stop opening the subject's fields within their key cache window
        (``cache_seconds`` of `enable`). Calling it again is harmless (0 keys deleted).
        """
        _check_subject(subject)
        if not isinstance(reason, str):
            raise InvalidInput(f"reason must be a str, got {type(reason).__name__}")
        if actor is not None and not isinstance(actor, str):
            raise InvalidInput(f"actor must be a str or None, got {type(actor).__name__}")
        deleted = await asyncio.to_thread(self._keys.forget, subject)
        self._ring.evict()
        event = SubjectForgotten(subject=subject, keys_deleted=deleted, reason=reason, actor=actor)
        audit = await self.store.append(AUDIT_STREAM, [event], expected_version=ANY)
        return ForgetResult(subject, deleted, audit)

    async def prepare(self, *subjects: str) -> None:
        """Make the keys of ``subjects`` that have none now, off the event loop.

        The first sealed event of a subject makes its key; on SQLite that cannot happen
        inside a unit of work (the key's write would wait for the unit), so prepare the
        subjects a unit will seal before it begins.
        """
        for subject in subjects:
            _check_subject(subject)
        for subject in subjects:
            await asyncio.to_thread(self._ring.key_for, subject)

    async def is_forgotten(self, subject: str) -> bool:
        """Whether ``subject`` has no key in the store, so nothing sealed for them can be
        opened any more (also true of a subject never seen)."""
        _check_subject(subject)
        return await asyncio.to_thread(self._keys.current, subject) is None


def enable(
    store: EventStore,
    master_key: bytes | None = None,
    *,
    cache_seconds: float = 60.0,
    cache_size: int = 100_000,
) -> Privacy:
    """Seal personal fields (`eventfold.Personal`) of the events ``store`` writes and
    open them on read, with per-subject keys kept in the store's database.

    ``master_key`` (32 bytes; when None, the base64 in ``EVENTFOLD_MASTER_KEY`` if set)
    wraps the keys as they are stored; without one the database holds them as they are.
    Keys are cached for ``cache_seconds`` (at most ``cache_size`` of them).
    """
    try:
        from ._keyring import KeyRing
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ConfigurationError(
            "crypto-shredding needs the cryptography package: pip install 'eventfold[privacy]'"
        ) from exc
    keys = capability(store, SupportsSubjectKeys, hint=_HINT).subject_keys
    codec = capability(store, SupportsCodec).codec
    if isinstance(cache_seconds, bool) or not isinstance(cache_seconds, (int, float)):
        raise InvalidInput(f"cache_seconds must be a number >= 0, got {cache_seconds!r}")
    if cache_seconds < 0:
        raise InvalidInput(f"cache_seconds must be a number >= 0, got {cache_seconds!r}")
    if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
        raise InvalidInput(f"cache_size must be an int >= 1, got {cache_size!r}")
    ring = KeyRing(
        keys, _master_key(master_key), cache_seconds=float(cache_seconds), cache_size=cache_size
    )
    codec.protector = ring
    return Privacy(store, keys, ring)


def erased_fields(store: EventStore, event: RecordedEvent) -> tuple[str, ...]:
    """The personal fields of ``event`` whose subject was forgotten (their keys no longer
    exist), so they read as replacement values; () for an event with none sealed."""
    return erased_in(store, [event.raw_metadata])[0]


def erased_in(
    store: EventStore, metadata: Sequence[bytes | Mapping[str, Any]]
) -> list[tuple[str, ...]]:
    """`erased_fields` of many events at once, given their stored metadata (bytes as
    stored, or decoded): one lookup of the store's keys for all of them (none when no
    event has sealed fields). Synchronous, like `SubjectKeys`: a page of an async server
    runs it in a thread."""
    entries: list[list[Any]] = []
    wanted: set[bytes] = set()
    for meta in metadata:
        found: Any = None
        if isinstance(meta, (bytes, bytearray, memoryview)):
            raw = bytes(meta)
            if _MARK in raw:
                found = msgspec.json.decode(raw).get(PERSONAL_KEY)
        else:
            found = meta.get(PERSONAL_KEY)
        sealed = found if isinstance(found, list) else []
        pairs = [
            (b64decode(entry["k"]), entry["f"])
            for entry in sealed
            if isinstance(entry, dict) and isinstance(entry.get("k"), str)
        ]
        wanted.update(key_id for key_id, _ in pairs)
        entries.append(pairs)
    if not wanted:
        return [() for _ in entries]
    keys = capability(store, SupportsSubjectKeys, hint=_HINT).subject_keys
    alive = keys.find(sorted(wanted))
    return [
        tuple(str(f) for key_id, fields in pairs if key_id not in alive for f in fields)
        for pairs in entries
    ]


_MARK = PERSONAL_KEY.encode()


def _check_subject(subject: object) -> None:
    if not isinstance(subject, str) or not subject:
        raise InvalidInput(f"subject must be a non-empty str, got {subject!r}")


def _master_key(given: bytes | None) -> bytes | None:
    if given is None:
        text = os.environ.get(MASTER_KEY_ENV)
        if not text:
            return None
        try:
            given = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError(
                f"{MASTER_KEY_ENV} is not base64; set it to the base64 of 32 random bytes"
            ) from None
        where = MASTER_KEY_ENV
    else:
        where = "master_key"
    if not isinstance(given, bytes) or len(given) != 32:
        size = f"{len(given)} bytes" if isinstance(given, bytes) else type(given).__name__
        raise ConfigurationError(f"{where} must be 32 bytes (AES-256), got {size}")
    return given
