"""The keys behind crypto-shredding: AES-256-GCM per data subject, over `SubjectKeys`."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import ConfigurationError
from ..store import SubjectKeys

__all__ = ["KeyRing"]

_PLAIN = b"\x00"
"""Stored material prefix: the key as is (no master key)."""
_WRAPPED = b"\x01"
"""Stored material prefix: nonce and the key sealed with the master key."""
_NONCE = 12
_KEY_ID = 16


class KeyRing:
    """Seals and opens personal fields with per-subject keys (a codec's `Protector`).

    Keys are cached in this process (least recently used out beyond ``cache_size``) and
    looked up again after ``cache_seconds``: a subject forgotten by another process stops
    opening here within that time. Forgotten keys are cached as missing too, so reads of
    erased events do not ask the database row by row.
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

    # -- the Protector -----------------------------------------------------------------

    def key_for(self, subject: str) -> bytes:
        now = time.monotonic()
        with self._lock:
            hit = self._current.get(subject)
            if hit is not None and hit[1] > now:
                return hit[0]
        found = self._keys.current(subject)
        if found is not None:
            key_id, stored = found
            aead = AESGCM(self._unwrap(key_id, stored))
        else:
            key_id = os.urandom(_KEY_ID)
            key = AESGCM.generate_key(bit_length=256)
            # Committed before the event that uses it, so no reader meets an event
            # whose key is not stored yet (an append that then fails leaves an unused key).
            self._keys.add(key_id, subject, self._wrap(key_id, key))
            aead = AESGCM(key)
        with self._lock:
            self._put(self._current, subject, key_id, now)
            self._put(self._aead, key_id, aead, now)
        return key_id

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

    # -- cache -------------------------------------------------------------------------

    def evict(self) -> None:
        """Forget every cached key (after a subject is forgotten here)."""
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
        stored = self._keys.find([key_id]).get(key_id)
        aead = AESGCM(self._unwrap(key_id, stored)) if stored is not None else None
        with self._lock:
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
