"""Turning crypto-shredding on for a store, forgetting subjects, and asking what is gone."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from .._events import RecordedEvent
from .._personal import PERSONAL_KEY, b64decode
from .._position import ANY
from ..errors import ConfigurationError, InvalidInput, StoreClosed
from ..store import (
    AppendResult,
    EventStore,
    HookOrder,
    HookTransaction,
    SubjectKeys,
    SupportsCodec,
    SupportsSubjectKeys,
    SupportsTransactionHooks,
    TransactionParticipant,
    capability,
)
from ._audit import AUDIT_STREAM, SubjectForgotten
from ._follow import DEFAULT_POLL_SECONDS, Follower

__all__ = [
    "KEYS_PARTICIPANT",
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

KEYS_PARTICIPANT = "eventfold.privacy-keys"
"""The name of the transaction participant that writes new subject keys."""

_log = logging.getLogger("eventfold.privacy")

_HINT = "crypto-shredding keeps per-subject keys in the store; use a backend that offers them"


@dataclass(frozen=True, slots=True)
class ForgetResult:
    """What `Privacy.forget` did."""

    subject: str
    keys_deleted: int
    """How many keys the subject had (0: nothing of theirs was sealed, or already forgotten)."""
    audit: AppendResult
    """The append of the `SubjectForgotten` event to `AUDIT_STREAM`."""


class KeyWriter(TransactionParticipant):
    """Writes the pending keys that an append's events name, in its own transaction."""

    name = KEYS_PARTICIPANT
    order = HookOrder.SUBJECT_KEYS

    def __init__(self, keys: SubjectKeys, ring: Any) -> None:
        self._keys = keys
        self._ring = ring

    async def attach(self, tx: HookTransaction) -> None:
        # Appends are held back here: every append encoded from now on runs this
        # participant, so new keys may be left for the appends to write.
        self._ring.deferred = True

    async def apply(self, tx: HookTransaction, events: Sequence[RecordedEvent]) -> None:
        if not self._ring.has_pending:
            return
        named: dict[bytes, tuple[str, bytes]] = {}
        for event in events:
            raw = event.raw_metadata
            if _MARK not in raw:
                continue
            sealed = msgspec.json.decode(raw).get(PERSONAL_KEY)
            if isinstance(sealed, list):
                for entry in sealed:
                    if isinstance(entry, dict) and isinstance(entry.get("k"), str):
                        named.setdefault(
                            b64decode(entry["k"]), (event.stream_id, event.raw_event_id)
                        )
        if not named:
            return
        pending = self._ring.pending_for(named)
        if not pending:
            return
        # An earlier attempt at this very transaction (a group commit that failed runs
        # its appends again, with the same event ids) proves nothing: its events are
        # these, not stored yet.
        own = {(e.stream_id, e.raw_event_id) for e in events}
        for key_id, subject, material, written in pending:
            earlier = [w for w in written if w not in own]
            await self._keys.add_in(tx, key_id, subject, material, earlier)


class Privacy:
    """Crypto-shredding on one store (made by `enable`)."""

    def __init__(self, store: EventStore, keys: SubjectKeys, ring: Any) -> None:
        self.store = store
        self._keys = keys
        self._ring = ring
        self._writer = KeyWriter(keys, ring)
        self._attaching: asyncio.Task[None] | None = None
        self._joins = isinstance(store, SupportsTransactionHooks) and keys.joins_appends
        """Whether new keys are written in the appends' own transactions (see
        `SubjectKeys.joins_appends`); else each is added on its own as it is made."""

    async def ready(self) -> None:
        """Return once new subject keys are written in the appends' own transactions
        (a key commits with the first event sealed with it, inside units of work too).

        `enable` starts this in the background when it is called on a running event
        loop with the store open; until it is done (or on a store without transaction
        hooks, like ``memory://``) a new key is added on its own as it is made. Await it
        once after `enable` when a unit of work may be the first to seal a subject's
        fields; calling it again is cheap.
        """
        if self._attached():
            return
        task = self._attaching
        if task is not None and not task.done():
            await asyncio.shield(task)
            if self._attached():
                return
        store = self.store
        if self._joins and isinstance(store, SupportsTransactionHooks):
            await store.transaction_hooks.add(self._writer)

    def _attached(self) -> bool:
        """Whether there is nothing to wait for: the store's appends run the key writer,
        or the store has no transaction hooks (keys are added on their own)."""
        if not self._joins:
            return True
        return self._writes_keys()

    def _writes_keys(self) -> bool:
        """Whether the store's appends run the key writer now."""
        store = self.store
        if (
            not self._joins
            or not isinstance(store, SupportsTransactionHooks)
            or not self._ring.deferred
        ):
            return False
        if any(p is self._writer for p in store.transaction_hooks.participants):
            return True
        self._ring.deferred = False  # the store was closed (and its participants with it)
        return False

    def _attach_soon(self) -> asyncio.Task[None] | None:
        """Start attaching the key writer (None without a running loop or hooks)."""
        store = self.store
        if not self._joins or not isinstance(store, SupportsTransactionHooks):
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        ring = self._ring

        async def attach() -> None:
            try:
                await store.transaction_hooks.add(self._writer)
            except StoreClosed:
                ring.deferred = False  # not open yet: the first new key tries again
            except BaseException:
                ring.deferred = False
                raise

        task = self._attaching = loop.create_task(attach(), name=KEYS_PARTICIPANT)
        task.add_done_callback(_log_failure)
        return task

    def _seal_check(self) -> None:
        """Before new keys are made: attach the key writer if it is not (in the
        background: the ring adds keys on their own until it is)."""
        if not self._attached() and (self._attaching is None or self._attaching.done()):
            self._attach_soon()

    async def forget(
        self, subject: str, *, reason: str = "", actor: str | None = None
    ) -> ForgetResult:
        """Delete every key of ``subject``, so all their personal fields read as
        replacement values from now on, then append a `SubjectForgotten` event (with no
        personal data) to `AUDIT_STREAM`.

        This process's `on_forget` listeners are called right after the keys are deleted
        (a `CommandHandler` drops its cached states that hold the subject). Other
        processes stop opening the subject's fields as soon as their `follow` sees the
        audit event, else within their key cache window (``cache_seconds`` of `enable`).
        Calling it again is harmless (0 keys deleted).
        """
        _check_subject(subject)
        if not isinstance(reason, str):
            raise InvalidInput(f"reason must be a str, got {type(reason).__name__}")
        if actor is not None and not isinstance(actor, str):
            raise InvalidInput(f"actor must be a str or None, got {type(actor).__name__}")
        # Its pending key (if any) must never be written again, or it would come back.
        self._ring.retire_subject(subject)
        self._ring.evict()
        deleted = await asyncio.to_thread(self._keys.forget, subject)
        self._ring.forgotten(subject)
        event = SubjectForgotten(subject=subject, keys_deleted=deleted, reason=reason, actor=actor)
        audit = await self.store.append(AUDIT_STREAM, [event], expected_version=ANY)
        return ForgetResult(subject, deleted, audit)

    def on_forget(self, callback: Callable[[str], object]) -> Callable[[], None]:
        """Call ``callback(subject)`` on the event loop each time this process learns that
        a data subject was forgotten: by `forget` here, right after the keys are deleted,
        or by another process, once `follow` sees its audit event (a forget made here is
        then heard twice: make the callback idempotent). Drop in-memory copies of the
        subject's personal values in it. Returns what removes the callback; one that
        raises is logged and the others still run.

        Held strongly: an object that should not be kept alive by it registers a
        callback holding it weakly (as `CommandHandler` does).
        """
        remove: Callable[[], None] = self._ring.on_forget(callback)
        return remove

    def follow(self, *, poll_seconds: float = DEFAULT_POLL_SECONDS) -> Follower:
        """Follow the audit stream while entered (``async with privacy.follow(): ...``):
        each subject forgotten from then on, by any process on this store's database,
        is forgotten here within ``poll_seconds`` (1 s), as if by `forget` here (the key
        cache dropped and the `on_forget` callbacks called), instead of within
        ``cache_seconds``.

        Entering reads the log's head and returns once following starts after it: a
        forget made after that is never missed. The follower reads the log's new
        forgets every ``poll_seconds`` (one small query; forgets are rare, so it does
        not wake on every append). A failure is logged and retried with backoff; the
        store being closed ends it quietly. Leaving stops it.
        `eventfold.web.create_app` follows while its lifespan runs.
        """
        return Follower(self.store, self._ring.forgotten, poll_seconds=poll_seconds)

    async def prepare(self, *subjects: str) -> None:
        """Make the keys of ``subjects`` that have none now, off the event loop.

        Not needed: a subject's first sealed event makes its key, which commits with that
        event (inside a unit of work too, once `ready`). Preparing does that lookup
        ahead, so the first append of each subject does not wait for it. A key prepared
        this way is written by the first append that uses it, like any new key.
        """
        for subject in subjects:
            _check_subject(subject)
        await self.ready()
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

    A subject's new key is written in the transaction of the first append that uses it,
    by a participant added to the store's ``transaction_hooks`` in the background (on a
    running event loop; else when the first key is made): `Privacy.ready` waits for it.
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
    privacy = Privacy(store, keys, ring)
    ring.writer_attached = privacy._writes_keys
    ring.on_new_key = privacy._seal_check
    privacy._attach_soon()
    return privacy


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _log.warning(
            "new subject keys are added on their own: the key writer could not join the "
            "store's appends (%s); await privacy.ready() to try again",
            task.exception(),
        )


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
