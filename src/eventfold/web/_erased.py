"""Which personal fields of the events a response shows were erased (crypto-shredded).

A forgotten subject's fields read as their replacement values; the API says which ones
they are (``erased``), so an operator sees "erased" and not a real-looking value. Only
events whose stored metadata holds sealed fields are looked at, and a page costs one
lookup of the store's keys, made on a worker thread (the key port is synchronous).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec

from ..privacy import PERSONAL_KEY, erased_in
from ..store import EventStore, SupportsSubjectKeys

__all__ = ["mark_erased"]

_MARK = PERSONAL_KEY.encode()


def _sealed(metadata: Any) -> bytes | dict[str, Any] | None:
    """The stored metadata of one rendered event when it holds sealed fields."""
    if isinstance(metadata, msgspec.Raw):
        raw = bytes(metadata)
        return raw if _MARK in raw else None
    if isinstance(metadata, dict) and PERSONAL_KEY in metadata:
        return metadata
    return None


async def mark_erased(
    store: EventStore, events: Sequence[Any], sealed: Sequence[int] | None = None
) -> None:
    """Set ``erased`` on those of ``events`` (`EventOut` or a page's events) that hold
    personal fields of a forgotten subject. ``sealed``: the indexes of the events whose
    metadata holds sealed fields, when the page's rendering found them (else all are
    looked at)."""
    at: list[int] = []
    metas: list[bytes | dict[str, Any]] = []
    for i in range(len(events)) if sealed is None else sealed:
        meta = _sealed(events[i].metadata)
        if meta is not None:
            at.append(i)
            metas.append(meta)
    if not at or not isinstance(store, SupportsSubjectKeys):
        return
    found = await asyncio.to_thread(erased_in, store, metas)
    for i, fields in zip(at, found, strict=True):
        if fields:
            events[i].erased = list(fields)
