"""The keys behind crypto-shredding: AES-256-GCM per data subject, over `SubjectKeys`."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import ConfigurationError
from ..store import SubjectKeys

__all__ = ["KeyRing"]

_log = logging.getLogger("eventfold.privacy")

_PLAIN = b"\x00"
"""Stored material prefix: the key as is (no master key)."""
_WRAPPED = b"\x01"
"""Stored material prefix: nonce and the key sealed with the master key."""
_NONCE = 12
_KEY_ID = 16
_TAG = 16
_WRITTEN = 16
"""Transactions remembered per pending key (see `_Pending.written`)."""


class _Pending:
    """A key made here that the store may not hold yet."""

    __slots__ = ("aead", "material", "subject", "written")

    def __init__(self, subject: str, material: bytes, aead: AESGCM) -> None:
        self.subject = subject
        self.material = material
        self.aead = aead
        self.written: list[tuple[str, bytes]] = []
        """An event of each transaction that wrote it (the newest `_WRITTEN`): any of
        them stored means the key was stored with it."""


class KeyRing:
    """Seals and opens personal fields with per-subject keys (a codec's `Protector`).

    Keys are cached in this process (least recently used out beyond ``cache_size``) and
    looked up again after ``cache_seconds``: a subject forgotten by another process stops
    opening here within that time. Forgotten keys are cached as missing too, so reads of
    erased events do not ask the database row by row.

    A subject's new key is made here, pending, once `deferred` is set (the store's appends
    run the `KeyWriter` participant): every append whose events name a pending key writes
    it in its own transaction (`pending_for`), so the key commits with the first event
    sealed with it, or not at all. It stays pending, written again (harmlessly) by each
    later append that names it, until this ring sees it stored (its subject's cached key
    is looked up again, or an open finds it in the store). A pending key that was written
    by some append but is not in the store when looked up again is retired, never written
    again: its subject was forgotten (or every append that wrote it failed), and writing it
    again would bring back a forgotten key. Without `deferred` (a store without transaction
    hooks, or before the participant is attached) a new key is added at once, as it is made.
    """

    def __init__(
        self,
        keys: SubjectKeys,
        master_key: bytes | None,
        *,
        cache_seconds: float,
        cache_size: int,
    ) -> None:
        self._keys = keys
        self._master = AESGCM(master_key) if master_key is not None else None
        self._ttl = cache_seconds
        self._size = cache_size
        self._lock = threading.Lock()
        self._local = threading.local()
        """``keys``: the keys of the page being opened on this thread (see `page`)."""
        self._current: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._aead: OrderedDict[bytes, tuple[AESGCM | None, float]] = OrderedDict()
        self.deferred = False
        """Whether new keys are left pending, for appends' transactions to write (set
        by the key writer as it attaches)."""
        self.writer_attached: Callable[[], bool] | None = None
        """Whether the store's appends run the key writer now (checked, while `deferred`,
        as each key is made: a closed store forgets its participants)."""
        self.on_new_key: Callable[[], None] | None = None
        """Called as a key is made on its own (to attach the key writer)."""
        self._pending: dict[bytes, _Pending] = {}
        self._pending_of: dict[str, bytes] = {}
        """Subject -> its pending key's id."""
        self._retired: OrderedDict[bytes, None] = OrderedDict()
        """Ids of keys no longer pending that no append may write (at most cache_size)."""
        self._listeners: dict[int, Callable[[str], object]] = {}
        self._next_listener = 0

    # -- the Protector -----------------------------------------------------------------

    def key_for(self, subject: str) -> bytes:
        now = time.monotonic()
        existing = self._existing(subject, now)
        if existing is not None:
            return existing
        key_id = os.urandom(_KEY_ID)
        key = AESGCM.generate_key(bit_length=256)
        material = self._wrap(key_id, key)
        aead = AESGCM(key)
        attached = self.writer_attached
        if self.deferred and attached is not None and attached():
            # Written by the appends that use it, in their own transactions.
            with self._lock:
                self._pending[key_id] = _Pending(subject, material, aead)
                self._pending_of[subject] = key_id
        else:
            if self.on_new_key is not None:
                self.on_new_key()
            # Committed before the event that uses it, so no reader meets an event
            # whose key is not stored yet (an append that then fails leaves an
            # unused key).
            self._keys.add(key_id, subject, material)
        with self._lock:
            self._put(self._current, subject, key_id, now)
            self._put(self._aead, key_id, aead, now)
        return key_id

    def _existing(self, subject: str, now: float) -> bytes | None:
        """The id of ``subject``'s current key, cached, pending here or stored (then
        cached); None when they have none (never made here: see `key_for`)."""
        with self._lock:
            hit = self._current.get(subject)
            if hit is not None and hit[1] > now:
                return hit[0]
            mine = self._pending_of.get(subject)
        if mine is not None and self._still_pending(mine):
            with self._lock:
                self._put(self._current, subject, mine, now)
            return mine
        found = self._keys.current(subject)
        if found is None:
            return None
        key_id, stored = found
        aead = AESGCM(self._unwrap(key_id, stored))
        with self._lock:
            self._stored(key_id)
            self._put(self._current, subject, key_id, now)
            self._put(self._aead, key_id, aead, now)
        return key_id

    def _still_pending(self, key_id: bytes) -> bool:
        """Whether ``key_id`` (pending when asked) is to be used still: not if it is
        stored now (the store's current key is used then) or has been retired."""
        stored = bool(self._keys.find([key_id]))
        with self._lock:
            entry = self._pending.get(key_id)
            if entry is None:
                return False  # retired or stored meanwhile
            if stored:
                self._stored(key_id)
                return False
            if entry.written:
                # Written by an append, yet not stored: that append failed, or it
                # committed and the subject was forgotten since. Never write it again.
                self._retire(key_id)
                return False
            return True

    # -- pending keys (called holding no lock) ------------------------------------------

    @property
    def has_pending(self) -> bool:
        """Whether any key is pending or retired, so that `pending_for` has something to
        say (a read without the lock: a key made meanwhile is named only by appends
        encoded after this is true)."""
        return bool(self._pending) or bool(self._retired)

    def pending_for(
        self, named: Mapping[bytes, tuple[str, bytes]]
    ) -> list[tuple[bytes, str, bytes, list[tuple[str, bytes]]]]:
        """The pending keys among those ``named`` (key id -> an event of this
        transaction sealed with it, as ``(stream_id, raw_event_id)``), for the append's
        transaction to write: ``(key_id, subject, material, written_with)``, the last
        the events of earlier transactions that wrote it (`SubjectKeys.add_in`). Each
        is then recorded as written with ``named``'s event. `ConfigurationError` if one
        was retired (its subject forgotten while the event was being appended)."""
        found: list[tuple[bytes, str, bytes, list[tuple[str, bytes]]]] = []
        with self._lock:
            for key_id, event in named.items():
                entry = self._pending.get(key_id)
                if entry is not None:
                    found.append((key_id, entry.subject, entry.material, list(entry.written)))
                    entry.written.append(event)
                    del entry.written[:-_WRITTEN]
                elif key_id in self._retired:
                    raise ConfigurationError(
                        f"subject key {key_id.hex()} was forgotten while an event sealed "
                        "with it was being appended (its subject was forgotten meanwhile); "
                        "append again"
                    )
        return found

    def retire_subject(self, subject: str) -> None:
        """Never write ``subject``'s pending key again (it is being forgotten)."""
        with self._lock:
            key_id = self._pending_of.get(subject)
            if key_id is not None:
                self._retire(key_id)

    def _stored(self, key_id: bytes) -> None:
        """``key_id`` is in the store: no longer pending (called holding the lock)."""
        entry = self._pending.pop(key_id, None)
        if entry is not None and self._pending_of.get(entry.subject) == key_id:
            del self._pending_of[entry.subject]

    def _retire(self, key_id: bytes) -> None:
        """(called holding the lock)"""
        entry = self._pending.pop(key_id, None)
        if entry is not None:
            if self._pending_of.get(entry.subject) == key_id:
                del self._pending_of[entry.subject]
            self._current.pop(entry.subject, None)
            self._aead.pop(key_id, None)
        self._retired[key_id] = None
        while len(self._retired) > self._size:
            self._retired.popitem(last=False)

    def seal(self, key_id: bytes, plaintext: bytes, aad: bytes) -> bytes:
        aead = self._lookup(key_id)
        if aead is None:
            raise ConfigurationError(
                f"subject key {key_id.hex()} was deleted while an event was being sealed "
                "with it (its subject was forgotten meanwhile); append again"
            )
        nonce = os.urandom(_NONCE)
        return nonce + aead.encrypt(nonce, plaintext, aad)

    def open(self, key_id: bytes, sealed: bytes, aad: bytes) -> bytes | None:
        aead = self._lookup(key_id)
        if aead is None:
            return None
        if len(sealed) <= _NONCE:
            raise ValueError("the ciphertext is too short")
        try:
            return aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], aad)
        except InvalidTag:
            raise ValueError(
                "the ciphertext does not authenticate: it was altered or belongs to another event"
            ) from None

    def current_keys(self, subjects: Sequence[str]) -> dict[str, bytes]:
        now = time.monotonic()
        found: dict[str, bytes] = {}
        for subject in subjects:
            key_id = self._existing(subject, now)
            if key_id is not None:  # else forgotten (or never sealed for): left out
                found[subject] = key_id
        return found

    def seal_with(self, key_ids: Sequence[bytes], plaintext: bytes, aad: bytes) -> bytes:
        # A fresh data key seals the plaintext; it is then sealed under each subject's
        # key in turn, so opening it takes every one of them.
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(_NONCE)
        body = nonce + AESGCM(data_key).encrypt(nonce, plaintext, aad)
        wrapped = data_key
        for key_id in key_ids:
            wrapped = self.seal(key_id, wrapped, aad)
        return len(key_ids).to_bytes(2, "big") + wrapped + body

    def open_with(self, key_ids: Sequence[bytes], sealed: bytes, aad: bytes) -> bytes | None:
        count = int.from_bytes(sealed[:2], "big")
        size = 32 + count * (_NONCE + _TAG)
        if count != len(key_ids) or len(sealed) <= 2 + size + _NONCE:
            raise ValueError("the sealed state is cut short or names other keys")
        wrapped, body = sealed[2 : 2 + size], sealed[2 + size :]
        with self.page(list(key_ids)):
            for key_id in reversed(key_ids):
                opened = self.open(key_id, wrapped, aad)
                if opened is None:
                    return None
                wrapped = opened
        try:
            return AESGCM(wrapped).decrypt(body[:_NONCE], body[_NONCE:], aad)
        except InvalidTag:
            raise ValueError(
                "the sealed state does not authenticate: it was altered or belongs to "
                "another snapshot"
            ) from None

    def exists(self, key_ids: list[bytes]) -> set[bytes]:
        with self.page(key_ids):
            return {k for k in key_ids if self._lookup(k) is not None}

    @contextlib.contextmanager
    def page(self, key_ids: list[bytes]) -> Iterator[None]:
        now = time.monotonic()
        outer: dict[bytes, AESGCM | None] | None = getattr(self._local, "keys", None)
        keys: dict[bytes, AESGCM | None] = {}
        wanted: set[bytes] = set()
        with self._lock:
            for k in key_ids:
                if outer is not None and k in outer:
                    keys[k] = outer[k]  # a page within a page (a load opening one row)
                    continue
                hit = self._aead.get(k)
                if hit is not None and hit[1] > now:
                    keys[k] = hit[0]
                else:
                    wanted.add(k)
        if wanted:
            found = self._keys.find(sorted(wanted))
            for k in wanted:
                keys[k] = AESGCM(self._unwrap(k, found[k])) if k in found else None
            with self._lock:
                for k in wanted:
                    self._put(self._aead, k, keys[k], now)
        self._local.keys = keys if outer is None else {**outer, **keys}
        try:
            yield
        finally:
            self._local.keys = outer

    # -- forgetting ---------------------------------------------------------------------

    def on_forget(self, listener: Callable[[str], object]) -> Callable[[], None]:
        with self._lock:
            token = self._next_listener
            self._next_listener += 1
            self._listeners[token] = listener

        def remove() -> None:
            with self._lock:
                self._listeners.pop(token, None)

        return remove

    def forgotten(self, subject: str) -> None:
        """``subject`` was forgotten (here, or elsewhere): never write their pending key
        again, drop every cached key, and tell the listeners. A listener that raises is
        logged; the others still hear of it."""
        self.retire_subject(subject)
        self.evict()
        with self._lock:
            listeners = list(self._listeners.values())
        for listener in listeners:
            try:
                listener(subject)
            except Exception:
                _log.exception("a listener of forgotten subjects failed (%r)", listener)

    @property
    def listener_count(self) -> int:
        """How many `on_forget` listeners are registered."""
        with self._lock:
            return len(self._listeners)

    # -- cache -------------------------------------------------------------------------

    def evict(self) -> None:
        """Forget every cached key (after a subject is forgotten here); pending keys stay
        pending (`retire_subject` retires the forgotten subject's)."""
        with self._lock:
            self._current.clear()
            self._aead.clear()

    def _put(self, cache: OrderedDict[Any, Any], key: Any, value: Any, now: float) -> None:
        cache[key] = (value, now + self._ttl)
        cache.move_to_end(key)
        while len(cache) > self._size:
            cache.popitem(last=False)

    def _lookup(self, key_id: bytes) -> AESGCM | None:
        page: dict[bytes, AESGCM | None] | None = getattr(self._local, "keys", None)
        if page is not None and key_id in page:
            return page[key_id]
        now = time.monotonic()
        with self._lock:
            hit = self._aead.get(key_id)
            if hit is not None and hit[1] > now:
                self._aead.move_to_end(key_id)
                return hit[0]
            entry = self._pending.get(key_id)
            if entry is not None:
                # Not in the store yet, maybe: opened with the key made here.
                self._put(self._aead, key_id, entry.aead, now)
                return entry.aead
        stored = self._keys.find([key_id]).get(key_id)
        aead = AESGCM(self._unwrap(key_id, stored)) if stored is not None else None
        with self._lock:
            if aead is not None:
                self._stored(key_id)
            self._put(self._aead, key_id, aead, now)
        return aead

    # -- wrapping ----------------------------------------------------------------------

    def _wrap(self, key_id: bytes, key: bytes) -> bytes:
        if self._master is None:
            return _PLAIN + key
        nonce = os.urandom(_NONCE)
        return _WRAPPED + nonce + self._master.encrypt(nonce, key, key_id)

    def _unwrap(self, key_id: bytes, stored: bytes) -> bytes:
        kind, body = stored[:1], stored[1:]
        if kind == _PLAIN and len(body) == 32:
            return body
        if kind != _WRAPPED or len(body) <= _NONCE:
            raise ConfigurationError(
                f"subject key {key_id.hex()} is stored in a form this version cannot read"
            )
        if self._master is None:
            raise ConfigurationError(
                "this store's subject keys are wrapped with a master key; pass master_key= "
                "to eventfold.privacy.enable or set EVENTFOLD_MASTER_KEY"
            )
        try:
            return self._master.decrypt(body[:_NONCE], body[_NONCE:], key_id)
        except InvalidTag:
            raise ConfigurationError(
                f"the master key does not open subject key {key_id.hex()}; enable privacy "
                "with the master key the keys were stored with"
            ) from None
