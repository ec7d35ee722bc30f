"""The read path's errors, under `eventfold.EventfoldError`.

::

    EventfoldError
    ├── InvalidInput
    │   └── InvalidProjection      a bad name, version, handler or dependency
    └── ProjectionError: a projection cannot do what was asked
        ├── StaleRead              a read that demanded freshness timed out
        ├── CheckpointConflict     another worker moved the checkpoint (this one is fenced)
        ├── HandlerFailed          a handler raised on one event (the poison-event error)
        └── ProjectionStopped      a projection stopped on a poison event

Errors carry their data as attributes; their message says what to do.
"""

from __future__ import annotations

from ..errors import EventfoldError, InvalidInput
from ..events import RecordedEvent
from ..position import Position

__all__ = [
    "CheckpointConflict",
    "HandlerFailed",
    "InvalidProjection",
    "ProjectionError",
    "ProjectionStopped",
    "StaleRead",
]


class InvalidProjection(InvalidInput):
    """A projection definition eventfold cannot run; the message names the field."""


class ProjectionError(EventfoldError):
    """A projection cannot do what was asked."""


class StaleRead(ProjectionError):
    """A read demanded a fresher read model than it got within its timeout."""

    def __init__(
        self,
        name: str,
        version: int | None,
        *,
        wanted: Position | None,
        reached: Position,
        lag_events: int | None,
        max_lag: int | None,
        timeout: float,
    ) -> None:
        self.name = name
        self.version = version
        self.wanted = wanted
        self.reached = reached
        self.lag_events = lag_events
        self.max_lag = max_lag
        self.timeout = timeout
        goals = []
        if wanted is not None:
            goals.append(f"position {wanted}")
        if max_lag is not None:
            goals.append(f"a lag of at most {max_lag} events (it is {lag_events})")
        which = f"projection {name!r}" + (f" v{version}" if version is not None else "")
        super().__init__(
            f"{which} did not reach {' and '.join(goals) or 'freshness'} within {timeout:g} s "
            f"(it is at position {reached}); check that a projection daemon runs it "
            "(eventfold projections), raise the timeout, or read without a freshness bound"
        )


class CheckpointConflict(ProjectionError):
    """A checkpoint (or a version's state) was not where this worker left it.

    Another worker owns the projection; the transaction that found out was rolled back,
    so nothing was applied twice. ``partition`` is None for a version-state conflict.
    """

    def __init__(
        self,
        name: str,
        version: int,
        partition: int | None,
        *,
        expected: object,
        actual: object,
    ) -> None:
        self.name = name
        self.version = version
        self.partition = partition
        self.expected = expected
        self.actual = actual
        what = "state" if partition is None else f"partition {partition} checkpoint"
        super().__init__(
            f"the {what} of projection {name!r} v{version} is "
            f"{'nothing' if actual is None else actual}, expected "
            f"{'nothing' if expected is None else expected}: another worker wrote it, so this "
            "transaction was rolled back; this worker stands by and reads it again"
        )


class HandlerFailed(ProjectionError):
    """A projection's handler raised on one event; ``__cause__`` is the handler's error."""

    def __init__(self, name: str, version: int, event: RecordedEvent, cause: BaseException) -> None:
        self.name = name
        self.version = version
        self.event = event
        self.position = event.position
        self.cause = cause
        super().__init__(
            f"projection {name!r} v{version} failed on {event.type} at position "
            f"{event.position} (stream {event.stream_id!r}, version {event.version}): "
            f"{type(cause).__name__}: {cause}"
        )


class ProjectionStopped(ProjectionError):
    """A projection stopped on a poison event (the ``stop`` policy); ``error`` says which."""

    def __init__(self, name: str, version: int, error: str, advice: str | None = None) -> None:
        self.name = name
        self.version = version
        self.error = error
        super().__init__(
            f"{error}; projection {name!r} v{version} is stopped: "
            + (
                advice
                or "fix the handler and resume it (daemon.resume) or restart the daemon, or "
                "give it the 'park' poison policy to set such events aside"
            )
        )
