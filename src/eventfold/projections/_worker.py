"""One partition of one projection version: take the lease, then tail, apply, checkpoint.

Each batch is applied and its checkpoint moved in one read-model transaction, the
checkpoint by compare-and-set on where this worker last left it. So a batch delivered
twice (a restart, a replay, a second worker that did not know it lost its lease) is
applied once: the second transaction finds the checkpoint moved and rolls back.

A handler that raises is retried with backoff (`PoisonPolicy`); then the events before
the poison event are committed on their own and the poison event either stops the
partition (state failed, with the error) or is parked in the dead-letter list while the
checkpoint moves past it. Store errors are never poison: they are retried until the
store answers.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .._events import RecordedEvent
from .._position import START, Position
from .._tracing import process_span
from ..errors import CheckpointConflict, HandlerFailed, InvalidInput, ProjectionStopped
from ..store.ports import ParkedEvent, PartitionState, ReadModelStore, now_us
from ..store.protocol import EventStore
from ._bluegreen import BuildProgress, Mode, SwapPolicy, prepare_version, try_swap
from ._definition import PoisonPolicy, ProjectionBase
from ._leases import Lease, Leases, lease_key
from ._status import checkpoint_positions
from ._subscription import DEFAULT_BATCH_SIZE, DEFAULT_POLL_INTERVAL, Batch, Notifier, Subscription
from ._undecodable import Undecodable

__all__ = ["DaemonOptions", "PartitionWorker", "WorkerInfo", "WorkerState"]

log = logging.getLogger("eventfold.projections")


@dataclass(frozen=True)
class DaemonOptions:
    """How a projection daemon runs its projections."""

    batch_size: int = DEFAULT_BATCH_SIZE
    """Most events applied in one read-model transaction."""
    poll_interval: float = DEFAULT_POLL_INTERVAL
    """Seconds between polls at the tail when no wake-up comes."""
    poison: PoisonPolicy = field(default_factory=PoisonPolicy)
    """The default poison policy (a projection may set its own)."""
    swap: SwapPolicy = field(default_factory=SwapPolicy)
    grace_period: float = 600.0
    """Seconds a retired version's data is kept after the swap."""
    lease_retry: float = 1.0
    """Seconds between attempts to take a lease another worker holds."""
    max_error_backoff: float = 30.0
    """Longest wait between retries while the store is failing."""
    janitor_interval: float = 60.0
    """Seconds between sweeps that drop retired versions past their grace period."""
    progress: Callable[[BuildProgress], None] | None = None
    """Called after each batch of a building version (a CLI renders it)."""
    stop_timeout: float = 5.0
    """Seconds `ProjectionDaemon.stop` waits for its workers before it gives up on them
    (and logs which did not stop)."""

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise InvalidInput(f"batch_size must be an int >= 1, got {self.batch_size!r}")
        for name in ("poll_interval", "lease_retry", "janitor_interval", "stop_timeout"):
            if getattr(self, name) <= 0:
                raise InvalidInput(f"{name} must be > 0 seconds")
        if self.grace_period < 0 or self.max_error_backoff < 0:
            raise InvalidInput("grace_period and max_error_backoff must be >= 0 seconds")


class WorkerState(enum.StrEnum):
    """What a local worker is doing right now."""

    STARTING = "starting"
    STANDBY = "standby"
    """Another worker holds the lease."""
    BUILDING = "building"
    ACTIVE = "active"
    RETRYING = "retrying"
    """A handler or the store failed; retrying with backoff."""
    FAILED = "failed"
    """Stopped on a poison event until resumed."""
    SUPERSEDED = "superseded"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A snapshot of one local worker."""

    name: str
    version: int
    partition: int
    state: WorkerState
    position: Position
    error: str | None


@dataclass
class Context:
    """What every worker of one daemon shares."""

    store: EventStore
    models: ReadModelStore
    projections: Mapping[str, ProjectionBase]
    options: DaemonOptions
    leases: Leases
    notifier: Notifier
    committed: Callable[[], None]
    owner: str


class _LeaseLost(Exception):
    """The lease went away between batches."""


class PartitionWorker:
    """Runs one partition of one projection version for as long as its task lives."""

    def __init__(self, ctx: Context, projection: ProjectionBase, partition: int) -> None:
        self.ctx = ctx
        self.projection = projection
        self.partition = partition
        self.key = lease_key(projection.name, projection.version, partition, projection.partitions)
        self.state = WorkerState.STARTING
        self.error: str | None = None
        self.position = START
        self.lock = asyncio.Lock()
        """Held while a batch is applied (a parked-event replay takes it too)."""
        self._resume = asyncio.Event()

    def info(self) -> WorkerInfo:
        """What the worker is doing now."""
        p = self.projection
        return WorkerInfo(p.name, p.version, self.partition, self.state, self.position, self.error)

    def resume(self) -> None:
        """Let a worker stopped on a poison event try again."""
        if self.state is WorkerState.FAILED:
            self.state = WorkerState.STARTING
        self._resume.set()

    @property
    def policy(self) -> PoisonPolicy:
        return self.projection.poison or self.ctx.options.poison

    async def run(self) -> None:
        """Take the lease, run, and on losing it stand by; until cancelled."""
        options = self.ctx.options
        failures = 0
        try:
            while True:
                lease = await self.ctx.leases.acquire(self.key, self.ctx.owner)
                if lease is None:
                    self.state = WorkerState.STANDBY
                    await asyncio.sleep(options.lease_retry)
                    continue
                delay = 0.0
                try:
                    await self._own(lease)
                    delay = options.lease_retry
                    failures = 0
                except (CheckpointConflict, _LeaseLost) as exc:
                    self.state, self.error = WorkerState.STANDBY, str(exc)
                    log.warning("%s: fenced, standing by: %s", self.key, exc)
                    delay = options.lease_retry
                except Exception as exc:
                    failures += 1
                    self.state, self.error = WorkerState.RETRYING, f"{type(exc).__name__}: {exc}"
                    log.error("%s: %s; retrying", self.key, self.error, exc_info=exc)
                    delay = min(0.1 * 2 ** min(failures, 20), options.max_error_backoff)
                finally:
                    await lease.release()
                await asyncio.sleep(delay)
        finally:
            self.state = WorkerState.STOPPED

    async def _own(self, lease: Lease) -> None:
        while True:
            try:
                await self._follow(lease)
                return
            except ProjectionStopped as exc:
                self.state, self.error = WorkerState.FAILED, exc.error
                # Not str(exc): its advice names library calls; callers give their own.
                log.error("%s: stopped on a poison event: %s", self.key, exc.error)
                self._resume.clear()
                await self._resume.wait()

    async def _follow(self, lease: Lease) -> None:
        ctx, p, k = self.ctx, self.projection, self.partition
        mode = await prepare_version(ctx.models, p)
        if mode is Mode.SUPERSEDED:
            self.state = WorkerState.SUPERSEDED
            await asyncio.sleep(ctx.options.lease_retry * 10)
            return
        self.state = WorkerState.BUILDING if mode is Mode.BUILDING else WorkerState.ACTIVE
        rows = await ctx.models.checkpoints(p.name, p.version)
        if any(c.state is PartitionState.INLINE for c in rows):
            raise ProjectionStopped(
                p.name,
                p.version,
                "it runs inline (attach_inline applies it in every append)",
                "a daemon must not apply it again; leave it out of the daemon's projections",
            )
        row = next((c for c in rows if c.partition == k), None)
        checkpoint = None if row is None else row.position
        self.position = checkpoint or START
        subscription = Subscription(
            ctx.store,
            after=self.position,
            types=p.event_types,
            categories=p.categories,
            partition=(k, p.partitions) if p.partitions > 1 else None,
            batch_size=ctx.options.batch_size,
            poll_interval=ctx.options.poll_interval,
            wake=ctx.notifier.subscribe(),
            ceiling=self._ceiling if p.depends_on else None,
        )
        started, start, applied = asyncio.get_running_loop().time(), self.position, 0
        async for batch in subscription:
            if not lease.held():
                raise _LeaseLost(f"lease {self.key} was lost")
            async with self.lock:
                if batch.undecodable is None:
                    checkpoint = await self._apply(batch, checkpoint)
                else:
                    checkpoint = await self._apply_undecodable(batch, batch.undecodable, checkpoint)
            self.position = batch.through
            if self.state is WorkerState.RETRYING:
                self.state = WorkerState.BUILDING if mode is Mode.BUILDING else WorkerState.ACTIVE
            self.error = None
            applied += len(batch.events)
            ctx.committed()
            if mode is Mode.BUILDING:
                await self._report(started, start, applied)
                if batch.tail and await try_swap(ctx.store, ctx.models, p, ctx.options.swap):
                    mode, self.state = Mode.ACTIVE, WorkerState.ACTIVE
                    log.info("%s: swapped in v%d for readers", p.name, p.version)
            elif batch.tail:
                active = await ctx.models.active_version(p.name)
                if active is not None and active > p.version:
                    self.state = WorkerState.SUPERSEDED
                    return

    async def _ceiling(self) -> Position:
        """The lowest checkpoint of the projections this one depends on."""
        lowest: Position | None = None
        for name in self.projection.depends_on:
            dep = self.ctx.projections[name]
            low = min(
                await checkpoint_positions(self.ctx.models, dep.name, dep.version, dep.partitions)
            )
            lowest = low if lowest is None else min(lowest, low)
        return lowest or START

    async def _report(self, started: float, start: Position, applied: int) -> None:
        report = self.ctx.options.progress
        if report is None:
            return
        head = await self.ctx.store.head()
        elapsed = max(asyncio.get_running_loop().time() - started, 1e-9)
        done = max(self.position.seq - start.seq, 0)
        total = max(head.seq - start.seq, done)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 else None
        p = self.projection
        report(
            BuildProgress(
                p.name,
                p.version,
                self.partition,
                self.position,
                head,
                applied,
                done,
                total,
                rate,
                eta,
            )
        )

    # -- applying ----------------------------------------------------------------------

    async def _apply(self, batch: Batch, checkpoint: Position | None) -> Position:
        """Apply a batch and move the checkpoint to its end; handle poison events."""
        events = batch.events
        policy = self.policy
        attempt = 0
        while True:
            try:
                await self._commit(events, batch.through, checkpoint)
                return batch.through
            except HandlerFailed as failure:
                attempt += 1
                if attempt <= policy.retries:
                    self.state, self.error = WorkerState.RETRYING, str(failure)
                    await asyncio.sleep(policy.delay(attempt))
                    continue
                at = next(i for i, e in enumerate(events) if e.position == failure.position)
                if at > 0:
                    prefix = events[:at]
                    checkpoint = await self._apply(
                        Batch(prefix, prefix[-1].position, tail=False), checkpoint
                    )
                if policy.action == "stop":
                    await self._record_failure(str(failure))
                    stopped = ProjectionStopped(failure.name, failure.version, str(failure))
                    raise stopped from failure
                event = failure.event
                checkpoint = await self._park(
                    event.position,
                    event.stream_id,
                    str(event.event_id),
                    event.type,
                    str(failure),
                    attempt,
                    checkpoint,
                )
                events, attempt = events[at + 1 :], 0

    async def _apply_undecodable(
        self, batch: Batch, bad: Undecodable, checkpoint: Position | None
    ) -> Position:
        """Apply the events before an event that does not decode, then treat that one as
        a poison event. Decoding is not retried: it fails the same way every time."""
        if batch.events:
            prefix = Batch(batch.events, batch.events[-1].position, tail=False)
            checkpoint = await self._apply(prefix, checkpoint)
        p = self.projection
        error = (
            f"projection {p.name!r} v{p.version} cannot read the {bad.type} event at position "
            f"{bad.position}: {bad.error}"
        )
        if self.policy.action == "stop":
            await self._record_failure(error)
            raise ProjectionStopped(p.name, p.version, error) from bad.error
        # No event id: it lives in the payload's row, which this process cannot decode.
        return await self._park(bad.position, bad.stream_id, "", bad.type, error, 1, checkpoint)

    async def _commit(
        self, events: list[RecordedEvent], through: Position, checkpoint: Position | None
    ) -> None:
        if not events and through == checkpoint:
            return
        p = self.projection
        if not events:
            async with self.ctx.models.transaction() as tx:
                await tx.set_checkpoint(
                    p.name, p.version, self.partition, through, expected=checkpoint
                )
            return
        carriers = (e.metadata for e in events if e.raw_metadata != b"{}")
        with process_span(f"process {p.name}", carriers, _span_attributes(p, len(events))):
            async with self.ctx.models.transaction() as tx:
                await p.apply(events, tx)
                await tx.set_checkpoint(
                    p.name, p.version, self.partition, through, expected=checkpoint
                )

    async def _park(
        self,
        position: Position,
        stream_id: str,
        event_id: str,
        type: str,
        error: str,
        attempts: int,
        checkpoint: Position | None,
    ) -> Position:
        p = self.projection
        parked = ParkedEvent(
            name=p.name,
            version=p.version,
            partition=self.partition,
            position=position,
            stream_id=stream_id,
            event_id=event_id,
            type=type,
            error=error,
            attempts=attempts,
            parked_us=now_us(),
        )
        async with self.ctx.models.transaction() as tx:
            await tx.park(parked)
            await tx.set_checkpoint(
                p.name, p.version, self.partition, position, expected=checkpoint
            )
        log.warning("%s: parked %s at %s: %s", self.key, type, position, error)
        return position

    async def _record_failure(self, error: str) -> None:
        p = self.projection
        async with self.ctx.models.transaction() as tx:
            await tx.set_state(p.name, p.version, self.partition, PartitionState.FAILED, error)


def _span_attributes(p: ProjectionBase, count: int) -> dict[str, str | int]:
    return {
        "messaging.system": "eventfold",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.consumer.group.name": p.name,
        "messaging.batch.message_count": count,
        "eventfold.projection.version": p.version,
    }
