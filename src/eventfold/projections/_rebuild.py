"""``rebuild``: build a projection's new version beside the live one, then swap.

What ``eventfold rebuild NAME`` runs. Bump the projection's version, then::

    status = await rebuild(store, models, order_summary_v2, progress=print_progress)

Readers keep reading the active version until the new one is within the swap policy of
the head; the pointer then swaps in one transaction (`bluegreen`). The old version is
dropped by a running daemon's janitor after the grace period. A rebuild that is
interrupted resumes from its checkpoint next time (``restart=True`` starts it over).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence

from ..errors import InvalidProjection, ProjectionStopped, StaleRead
from ..store.ports import ReadModelStore
from ..store.protocol import EventStore
from ._bluegreen import BuildProgress
from ._daemon import ProjectionDaemon
from ._definition import ProjectionBase
from ._leases import Leases
from ._status import ProjectionStatus, checkpoint_positions, projection_status
from ._subscription import Notifier
from ._worker import DaemonOptions, WorkerState

__all__ = ["rebuild"]


async def rebuild(
    store: EventStore,
    models: ReadModelStore,
    projection: ProjectionBase,
    *,
    dependencies: Sequence[ProjectionBase] = (),
    options: DaemonOptions | None = None,
    progress: Callable[[BuildProgress], None] | None = None,
    restart: bool = False,
    timeout: float | None = None,  # noqa: ASYNC109 - StaleRead reports it
    leases: Leases | None = None,
    notifier: Notifier | None = None,
) -> ProjectionStatus:
    """Build ``projection``'s version from the start of the log and make it active.

    ``dependencies`` run alongside (a projection never runs ahead of them); pass the
    application's ``leases`` so that a daemon already running them is not duplicated.
    Raises `ProjectionStopped` if a poison event stops the build (nothing is swapped),
    and `StaleRead` if ``timeout`` seconds pass first.
    """
    name, version = projection.name, projection.version
    active = await models.active_version(name)
    if active == version:
        raise InvalidProjection(
            f"projection {name!r} v{version} is already the active version; bump its version "
            "to rebuild it beside the live one (readers keep the old one until the new one "
            "catches up)"
        )
    if active is not None and active > version:
        raise InvalidProjection(
            f"projection {name!r} v{active} is active, newer than v{version}; to go back, "
            f"activate v{version} explicitly (eventfold.projections.activate)"
        )
    if restart:
        async with models.transaction() as tx:
            await projection.run_drop(tx, version)
    options = options or DaemonOptions()
    if progress is not None:
        options = dataclasses.replace(options, progress=progress)
    daemon = ProjectionDaemon(
        store,
        models,
        [*dependencies, projection],
        options=options,
        leases=leases,
        notifier=notifier,
    )
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    wake = daemon.committed.subscribe()
    async with daemon:
        while await models.active_version(name) != version:
            failed = [w for w in daemon.workers(name) if w.state is WorkerState.FAILED]
            if failed:
                error = failed[0].error or f"projection {name!r} v{version} failed"
                raise ProjectionStopped(name, version, error)
            if deadline is not None and loop.time() >= deadline:
                positions = await checkpoint_positions(models, name, version, projection.partitions)
                raise StaleRead(
                    name,
                    version,
                    wanted=await store.head(),
                    reached=min(positions),
                    lag_events=None,
                    max_lag=None,
                    timeout=timeout or 0.0,
                )
            await wake.wait(0.1)
    return await projection_status(store, models, projection)
