"""Subject keys in a dict: the memory backend's `SubjectKeys`."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ...errors import StoreReadOnly

__all__ = ["MemorySubjectKeys"]


class MemorySubjectKeys:
    """Per-subject data keys held in memory (see `eventfold.store.SubjectKeys`)."""

    def __init__(self, *, read_only: bool = False) -> None:
        self._read_only = read_only
        self._material: dict[bytes, bytes] = {}
        self._subject_of: dict[bytes, str] = {}
        self._by_subject: dict[str, list[bytes]] = {}
        # The codec may ask from a reader thread while `forget` runs in another.
        self._lock = threading.Lock()

    def find(self, key_ids: Sequence[bytes]) -> dict[bytes, bytes]:
        with self._lock:
            return {k: self._material[k] for k in key_ids if k in self._material}

    def current(self, subject: str) -> tuple[bytes, bytes] | None:
        with self._lock:
            ids = self._by_subject.get(subject)
            if not ids:
                return None
            return ids[-1], self._material[ids[-1]]

    def add(self, key_id: bytes, subject: str, material: bytes) -> None:
        if self._read_only:
            raise StoreReadOnly("memory://")
        with self._lock:
            if key_id in self._material:
                raise ValueError(f"key id {key_id.hex()} already exists")
            self._material[key_id] = material
            self._subject_of[key_id] = subject
            self._by_subject.setdefault(subject, []).append(key_id)

    def forget(self, subject: str) -> int:
        if self._read_only:
            raise StoreReadOnly("memory://")
        with self._lock:
            ids = self._by_subject.pop(subject, [])
            for key_id in ids:
                del self._material[key_id]
                del self._subject_of[key_id]
            return len(ids)
