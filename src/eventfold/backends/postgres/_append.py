"""The append path of `PostgresStore`: the statement an append runs, one append in its
own transaction (with the transaction participants, when there are any), and what an
append that did not land was: a retry of one that committed, a replaced stream, or a
conflict.

An append is one statement and one round trip: a conditional ``UPDATE``/``INSERT`` of its
``streams`` row that inserts its events too (three round trips with transaction hooks).
``UNIQUE (stream_id, version)`` backs the version check; ``UNIQUE (stream_id, event_id)``
makes client retries detectable.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import psycopg

from ..._codec import EncodedEvent
from ..._position import ANY, NO_STREAM, STREAM_EXISTS, ExpectedVersion, Position
from ...errors import StoreError, StreamReplaced, WrongExpectedVersion
from ...store._common import StoredCopy, check_retry, explicit_ids
from ...store.ports import TransactionParticipant
from ...store.protocol import AppendResult
from ._errors import KeyCollision, driver_errors, dropped, recheck, translate
from ._hooks import run_with_participants
from ._schema import EVENT_ID_KEY, Statements

if TYPE_CHECKING:
    from ._batch import Append
    from ._store import PostgresStore

__all__ = ["append_one", "append_statement", "find_retry", "mode_of", "not_appended"]

_APPEND_ATTEMPTS: Final = 3

Rows = list[tuple[Any, ...]]


def mode_of(expected: ExpectedVersion) -> str:
    """Which of the append statements checks ``expected``."""
    if expected is ANY:
        return "any"
    if expected is STREAM_EXISTS:
        return "exists"
    if expected is NO_STREAM or expected == 0:
        return "new"
    return "exact"


def append_statement(
    st: Statements,
    stream_id: str,
    encoded: list[EncodedEvent],
    expected: ExpectedVersion,
    *,
    guarded: bool = False,
) -> tuple[bytes, dict[str, Any]]:
    """The statement that appends ``encoded`` to the stream, and its parameters.

    ``guarded``: one that appends nothing (returns no base) when the stream already
    holds one of the events' ids, rather than failing (for units of work)."""
    mode = mode_of(expected)
    n = expected if mode == "exact" else None
    if len(encoded) == 1:
        (e,) = encoded
        return (st.unit_append_one if guarded else st.append_one)[mode], {
            "sid": stream_id,
            "k": 1,
            "n": n,
            "ids": e.event_id,
            "types": e.type,
            "svs": e.schema_version,
            "datas": e.data,
            "metas": e.metadata,
        }
    return (st.unit_append if guarded else st.append)[mode], {
        "sid": stream_id,
        "k": len(encoded),
        "n": n,
        "ids": [e.event_id for e in encoded],
        "types": [e.type for e in encoded],
        "svs": [e.schema_version for e in encoded],
        "datas": [e.data for e in encoded],
        "metas": [e.metadata for e in encoded],
    }


async def append_one(store: PostgresStore, item: Append) -> AppendResult:
    """One append, in its own transaction (one statement, one round trip; more with
    transaction hooks)."""
    stream_id, encoded, expected, query, params = item
    for _ in range(_APPEND_ATTEMPTS):
        try:
            with driver_errors(store.where, collisions=True):
                participants = store.transaction_hooks.active
                if not participants:
                    rows = await store.fetch_rows(query, params, raw=True)
                else:
                    rows = await _run_participants(store, participants, item)
        except KeyCollision as hit:
            if hit.key != EVENT_ID_KEY:
                actual = (await store.stream_info(stream_id)).version
                conflict = (stream_id, expected, actual)
                raise translate(hit.error, store.where, conflict=conflict) from hit.error
            # An earlier or concurrent append stored one of these ids: a retry?
            retry = await find_retry(store, stream_id, encoded)
            if retry is not None:
                return retry
            continue  # the racer that held the id rolled back: try again
        base, tx, seq = rows[0]
        if base is not None:
            return AppendResult(base + len(encoded), Position(tx, seq))
        return await not_appended(store, item)
    raise StoreError(
        f"append to {stream_id!r} kept colliding with concurrent appends of the same event "
        f"ids {_APPEND_ATTEMPTS} times; retry the append"
    )


async def _run_participants(
    store: PostgresStore, participants: Sequence[TransactionParticipant], item: Append
) -> Rows:
    pool = store.require_pool()
    conn: psycopg.AsyncConnection[Any] | None = None
    try:
        async with pool.connection() as conn:
            return await run_with_participants(store, conn, participants, [item])
    except Exception as exc:
        if dropped(exc, conn):
            await recheck(pool)  # as `fetch_rows` does: replace every dropped one
        raise


async def not_appended(store: PostgresStore, item: Append) -> AppendResult:
    """An append whose stream was not where the caller expected: a retry of one that
    committed (the stream moved on by its events), a replaced stream, or a conflict."""
    stream_id, encoded, expected, _, _ = item
    if explicit_ids(encoded):
        retry = await find_retry(store, stream_id, encoded)
        if retry is not None:
            return retry
    info = await store.stream_info(stream_id)
    if info.replaced_by is not None:
        raise StreamReplaced(stream_id, info.replaced_by)
    raise WrongExpectedVersion(stream_id, expected, info.version)


async def find_retry(
    store: PostgresStore, stream_id: str, encoded: list[EncodedEvent]
) -> AppendResult | None:
    """The result of the append ``encoded`` repeats, if the stream already holds it
    (`check_retry`), or None."""
    ids = [uuid.UUID(bytes=i) for i in explicit_ids(encoded)]
    if not ids:
        return None
    rows = await store.fetch_rows(store.statements.find_ids, (stream_id, ids))
    found: dict[bytes, StoredCopy] = {
        eid: (version, typ, data, Position(tx, seq)) for eid, version, typ, data, tx, seq in rows
    }
    return check_retry(stream_id, encoded, found)
