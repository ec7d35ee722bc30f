"""Blue/green versions: build N+1 beside N, swap the readers' pointer, drop N later.

Every version of a projection writes its own documents, checkpoints and tables. A
version that is not the active one is *building*: it catches up from the start of the
log while readers keep reading the active version, complete if older. When all its
partitions are within the `SwapPolicy` of the head, one transaction points readers at
it and retires the old version, so a reader sees one complete model or the other,
never a half-built one. A retired version's data is dropped after a grace period (so a
reader that looked the pointer up just before the swap still finds its documents).

Only a newer version takes over automatically: during a rolling deploy, old code that
still runs version N never swaps back over N+1 (it stands by as superseded). Going
back is an explicit `activate`, once the code of N+1 no longer runs (a daemon running
N+1 would build it again and swap it back in).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .._position import Position
from ..errors import CheckpointConflict, InvalidInput
from ..store.ports import PartitionState, ReadModelStore, VersionState, now_us
from ..store.protocol import EventStore
from ._definition import ProjectionBase
from ._status import checkpoint_positions, measure_lag

__all__ = [
    "BuildProgress",
    "Mode",
    "SwapPolicy",
    "activate",
    "drop_retired",
    "prepare_version",
    "try_swap",
]


class Mode(enum.StrEnum):
    """What a worker does with its version."""

    BUILDING = "building"
    ACTIVE = "active"
    SUPERSEDED = "superseded"


@dataclass(frozen=True)
class SwapPolicy:
    """How close to the head a building version must be before readers switch to it."""

    max_lag_events: int = 100
    max_lag_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.max_lag_events < 0 or self.max_lag_seconds < 0:
            raise InvalidInput("swap max_lag_events and max_lag_seconds must be >= 0")


@dataclass(frozen=True, slots=True)
class BuildProgress:
    """One building partition's progress, reported after each batch.

    ``done`` and ``total`` count log positions from where this run started to the
    checkpoint and to the head (a close estimate of events on every backend);
    ``rate`` is positions per second and ``eta`` the seconds left at that rate.
    """

    name: str
    version: int
    partition: int
    position: Position
    head: Position
    applied: int
    """Matching events applied by this run."""
    done: int
    total: int
    rate: float
    eta: float | None

    @property
    def fraction(self) -> float:
        """``done / total`` (1.0 when there is nothing to do)."""
        return 1.0 if self.total <= 0 else min(1.0, self.done / self.total)


async def prepare_version(models: ReadModelStore, projection: ProjectionBase) -> Mode:
    """Decide what the definition's version is to do, creating its record (and running
    its setup hook, once, in the same transaction) when it starts building."""
    name, version = projection.name, projection.version
    active = await models.active_version(name)
    if active is not None and active > version:
        return Mode.SUPERSEDED
    if active == version:
        return Mode.ACTIVE
    record = next((r for r in await models.versions(name) if r.version == version), None)
    try:
        if record is None:
            async with models.transaction() as tx:
                await tx.set_version(name, version, VersionState.BUILDING, expected=None)
                await projection.run_setup(tx)
        elif record.state is VersionState.RETIRED:
            async with models.transaction() as tx:
                await tx.set_version(
                    name, version, VersionState.BUILDING, expected=VersionState.RETIRED
                )
    except CheckpointConflict:
        pass  # another partition or process created it first: the same outcome
    return Mode.BUILDING


class _NotNewer(Exception):
    """Rolls a swap back: a newer version became active meanwhile."""


async def try_swap(
    store: EventStore, models: ReadModelStore, projection: ProjectionBase, policy: SwapPolicy
) -> bool:
    """Make the definition's version active if every partition is within ``policy``."""
    name, version = projection.name, projection.version
    rows = await models.checkpoints(name, version)
    if any(r.state is PartitionState.FAILED for r in rows):
        return False
    positions = await checkpoint_positions(models, name, version, projection.partitions)
    lag = await measure_lag(
        store, projection, positions, count_limit=max(policy.max_lag_events + 1, 1000)
    )
    if lag.events > policy.max_lag_events or lag.seconds > policy.max_lag_seconds:
        return False
    try:
        async with models.transaction() as tx:
            record = await tx.get_version(name, version)
            if record is None or record.state is not VersionState.BUILDING:
                return record is not None and record.state is VersionState.ACTIVE
            previous = await tx.activate(name, version)
            if previous is not None and previous > version:
                raise _NotNewer
    except _NotNewer:
        return False
    return True


async def activate(models: ReadModelStore, name: str, version: int) -> int | None:
    """Point readers at ``version`` now (a rollback, or a manual swap); returns the
    previously active version. The version must exist (built or building)."""
    async with models.transaction() as tx:
        record = await tx.get_version(name, version)
        if record is None:
            raise InvalidInput(
                f"projection {name!r} has no version {version}; run it (or rebuild it) first"
            )
        return await tx.activate(name, version)


async def drop_retired(
    models: ReadModelStore, projection: ProjectionBase, *, grace_period: float
) -> list[int]:
    """Drop the data of versions retired at least ``grace_period`` seconds ago; returns
    the versions dropped. Safe to run from many processes at once."""
    now = now_us()
    dropped: list[int] = []
    for record in await models.versions(projection.name):
        if record.state is not VersionState.RETIRED:
            continue
        if now - record.changed_us < grace_period * 1_000_000:
            continue
        async with models.transaction() as tx:
            current = await tx.get_version(projection.name, record.version)
            if current != record:
                continue  # re-activated or rebuilt meanwhile
            await projection.run_drop(tx, record.version)
        dropped.append(record.version)
    return dropped
