"""The request and response bodies of the HTTP API, as msgspec types.

They are the one source of the OpenAPI document (`msgspec.json.schema_components`) and of
request decoding, so what the document promises is what the server checks.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from msgspec import Meta

__all__ = [
    "MAX_EVENTS_PER_APPEND",
    "AppendIn",
    "AppendOut",
    "AuditEntry",
    "CheckpointOut",
    "ErrorOut",
    "EventDetail",
    "EventOut",
    "ForgetIn",
    "ForgetOut",
    "LogPage",
    "NewEventIn",
    "ParkedOut",
    "ProgressOut",
    "ProjectionOut",
    "RebuildIn",
    "RebuildOut",
    "ReplayIn",
    "ReplayOut",
    "SchemaRecordOut",
    "SchemaTypeOut",
    "StoredPayload",
    "StreamOut",
    "StreamPage",
    "StreamsPage",
]

MAX_EVENTS_PER_APPEND = 1000
"""The most events one append request may carry (``create_app(max_append_events=...)``
may lower it)."""

TypeName = Annotated[str, Meta(min_length=1, max_length=256)]


class NewEventIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One event to append."""

    type: TypeName
    data: dict[str, Any]
    event_id: uuid.UUID | None = None
    """An id of the caller's: sending the same ids again is a safe retry."""
    metadata: dict[str, Any] | None = None
    correlation_id: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    causation_id: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    schema_version: Annotated[int, Meta(ge=1, le=2**31 - 1)] | None = None


class AppendIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An append: all of ``events`` are stored, or none."""

    events: Annotated[list[NewEventIn], Meta(min_length=1, max_length=MAX_EVENTS_PER_APPEND)]


class AppendOut(msgspec.Struct, kw_only=True):
    """What an append did."""

    stream_id: str
    version: int
    """The stream's version after the append (also the response's ETag)."""
    position: str
    """The global position of the last appended event."""
    retry: bool
    """True when every event was already stored (a retry): nothing new was appended."""


class EventOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One recorded event: its envelope and its data as the code reads it today.

    The optional fields are left out when they say nothing (a page of 1,000 events is a
    quarter smaller without them): ``correlation_id``, ``causation_id`` and
    ``undecodable`` when null, ``stored_type`` and ``stored_schema_version`` unless the
    event was upcast. Read an absent field as null, and an absent stored type and version
    as ``type`` and ``schema_version``.
    """

    event_id: str
    stream_id: str
    version: int
    position: str
    type: str
    schema_version: int
    data: Any
    """The payload after upcasting; null when it does not decode (see ``undecodable``)."""
    metadata: dict[str, Any]
    recorded_at: str
    correlation_id: str | None = None
    """``metadata``'s ``correlation_id``, as text; absent when it has none."""
    causation_id: str | None = None
    """``metadata``'s ``causation_id``, as text; absent when it has none."""
    stored_type: str | None = None
    """The type name the event was stored under, present only when it was upcast
    (absent: ``type``)."""
    stored_schema_version: int | None = None
    """The schema version the event was stored at, present only when it was upcast
    (absent: ``schema_version``)."""
    undecodable: str | None = None
    """Why the stored payload does not decode; absent when it decodes."""
    erased: list[str] | None = None
    """The personal fields (`eventfold.Personal`) of ``data`` whose data subject was
    forgotten: they hold their replacement values, for good. Absent when none are."""


class StoredPayload(msgspec.Struct, kw_only=True):
    """An event's payload as the store's codec writes it."""

    encoding: str
    """``json``: ``json`` holds the value and ``base64`` its bytes."""
    json: Any
    base64: str
    exact: bool
    """True when these are the stored bytes themselves (an undecodable payload), False
    when they are the decoded payload encoded again (equal to the stored bytes for events
    written from their class at the current schema version)."""


class EventDetail(EventOut, kw_only=True):
    """One event with its stored payload."""

    stored: StoredPayload


class StreamPage(msgspec.Struct, kw_only=True):
    """A page of one stream's events."""

    stream_id: str
    version: int
    """The stream's version when the page was read (also the response's ETag)."""
    events: list[EventOut]
    next: str | None
    """The cursor of the next page (pass it as ``cursor``), null at the end."""


class LogPage(msgspec.Struct, kw_only=True):
    """A page of the global log."""

    events: list[EventOut]
    head: str
    """The position of the newest readable event when the page was read."""
    next: str | None
    """The cursor of the next page; at the end of the log, null (follow it live with
    ``/subscribe``)."""


class StreamOut(msgspec.Struct, kw_only=True):
    """One stream in a listing."""

    stream_id: str
    version: int
    replaced_by: str | None = None


class StreamsPage(msgspec.Struct, kw_only=True):
    """A page of the store's streams, by id."""

    streams: list[StreamOut]
    next: str | None


class ErrorOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What is wrong with a request, and what to do."""

    error: str
    """A stable code, e.g. ``invalid_input``, ``wrong_expected_version``."""
    message: str
    field: str | None = None
    """The parameter, header or body field at fault, when one is."""
    expected: str | None = None
    actual_version: int | None = None
    """The stream's version now (a 412), to read again from."""


class CheckpointOut(msgspec.Struct, kw_only=True):
    """One partition of a projection version."""

    partition: int
    position: str
    state: str
    error: str | None = None


class ProjectionOut(msgspec.Struct, kw_only=True):
    """A projection version's status."""

    name: str
    version: int
    active_version: int | None
    state: str
    position: str
    head: str
    lag_events: int
    lag_exact: bool
    lag_seconds: float
    last_error: str | None
    parked: int
    partitions: list[CheckpointOut]


class ParkedOut(msgspec.Struct, kw_only=True):
    """An event a projection set aside after its handler kept failing."""

    position: str
    partition: int
    stream_id: str
    event_id: str
    type: str
    error: str
    attempts: int
    parked_at: str


class ReplayIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Which parked events to replay: the positions, or every one when absent."""

    positions: Annotated[list[str], Meta(max_length=10_000)] | None = None


class ForgetIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A data subject to forget (crypto-shredding), and why."""

    subject: Annotated[str, Meta(min_length=1, max_length=256)]
    reason: Annotated[str, Meta(max_length=1000)] = ""


class ForgetOut(msgspec.Struct, kw_only=True):
    """What forgetting a subject did."""

    subject: str
    keys_deleted: int
    """How many keys the subject had (0: nothing of theirs was sealed, or already
    forgotten)."""
    position: str
    """The global position of the `SubjectForgotten` event recorded for it."""


class ReplayOut(msgspec.Struct, kw_only=True):
    """What a replay did."""

    replayed: list[str]
    failed: list[ParkedOut]


class RebuildIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A rebuild of the projection's definition version beside the live one."""

    restart: bool = False
    """Throw away what an interrupted build of this version wrote."""


class ProgressOut(msgspec.Struct, kw_only=True):
    """One building partition's progress."""

    partition: int
    position: str
    head: str
    done: int
    total: int
    rate: float
    eta: float | None


class RebuildOut(msgspec.Struct, kw_only=True):
    """A rebuild started by this server: running, done or failed."""

    name: str
    version: int
    state: str
    """``running``, ``done`` or ``failed``."""
    started_at: str
    finished_at: str | None = None
    error: str | None = None
    progress: list[ProgressOut]
    status: ProjectionOut | None = None
    """The projection's status once the rebuild is done."""


class SchemaTypeOut(msgspec.Struct, kw_only=True):
    """One type in the schema registry, with its newest version."""

    type: str
    version: int
    records: int
    recorded_at: str


class SchemaRecordOut(msgspec.Struct, kw_only=True):
    """One recorded schema version of a type."""

    type: str
    version: int
    revision: int
    schema: dict[str, Any]
    fingerprint: str
    recorded_at: str
    producer_version: str | None = None


class AuditEntry(msgspec.Struct, kw_only=True):
    """The data of an ``$AdminAction`` event in the ``$audit`` stream."""

    action: str
    target: str
    token: str
    """The first 12 hex digits of the token's hash: which token, never the token."""
    detail: dict[str, Any]
