"""Every error eventfold raises, under one root.

::

    EventfoldError
    ├── InvalidInput (also a ValueError): the caller passed something the store refuses
    │   ├── InvalidStreamId          empty, too long, or with control characters
    │   ├── InvalidExpectedVersion   negative, or not an int / ANY / NO_STREAM / STREAM_EXISTS
    │   ├── InvalidPosition          a position string that does not parse
    │   ├── InvalidEvent             not an Event, a mapping without a type, an empty append
    │   ├── EncodingError            a payload or metadata msgspec cannot encode
    │   │   └── SchemaViolation      a payload that does not match its type's schema
    │   ├── EventTooLarge            an encoded event over the store's size limit
    │   ├── UnknownDestination       an outbox message for a destination not declared
    │   └── InvalidProjection        a bad projection name, version, handler or dependency
    ├── ConcurrencyError: the stream moved under the caller
    │   ├── WrongExpectedVersion     the stream is not at the version the caller expected
    │   ├── DuplicateEventId         an event id already in the stream with other content,
    │   │                            or given twice in one append
    │   ├── StreamReplaced           an append to a stream a transformation replaced
    │   ├── TransformConflict        a stream moved while it was being transformed
    │   └── RetriesExhausted         a command still conflicted after its last retry
    ├── NondeterministicEvolve       two folds of one stream disagree: evolve is not pure
    ├── EventTypeError               two classes claim one stable event type name
    ├── DecodeError                  a stored payload does not decode into its registered type
    │   ├── UndecodableEvent         one stored event's payload does not decode (names where)
    │   ├── MissingUpcaster          no upcaster chain from the stored version to the code's
    │   └── UpcastFailed             an upcaster raised or returned something else
    ├── IncompatibleSchema           the code cannot read what the store's registry holds
    ├── ProjectionError: a projection cannot do what was asked
    │   ├── StaleRead                a read that demanded freshness timed out
    │   ├── CheckpointConflict       another worker moved the checkpoint (this one is fenced)
    │   ├── HandlerFailed            a handler raised on one event (the poison-event error)
    │   └── ProjectionStopped        a projection stopped on a poison event
    ├── RelayError: the relay cannot deliver to its bus
    │   ├── SinkRejected             the bus refused one message (retrying will not help)
    │   └── SinkUnavailable          the bus cannot be reached or did not answer in time
    └── StoreError: the store itself cannot do what was asked
        ├── ConfigurationError       a URL or option the store cannot use
        │   └── UnsupportedCapability  the backend does not declare a capability asked of it
        ├── StoreUnavailable         the database cannot be reached (names host and port)
        ├── SchemaTooNew             the database was migrated by a newer eventfold
        ├── StoreClosed              the store was used before open() or after close()
        ├── StoreNotFound            read_only: no eventfold store at that file or schema
        └── StoreReadOnly            a write to a store opened with read_only=True

Errors carry their data as attributes; their message says what to do. Mapping errors to
exit codes or HTTP statuses belongs to the CLI and the console only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._events import RecordedEvent
    from ._position import Position

__all__ = [
    "CheckpointConflict",
    "ConcurrencyError",
    "ConfigurationError",
    "DecodeError",
    "DuplicateEventId",
    "EncodingError",
    "EventTooLarge",
    "EventTypeError",
    "EventfoldError",
    "HandlerFailed",
    "IncompatibleSchema",
    "InvalidEvent",
    "InvalidExpectedVersion",
    "InvalidInput",
    "InvalidPosition",
    "InvalidProjection",
    "InvalidStreamId",
    "MissingUpcaster",
    "NondeterministicEvolve",
    "ProjectionError",
    "ProjectionStopped",
    "RelayError",
    "RetriesExhausted",
    "SchemaTooNew",
    "SchemaViolation",
    "SinkRejected",
    "SinkUnavailable",
    "StaleRead",
    "StoreClosed",
    "StoreError",
    "StoreNotFound",
    "StoreReadOnly",
    "StoreUnavailable",
    "StreamReplaced",
    "TransformConflict",
    "UndecodableEvent",
    "UnknownDestination",
    "UnsupportedCapability",
    "UpcastFailed",
    "WrongExpectedVersion",
]


class EventfoldError(Exception):
    """The root of every error eventfold raises."""


class InvalidInput(EventfoldError, ValueError):
    """The caller passed something the store refuses; nothing was stored."""


class InvalidStreamId(InvalidInput):
    """A stream id that is empty, too long or holds control characters."""

    def __init__(self, stream_id: object, reason: str) -> None:
        self.stream_id = stream_id
        self.reason = reason
        super().__init__(f"invalid stream id {stream_id!r}: {reason}")


class InvalidExpectedVersion(InvalidInput):
    """An expected version that is neither a non-negative int nor a stream-state constant."""

    def __init__(self, expected: object) -> None:
        self.expected = expected
        super().__init__(
            f"invalid expected_version {expected!r}: pass the version you read (an int >= 0, "
            "0 meaning no events yet) or one of eventfold.ANY, eventfold.NO_STREAM, "
            "eventfold.STREAM_EXISTS"
        )


class InvalidPosition(InvalidInput):
    """A position string that does not parse."""

    def __init__(self, text: object, reason: str | None = None) -> None:
        self.text = text
        self.reason = reason
        super().__init__(
            f"invalid position {text!r}: "
            + (
                reason
                or "expected the string form of an eventfold.Position, such as '42' (SQLite, "
                "memory) or '7301:42' (PostgreSQL)"
            )
        )


class InvalidEvent(InvalidInput):
    """An event the store cannot take as given (wrong kind of object, missing type, none)."""


class EncodingError(InvalidInput):
    """A payload or metadata that msgspec cannot encode."""

    def __init__(self, stream_id: str, index: int, event_type: str, cause: str) -> None:
        self.stream_id = stream_id
        self.index = index
        self.event_type = event_type
        super().__init__(
            f"event {index} ({event_type}) for stream {stream_id!r} cannot be encoded: {cause}; "
            "use fields msgspec supports (str, int, float, bool, None, lists, dicts, "
            "datetime, UUID, Decimal, Structs)"
        )


class EventTooLarge(InvalidInput):
    """An encoded event (data plus metadata) over the store's size limit."""

    def __init__(self, stream_id: str, index: int, size: int, limit: int) -> None:
        self.stream_id = stream_id
        self.index = index
        self.size = size
        self.limit = limit
        super().__init__(
            f"event {index} for stream {stream_id!r} is {size} bytes encoded, over the limit of "
            f"{limit} bytes; store large payloads elsewhere and keep a reference in the event, "
            "or raise max_event_size when connecting"
        )


class UnknownDestination(InvalidInput):
    """An outbox message for a destination the store has not declared."""

    def __init__(self, destination: str, declared: frozenset[str]) -> None:
        self.destination = destination
        self.declared = declared
        names = ", ".join(repr(d) for d in sorted(declared)) or "none"
        super().__init__(
            f"outbox destination {destination!r} is not declared on this store (declared: "
            f"{names}); call store.declare_destination({destination!r}) first, or fix the name"
        )


class SchemaViolation(EncodingError):
    """A payload that does not match its type's current schema; nothing was stored.

    ``violations`` lists each problem, each naming its field.
    """

    def __init__(
        self,
        stream_id: str,
        index: int,
        event_type: str,
        schema_version: int,
        violations: Sequence[str],
    ) -> None:
        self.schema_version = schema_version
        self.violations = list(violations)
        message = (
            f"event {index} ({event_type} v{schema_version}) for stream {stream_id!r} does "
            f"not match its schema: {'; '.join(self.violations)}; fix the payload (nothing "
            "was stored)"
        )
        InvalidInput.__init__(self, message)
        self.stream_id = stream_id
        self.index = index
        self.event_type = event_type


class ConcurrencyError(EventfoldError):
    """The stream moved under the caller: read it again and decide again."""


class WrongExpectedVersion(ConcurrencyError):
    """The stream is not at the version the caller expected."""

    def __init__(self, stream_id: str, expected: object, actual: int) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {stream_id!r} is at version {actual}, expected {expected}; "
            "reload the stream and decide again"
        )


class DuplicateEventId(ConcurrencyError):
    """An event id already stored in the stream, but not as an exact retry of this append,
    or (``repeated``) one given to two events of the same append."""

    def __init__(self, stream_id: str, event_id: object, *, repeated: bool = False) -> None:
        self.stream_id = stream_id
        self.event_id = event_id
        self.repeated = repeated
        """True when the id is repeated within one append (nothing was stored)."""
        if repeated:
            message = (
                f"event id {event_id} is given to more than one event of this append to "
                f"stream {stream_id!r}; give each event its own id (nothing was stored)"
            )
        else:
            message = (
                f"event id {event_id} is already in stream {stream_id!r} with other content or "
                "at another place; a retry must resend the same events in the same order, new "
                "events need new ids"
            )
        super().__init__(message)


class StreamReplaced(ConcurrencyError):
    """An append to a stream that a stream transformation replaced by another one.

    Reads of ``stream_id`` follow the alias to ``replaced_by``; writes go there directly.
    """

    def __init__(self, stream_id: str, replaced_by: str) -> None:
        self.stream_id = stream_id
        self.replaced_by = replaced_by
        super().__init__(
            f"stream {stream_id!r} was replaced by {replaced_by!r} (a stream transformation) "
            f"and takes no more events; append to {replaced_by!r} instead"
        )


class TransformConflict(ConcurrencyError):
    """A stream gained events (or was replaced) while a transformation copied it.

    Nothing was switched: readers still see ``stream_id``. Running the transformation
    again resumes where it stopped and copies the new events too, unless ``advice``
    says what to do instead (a conflict a rerun would meet again).
    """

    def __init__(
        self,
        stream_id: str,
        target: str,
        copied: int,
        actual: int,
        reason: str = "",
        advice: str = "",
    ) -> None:
        self.stream_id = stream_id
        self.target = target
        self.copied = copied
        self.actual = actual
        self.advice = advice
        why = reason or (
            f"it gained events while being copied (copied up to version {copied}, it is now "
            f"at version {actual})"
        )
        todo = advice or "run the transformation again (it resumes where it stopped)"
        super().__init__(f"stream {stream_id!r} was not switched to {target!r}: {why}; {todo}")


class RetriesExhausted(ConcurrencyError):
    """A command kept conflicting with concurrent writers until its retries ran out."""

    def __init__(self, stream_id: str, attempts: int, last: WrongExpectedVersion) -> None:
        self.stream_id = stream_id
        self.attempts = attempts
        self.last = last
        super().__init__(
            f"command on stream {stream_id!r} conflicted {attempts} times with concurrent "
            f"writers (last: {last}); retry later, or raise max_retries if the stream is hot"
        )


class NondeterministicEvolve(EventfoldError):
    """Folding one stream twice gave two different states: evolve is not pure."""

    def __init__(self, stream_id: str, version: int, event_type: str) -> None:
        self.stream_id = stream_id
        self.version = version
        self.event_type = event_type
        super().__init__(
            f"two folds of stream {stream_id!r} first differ after the event at version "
            f"{version} ({event_type}): evolve must not read the clock, random numbers or "
            "anything outside its arguments; take time and ids from the command or the event"
        )


class EventTypeError(EventfoldError):
    """Two different classes claim one stable event type name."""


class DecodeError(EventfoldError):
    """A stored payload does not decode into the type registered for it."""

    def __init__(
        self,
        event_type: str,
        schema_version: int,
        cause: str,
        where: str = "",
        *,
        message: str | None = None,
    ) -> None:
        self.event_type = event_type
        self.schema_version = schema_version
        self.where = where
        at = f" at {where}" if where else ""
        super().__init__(
            message
            or f"stored event{at} of type {event_type!r} (schema version {schema_version}) does "
            f"not decode into its registered class: {cause}; give new fields defaults, or "
            "register an upcaster for the old shape"
        )


class UndecodableEvent(DecodeError):
    """One stored event whose payload does not decode into its registered class.

    Every read path raises this for a payload that is not valid JSON, is nested deeper
    than a reader can follow, or does not fit its class (once upcast). ``position`` is
    None only for a fold of one stream, which does not fetch positions; ``field`` is the
    JSON path of the first offending value when msgspec names one (``$.paid_at``);
    ``detail`` is what is wrong with it; ``raw`` is the stored JSON, for repairs.
    """

    def __init__(
        self,
        stream_id: str,
        version: int,
        event_type: str,
        schema_version: int,
        position: Position | None,
        detail: str,
        *,
        field: str | None = None,
        raw: bytes = b"",
    ) -> None:
        self.stream_id = stream_id
        self.version = version
        self.type = event_type
        self.position = position
        self.detail = detail
        self.field = field
        self.raw = raw
        at = f" (position {position})" if position is not None else ""
        what = f"{detail}, in field `{field}`" if field else detail
        message = (
            f"stored event at {stream_id}@{version}{at} of type {event_type!r} (schema version "
            f"{schema_version}) does not decode into its registered class: {what}; stored "
            "events never change: register an upcaster that repairs this shape, or transform "
            f"the stream (`eventfold read {stream_id}` shows the stored JSON)"
        )
        super().__init__(
            event_type, schema_version, what, f"{stream_id}@{version}", message=message
        )


class MissingUpcaster(DecodeError):
    """A stored payload has no chain of upcasters to the code's current version.

    ``step`` is the missing link, ``(type name, from_version)``; ``current`` is the version
    the code expects. A step above ``current`` means the event was written by newer code.
    """

    def __init__(
        self,
        event_type: str,
        schema_version: int,
        step: tuple[str, int],
        current: int,
        where: str = "",
    ) -> None:
        self.step = step
        self.current = current
        at = f" at {where}" if where else ""
        name, version = step
        if version > current:
            message = (
                f"stored event{at} of type {event_type!r} has schema version {schema_version}, "
                f"newer than this code's version {current} of {name!r}; it was written by newer "
                "code: deploy that code here too before reading these events"
            )
        else:
            message = (
                f"stored event{at} of type {event_type!r} (schema version {schema_version}) "
                f"cannot be lifted to version {current}: no upcaster from {name!r} version "
                f"{version}; register one with @registry.upcaster({name!r}, "
                f"from_version={version})"
            )
        super().__init__(event_type, schema_version, message, where, message=message)


class UpcastFailed(DecodeError):
    """An upcaster raised, or returned something other than a dict."""

    def __init__(
        self,
        event_type: str,
        schema_version: int,
        step: tuple[str, int],
        step_name: str,
        cause: str,
        where: str = "",
    ) -> None:
        self.step = step
        at = f" at {where}" if where else ""
        message = (
            f"upcasting stored event{at} of type {event_type!r} (schema version "
            f"{schema_version}) failed in the step from {step[0]!r} version "
            f"{step[1]} ({step_name}): {cause}; upcasters must take and return "
            "a dict and accept every payload stored at their version"
        )
        super().__init__(event_type, schema_version, message, where, message=message)


class IncompatibleSchema(EventfoldError):
    """The code cannot read what the store holds (see `CompatReport.problems`)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            "the code's event types are incompatible with the store's schema registry: "
            + "; ".join(self.problems)
            + "; run `eventfold schema check` for the full report"
        )


class StoreError(EventfoldError):
    """The store cannot do what was asked."""


class ConfigurationError(StoreError):
    """A URL or an option the store cannot use."""


class UnsupportedCapability(ConfigurationError):
    """The store's backend does not declare a capability it was asked for
    (`eventfold.store.ports`)."""

    def __init__(self, backend: str, capability: str, hint: str | None = None) -> None:
        self.backend = backend
        self.capability = capability
        super().__init__(
            f"the {backend} store does not support {capability}; "
            + (hint or "use a backend that declares it (see eventfold.store.ports)")
        )


class StoreUnavailable(StoreError):
    """The database cannot be reached."""

    def __init__(self, backend: str, host: str, port: int | None, cause: str) -> None:
        self.backend = backend
        self.host = host
        self.port = port
        where = f"{host}:{port}" if port is not None else host
        super().__init__(
            f"cannot reach the {backend} database at {where}: {cause}; check that the server "
            "is running and the URL is right"
        )


class SchemaTooNew(StoreError):
    """The database was migrated by a newer eventfold than this one."""

    def __init__(self, found: int, known: int) -> None:
        self.found = found
        self.known = known
        super().__init__(
            f"the store's schema is at migration {found} but this eventfold knows only up to "
            f"{known}; upgrade eventfold before using this database"
        )


class StoreClosed(StoreError):
    """The store was used before ``open()`` or after ``close()``."""

    def __init__(self, detail: Any = None) -> None:
        super().__init__(
            "the store is not open; use `async with store:` or `await store.open()` first"
            + (f" ({detail})" if detail else "")
        )


class StoreNotFound(StoreError):
    """A store opened with ``read_only=True`` where there is none: a missing file or
    schema, or another application's database. Nothing was created or changed."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"no eventfold store at {where}: {reason}")


class StoreReadOnly(StoreError):
    """A write to a store opened with ``read_only=True``."""

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(
            f"the store at {where} was opened read-only and takes no writes; connect "
            "without read_only=True to write"
        )


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


class RelayError(EventfoldError):
    """The relay cannot deliver a message to its bus (`eventfold.relay`)."""


class SinkRejected(RelayError):
    """The bus refused one message: sending it again will fail the same way.

    The relay retries it a few times, then parks its stream (see ``eventfold relay
    parked``); the other streams keep flowing.
    """

    def __init__(self, subject: str, message_id: str, reason: str) -> None:
        self.subject = subject
        self.message_id = message_id
        self.reason = reason
        super().__init__(
            f"the bus rejected message {message_id} on subject {subject!r}: {reason}; fix the "
            "bus's limits or the message, then replay it (eventfold relay replay)"
        )


class SinkUnavailable(RelayError):
    """The bus cannot be reached, or did not acknowledge in time.

    Nothing is lost: the relay waits with backoff and sends again (the message id lets
    the bus drop a copy it already stored).
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(
            f"{reason}; the relay keeps the message and retries with backoff: check that the "
            "bus is running and reachable"
        )
