"""The async projection daemon: any number of projections, each in partitions.

::

    daemon = ProjectionDaemon(store, models, [order_summary, revenue])
    async with daemon:                      # starts a worker per projection partition
        result = await store.append(...)
        await daemon.wait_for("order_summary", result.position)   # read your write
        print(await daemon.status("order_summary"))

Start the same daemon in many processes against one database: each partition runs in
the process that holds its lease, the others stand by and take over when it goes away.
A version that is not yet active builds beside the active one and swaps in when caught
up (see `bluegreen`); retired versions are dropped after the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from types import TracebackType
from typing import Self

from .._cancel import cancel_and_wait
from .._position import Position
from ..errors import InvalidProjection, ProjectionStopped, StaleRead
from ..store.ports import ParkedEvent, ReadModelStore
from ..store.protocol import EventStore
from ._bluegreen import drop_retired
from ._definition import ProjectionBase
from ._leases import Leases, MemoryLeases
from ._parked import ReplayResult, replay_parked
from ._status import (
    ProjectionStatus,
    checkpoint_positions,
    projection_status,
    projection_statuses,
    wait_for,
)
from ._subscription import Notifier, Signal
from ._wakeups import notifier_for
from ._worker import Context, DaemonOptions, PartitionWorker, WorkerInfo, WorkerState

__all__ = ["ProjectionDaemon", "check_projections", "check_unique_names"]

log = logging.getLogger("eventfold.projections")


def check_unique_names(projections: Sequence[ProjectionBase]) -> dict[str, ProjectionBase]:
    """The projections by name; `InvalidProjection` for anything else or a repeated name
    (two definitions would share one read model and one checkpoint)."""
    by_name: dict[str, ProjectionBase] = {}
    for p in projections:
        if not isinstance(p, ProjectionBase):
            raise InvalidProjection(f"{p!r} is not a Projection or DocumentProjection")
        if p.name in by_name:
            raise InvalidProjection(f"two projections are named {p.name!r}; names must be unique")
        by_name[p.name] = p
    return by_name


def check_projections(projections: Sequence[ProjectionBase]) -> dict[str, ProjectionBase]:
    """Validate a set of projections to run together: unique names, handlers, and
    dependencies that are present and acyclic. Returns them by name."""
    by_name = check_unique_names(projections)
    for p in projections:
        p.check_runnable()
    for p in projections:
        missing = [d for d in p.depends_on if d not in by_name]
        if missing:
            raise InvalidProjection(
                f"projection {p.name!r} depends on {missing}, which this daemon does not run; "
                "run them together"
            )
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            cycle = " -> ".join((*path[path.index(name) :], name))
            raise InvalidProjection(f"projections depend on each other in a cycle: {cycle}")
        if name in done:
            return
        for dep in by_name[name].depends_on:
            visit(dep, (*path, name))
        done.add(name)

    for name in by_name:
        visit(name, ())
    return by_name


class ProjectionDaemon:
    """Runs projections asynchronously: tails the log, applies batches exactly once.

    ``leases`` decide ownership across processes (default: in-process only;
    `PostgresLeases` across machines); ``notifier`` wakes workers at the tail early
    (default: the store's own wake-ups, `notifier_for`; `Polling` for none); ``owner``
    names this process in leases (default: host, pid and a random suffix).
    """

    def __init__(
        self,
        store: EventStore,
        models: ReadModelStore,
        projections: Sequence[ProjectionBase],
        *,
        options: DaemonOptions | None = None,
        leases: Leases | None = None,
        notifier: Notifier | None = None,
        owner: str | None = None,
    ) -> None:
        self.store = store
        self.models = models
        self.projections = check_projections(projections)
        self.options = options or DaemonOptions()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.committed = Signal()
        """Notified after every committed batch (``wait_for`` in this process uses it)."""
        self._wakeups = notifier_for(store)
        self._ctx = Context(
            store=store,
            models=models,
            projections=self.projections,
            options=self.options,
            leases=leases or MemoryLeases(),
            notifier=notifier or self._wakeups,
            committed=self.committed.notify,
            owner=self.owner,
        )
        self._workers: dict[str, list[PartitionWorker]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether `start` ran and `stop` has not."""
        return bool(self._tasks)

    async def start(self) -> None:
        """Start a worker per projection partition, and the janitor."""
        if self._tasks:
            return
        for p in self.projections.values():
            workers = [PartitionWorker(self._ctx, p, k) for k in range(p.partitions)]
            self._workers[p.name] = workers
            for w in workers:
                self._tasks.append(asyncio.create_task(w.run(), name=f"eventfold:{w.key}"))
        self._tasks.append(asyncio.create_task(self._janitor(), name="eventfold:janitor"))

    async def stop(self) -> list[str]:
        """Cancel every worker; a batch in flight is rolled back, never half-applied.

        Returns within about ``options.stop_timeout`` seconds whatever the workers wait
        on; the names of the tasks that had not stopped by then are logged and returned
        (their transactions commit whole or not at all, so leaving them is safe).
        """
        tasks, self._tasks = self._tasks, []
        timeout = self.options.stop_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        stuck = await cancel_and_wait(tasks, timeout=timeout)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("projection worker ended with %r", task.exception())
        stuck += await self._wakeups.close(timeout=max(deadline - loop.time(), 0.1))
        if stuck:
            log.error(
                "the projection daemon did not stop within %g s: %s kept running "
                "(a handler that blocks, or a database that does not answer?)",
                timeout,
                ", ".join(stuck),
            )
        return stuck

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _janitor(self) -> None:
        while True:
            for p in self.projections.values():
                try:
                    dropped = await drop_retired(
                        self.models, p, grace_period=self.options.grace_period
                    )
                except Exception as exc:
                    log.error("dropping retired versions of %s failed: %r", p.name, exc)
                else:
                    for version in dropped:
                        log.info("dropped retired %s v%d", p.name, version)
            await asyncio.sleep(self.options.janitor_interval)

    # -- reading the state -------------------------------------------------------------

    def projection(self, name: str) -> ProjectionBase:
        """The definition run under ``name``."""
        try:
            return self.projections[name]
        except KeyError:
            raise InvalidProjection(
                f"this daemon runs no projection {name!r}; it runs {sorted(self.projections)}"
            ) from None

    def workers(self, name: str | None = None) -> list[WorkerInfo]:
        """What this process's workers are doing (of one projection, or all)."""
        return [
            w.info()
            for n, workers in self._workers.items()
            if name is None or n == name
            for w in workers
        ]

    async def status(self, name: str, *, count_limit: int = 10_000) -> ProjectionStatus:
        """The stored status and lag of the definition's version of ``name``; an error a
        local worker is retrying (a store outage) shows as ``last_error`` too."""
        status = await projection_status(
            self.store, self.models, self.projection(name), count_limit=count_limit
        )
        return self._with_local_error(status)

    def _with_local_error(self, status: ProjectionStatus) -> ProjectionStatus:
        if status.last_error is None:
            local = next((w.error for w in self.workers(status.name) if w.error), None)
            if local is not None:
                status = dataclasses.replace(status, last_error=local)
        return status

    async def statuses(self) -> list[ProjectionStatus]:
        """The status of every projection, by name (their rows read at once)."""
        ordered = [self.projection(name) for name in sorted(self.projections)]
        found = await projection_statuses(self.store, self.models, ordered)
        return [self._with_local_error(status) for status in found]

    async def wait_for(
        self,
        name: str,
        position: Position | str | None = None,
        *,
        max_lag: int | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - StaleRead reports it
        version: int | None = None,
    ) -> Position:
        """Wait until the version readers read of ``name`` reached ``position`` (and is
        at most ``max_lag`` events behind); raise `StaleRead` after ``timeout`` s."""
        return await wait_for(
            self.models,
            self.projection(name),
            position,
            store=self.store,
            max_lag=max_lag,
            timeout=timeout,
            version=version,
            wake=self.committed.subscribe(),
        )

    async def catch_up(
        self,
        until: Position | str | None = None,
        *,
        timeout: float = 60.0,  # noqa: ASYNC109 - StaleRead reports it
    ) -> Position:
        """Wait until every projection this process can run has reached ``until``
        (default: the head as it is now) and swapped in, if it was building; returns
        that position.

        On PostgreSQL the head lags a commit while older transactions anywhere in the
        cluster still run; pass the position of your own append as ``until`` to wait
        for it. Raises `ProjectionStopped` for a stopped projection and `StaleRead`
        after ``timeout`` seconds.
        """
        head = await self.store.head() if until is None else Position.parse(until)
        wake = self.committed.subscribe()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pending = dict(self.projections)
        while pending:
            for name, p in list(pending.items()):
                infos = self.workers(name)
                failed = [i for i in infos if i.state is WorkerState.FAILED]
                if failed:
                    error = failed[0].error or f"projection {p.name!r} v{p.version} failed"
                    raise ProjectionStopped(p.name, p.version, error)
                if infos and all(i.state is WorkerState.SUPERSEDED for i in infos):
                    del pending[name]
                    continue
                positions = await checkpoint_positions(self.models, p.name, p.version, p.partitions)
                # A building version swaps in right after its last batch: wait for that too.
                active = await self.models.active_version(p.name)
                if min(positions) >= head and active is not None and active >= p.version:
                    del pending[name]
            remaining = deadline - loop.time()
            if pending and remaining <= 0:
                p = next(iter(pending.values()))
                positions = await checkpoint_positions(self.models, p.name, p.version, p.partitions)
                raise StaleRead(
                    p.name,
                    p.version,
                    wanted=head,
                    reached=min(positions),
                    lag_events=None,
                    max_lag=None,
                    timeout=timeout,
                )
            if pending:
                await wake.wait(min(0.05, remaining))
        return head

    # -- failures and parked events ----------------------------------------------------

    def resume(self, name: str) -> None:
        """Let ``name``'s partitions that stopped on a poison event try again."""
        self.projection(name)
        for w in self._workers.get(name, []):
            w.resume()

    async def parked(self, name: str) -> list[ParkedEvent]:
        """The parked events of the definition's version of ``name``, in log order."""
        p = self.projection(name)
        return await self.models.parked(p.name, p.version)

    async def replay_parked(
        self, name: str, positions: Collection[Position] | None = None
    ) -> ReplayResult:
        """Apply parked events again (all, or those at ``positions``), each between two
        batches of its partition's worker."""
        p = self.projection(name)
        workers = {w.partition: w for w in self._workers.get(name, [])}

        @contextlib.asynccontextmanager
        async def guard(partition: int) -> AsyncIterator[object]:
            worker = workers.get(partition)
            if worker is None:
                yield None
                return
            async with worker.lock:
                yield None

        return await replay_parked(self.store, self.models, p, positions=positions, guard=guard)
