"""Inline projections: read models written inside the append's own transaction.

::

    await attach_inline(store, [summary])
    await store.append("order-1", [OrderPlaced(...)], expected_version=NO_STREAM)
    # the summary document of order-1 is already there, committed with the event

When the append returns, the projection has applied its events; if a handler raises,
that append fails with `HandlerFailed` and nothing of it is stored (the other appends
of the same group commit). Works on SQLite and PostgreSQL stores.

On SQLite the handlers run on the writer connection inside the group's transaction, so
they must be quick and do no I/O of their own: a handler may only await its transaction
(``tx.get``/``put``/``delete``/``execute``/``write``); anything else is refused with
`InvalidProjection`. `DocumentProjection` evolvers are pure functions, which is exactly
what fits. On PostgreSQL they run in the append's transaction on its pooled connection
(`eventfold.backends.postgres`); every process that appends must attach the
same inline projections, right after opening the store.

`attach_inline` registers the projections as one of the store's transaction participants
(`eventfold.store.TransactionHooks`, named `INLINE_PARTICIPANT`, running first). Adding
it folds the events already in the log into the projection (from its checkpoint), with
appends held back meanwhile, then installs it: no append can fall between the catch-up
and the first inline one. The projection's version is made the one
readers read, and its checkpoint moves with every group, so `wait_for`, lag and
`DocumentView` work as for an async projection. The checkpoint is marked ``inline``
(`PartitionState.INLINE`): status shows the projection as inline, and a daemon given it
stops it with a clear error instead of applying its events a second time.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import InvalidProjection, UnsupportedCapability
from ..store import backend_of
from ..store.ports import INLINE_PARTICIPANT, SupportsTransactionHooks, capability
from ..store.protocol import EventStore
from ._definition import ProjectionBase

__all__ = ["INLINE_PARTICIPANT", "attach_inline", "detach_inline"]

_NO_HOOKS = (
    "inline projections run in the append's transaction, on SQLite and PostgreSQL: run "
    "the projection in a ProjectionDaemon and read with wait_for(position) instead"
)


async def attach_inline(store: EventStore, projections: Sequence[ProjectionBase]) -> None:
    """Run ``projections`` inline in every later append to ``store`` (a SQLite or
    PostgreSQL store).

    Folds the log's earlier events in first (see the module docstring). Attaching again
    replaces the set.
    """
    hooks = capability(store, SupportsTransactionHooks, hint=_NO_HOOKS).transaction_hooks
    for p in projections:
        if p.partitions != 1:
            raise InvalidProjection(
                f"inline projection {p.name!r} has {p.partitions} partitions; an inline "
                "projection has one (it runs in the append itself)"
            )
        if p.depends_on:
            raise InvalidProjection(
                f"inline projection {p.name!r} depends on {list(p.depends_on)}; inline "
                "projections cannot wait for others"
            )
    backend = backend_of(store)
    if backend is None or backend.inline is None:
        raise UnsupportedCapability(store.backend, "inline projections", _NO_HOOKS)
    participant = await backend.inline(store, projections)
    await hooks.add(participant)


async def detach_inline(store: EventStore) -> None:
    """Stop running inline projections in ``store``'s appends."""
    if isinstance(store, SupportsTransactionHooks):
        await store.transaction_hooks.remove(INLINE_PARTICIPANT)
