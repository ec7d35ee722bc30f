"""Subject keys in a dict: the memory backend's `SubjectKeys`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ...errors import StoreClosed, StoreReadOnly
from ...store._subject_keys import (
    check_key_ids,
    check_new_key,
    check_retry,
    check_subject,
)

if TYPE_CHECKING:
    from ...store.ports import HookTransaction

__all__ = ["MemorySubjectKeys"]


class MemorySubjectKeys:
    """Per-subject data keys held in memory (see `eventfold.store.SubjectKeys`); they
    live as long as the store object, like its events."""

    def __init__(self, is_open: Callable[[], bool], *, read_only: bool = False) -> None:
        self._is_open = is_open
        self._read_only = read_only
        self._material: dict[bytes, tuple[str, bytes]] = {}
        self._by_subject: dict[str, list[bytes]] = {}
        # The codec may ask from a reader thread while `forget` runs in another.
        self._lock = threading.Lock()

    def _check(self, writing: bool) -> None:
        if not self._is_open():
            raise StoreClosed("memory store")
        if writing and self._read_only:
            raise StoreReadOnly("memory://")

    joins_appends = False
    """See `eventfold.store.SubjectKeys.joins_appends`."""

    def find(self, key_ids: Sequence[bytes]) -> dict[bytes, bytes]:
        ids = check_key_ids(key_ids)
        self._check(False)
        with self._lock:
            return {k: self._material[k][1] for k in ids if k in self._material}

    def current(self, subject: str) -> tuple[bytes, bytes] | None:
        check_subject(subject)
        self._check(False)
        with self._lock:
            ids = self._by_subject.get(subject)
            if not ids:
                return None
            return ids[-1], self._material[ids[-1]][1]

    def add(self, key_id: bytes, subject: str, material: bytes) -> None:
        key, data = check_new_key(key_id, subject, material)
        self._check(True)
        with self._lock:
            known = self._material.get(key)
            if known is not None:
                check_retry(key, subject, data, known)
                return  # a retry
            self._material[key] = (subject, data)
            self._by_subject.setdefault(subject, []).append(key)

    async def add_in(
        self,
        tx: HookTransaction,
        key_id: bytes,
        subject: str,
        material: bytes,
        written_with: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """`add`: the memory store has no transactions to join (nor transaction hooks
        that would give one), so the key is stored at once; ``written_with`` is not
        looked at (a memory store's keys are never written again by appends)."""
        self.add(key_id, subject, material)

    def forget(self, subject: str) -> int:
        check_subject(subject)
        self._check(True)
        with self._lock:
            ids = self._by_subject.pop(subject, [])
            for key in ids:
                del self._material[key]
            return len(ids)
