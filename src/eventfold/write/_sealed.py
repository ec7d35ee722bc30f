"""Snapshots of states that folded personal fields, sealed for their data subjects.

A state folded from events with personal fields (`eventfold.Personal`) holds their plain
values. Its snapshot is sealed with the store codec's `Protector` so that opening it needs
the current key of every subject it holds: forgetting any of them makes the snapshot
unusable, and the next load folds from the events (which then read replacement values)
and replaces it. The stored ``data`` is::

    MARKER | header length (4 bytes, big-endian) | header | sealed state

The header (JSON ``[[subject, key id], ...]``, sorted) tells a load which keys it needs
and which subjects the state holds; it is bound to the ciphertext with the stream id,
state type, version and state schema version as associated data. A plain snapshot's data
is JSON, which never starts with the marker's NUL byte.
"""

from __future__ import annotations

from collections.abc import Collection

import msgspec

from .._personal import Protector, b64decode, b64encode
from ..store.ports import Snapshot

__all__ = ["MARKER", "SealedStateUnusable", "is_sealed", "open_state", "seal_state"]

MARKER = b"\x00eventfold-sealed-state:1\n"
_LENGTH = 4


class SealedStateUnusable(Exception):
    """A sealed snapshot that cannot be opened; ``forgotten`` when a subject's key is gone
    (else it is malformed or does not authenticate)."""

    def __init__(self, reason: str, *, forgotten: bool = False) -> None:
        super().__init__(reason)
        self.forgotten = forgotten


def is_sealed(data: bytes) -> bool:
    """Whether a snapshot's data is a sealed state."""
    return data[:1] == b"\x00" and data.startswith(MARKER)


def _aad(
    stream_id: str, state_type: str, version: int, schema_version: int, header: bytes
) -> bytes:
    return msgspec.json.encode([stream_id, state_type, version, schema_version]) + header


def seal_state(
    protector: Protector,
    subjects: Collection[str],
    stream_id: str,
    state_type: str,
    version: int,
    schema_version: int,
    plain: bytes,
) -> bytes | None:
    """``plain`` (an encoded state) sealed for the current keys of ``subjects`` (the
    subjects whose values the state was folded from); None when one of them has no key:
    forgotten since the state was folded (a cached state), which must not be stored. No
    key is ever made here: a forgotten subject must not get a new one."""
    keys = protector.current_keys(sorted(subjects))
    if len(keys) < len(subjects):
        return None
    named = sorted(keys.items())
    header = msgspec.json.encode([[s, b64encode(k)] for s, k in named])
    aad = _aad(stream_id, state_type, version, schema_version, header)
    sealed = protector.seal_with([k for _, k in named], plain, aad)
    return MARKER + len(header).to_bytes(_LENGTH, "big") + header + sealed


def open_state(protector: Protector, snapshot: Snapshot) -> tuple[bytes, frozenset[str]]:
    """The plain state of a sealed snapshot and the subjects it was sealed for; raises
    `SealedStateUnusable` when it cannot be opened."""
    data = snapshot.data
    at = len(MARKER) + _LENGTH
    size = int.from_bytes(data[len(MARKER) : at], "big")
    header = data[at : at + size]
    try:
        named = msgspec.json.decode(header, type=list[tuple[str, str]])
        key_ids = [b64decode(k) for _, k in named]
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise SealedStateUnusable(f"its header does not read ({exc})") from None
    if not named or len(header) != size:
        raise SealedStateUnusable("its header is cut short or names no subject")
    aad = _aad(
        snapshot.stream_id, snapshot.state_type, snapshot.version, snapshot.schema_version, header
    )
    try:
        plain = protector.open_with(key_ids, data[at + size :], aad)
    except ValueError as exc:
        raise SealedStateUnusable(str(exc)) from None
    if plain is None:
        raise SealedStateUnusable("a subject it holds was forgotten", forgotten=True)
    return plain, frozenset(s for s, _ in named)
