"""What every route shares: the store, the options, authorisation, and the error guard."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from .. import schema
from .._events import NewEvent
from .._position import ANY
from .._undecodable import keep_undecodable
from ..errors import EventfoldError
from ..privacy import Privacy
from ..projections import (
    BuildProgress,
    ProjectionBase,
    ProjectionStatus,
    ReadModelStore,
    StoreWakeUps,
    read_models_for,
)
from ..store import EventStore, SupportsRowReads
from ._auth import Role, Tokens
from ._errors import ApiError, error_response, from_eventfold
from ._types import MAX_EVENTS_PER_APPEND, AuditEntry

__all__ = ["AUDIT_EVENT_TYPE", "AUDIT_STREAM", "Api", "Caller", "Limits", "RebuildJob", "guarded"]

AUDIT_STREAM = "$audit"
"""The stream every admin action is recorded in, before it runs."""
AUDIT_EVENT_TYPE = "$AdminAction"
"""The type of those events; their data is an `AuditEntry`."""

SCHEMA_RELOAD_SECONDS = 10.0
"""How long the schema registry this server checks raw JSON appends against is kept
before it is read again."""


@dataclass(frozen=True, kw_only=True)
class Limits:
    """The bounds a server keeps; a request past one is refused with 400 or 413."""

    max_body_bytes: int = 1 << 20
    """The largest request body (413 above it)."""
    max_page: int = 1000
    """The largest ``limit`` of a page (400 above it)."""
    default_page: int = 100
    """The page size when ``limit`` is not given."""
    max_append_events: int = MAX_EVENTS_PER_APPEND
    """The most events in one append (413 above it)."""
    scan_factor: int = 10
    """A filtered page reads at most ``limit × scan_factor`` events before it returns
    (perhaps fewer matches, with a cursor to go on)."""
    max_subscribers: int = 100
    """Live subscriptions at once (503 above it)."""
    sse_batch: int = 100
    """Events a live subscription reads and holds at once: its buffer's bound."""
    poll_seconds: float = 0.5
    """A live subscription at the tail reads again at least this often: a wake-up is a
    hint, and on PostgreSQL an event may become readable after its wake-up (it waits
    for older transactions to end)."""
    heartbeat_seconds: float = 15.0
    """A quiet live subscription sends a comment this often, so proxies keep it open."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a request: their role and a short id of their token (None: no token)."""

    role: Role | None
    token: str | None


@dataclass
class RebuildJob:
    """A rebuild this server started, and what it reported last."""

    name: str
    version: int
    started_us: int
    task: asyncio.Task[ProjectionStatus] | None = None
    progress: dict[int, BuildProgress] = field(default_factory=dict)
    finished_us: int | None = None
    error: str | None = None
    status: ProjectionStatus | None = None


@dataclass
class Api:
    """The state one app's routes share."""

    store: EventStore
    projections: Sequence[ProjectionBase]
    tokens: Tokens
    limits: Limits
    read_token: bool
    """Whether reads need a token too (by default they do not)."""
    models: ReadModelStore | None = None
    privacy: Privacy | None = None
    """Crypto-shredding on the store, when the app was given it (forgetting subjects)."""
    subscribers: int = 0
    rebuilds: dict[str, RebuildJob] = field(default_factory=dict)
    _wakeups: StoreWakeUps | None = None
    _schemas_at: float = -1e9
    _schema_lock: asyncio.Lock | None = None
    row_reads: SupportsRowReads | None = field(init=False)
    """The store, when it hands out its stored rows (asked once: a runtime Protocol check
    costs tens of microseconds)."""

    def __post_init__(self) -> None:
        self.row_reads = self.store if isinstance(self.store, SupportsRowReads) else None

    def read_models(self) -> ReadModelStore:
        """The read models beside the store (made once, when first needed)."""
        if self.models is None:
            self.models = read_models_for(self.store)
        return self.models

    def wakeups(self) -> StoreWakeUps:
        """The store's wake-ups, shared by every live subscription of this app."""
        if self._wakeups is None:
            self._wakeups = StoreWakeUps(self.store)
        return self._wakeups

    async def close(self) -> None:
        """Stop background work: the wake-ups, rebuilds still running."""
        for job in list(self.rebuilds.values()):
            if job.task is not None and not job.task.done():
                job.task.cancel()
        if self._wakeups is not None:
            await self._wakeups.close()
            self._wakeups = None

    def projection(self, name: str) -> ProjectionBase:
        """The projection called ``name``, or a 404 listing the known ones."""
        for p in self.projections:
            if p.name == name:
                return p
        known = ", ".join(sorted(p.name for p in self.projections)) or "none"
        raise ApiError(
            404, "not_found", f"no projection named {name!r}; this server has: {known}",
            field="name",
        )  # fmt: skip

    async def load_schemas(self) -> None:
        """Read the store's schema registry if not read lately: raw JSON of types without
        a class is checked against it on append."""
        if time.monotonic() - self._schemas_at < SCHEMA_RELOAD_SECONDS:
            return  # read lately: no lock to take
        if self._schema_lock is None:
            self._schema_lock = asyncio.Lock()
        async with self._schema_lock:
            now = time.monotonic()
            if now - self._schemas_at >= SCHEMA_RELOAD_SECONDS:
                await schema.load(self.store)
                self._schemas_at = now

    def authorize(self, request: Request, needed: Role) -> Caller:
        """The caller, if their token grants ``needed``; else 401 (no or unknown token)
        or 403 (a token without the role)."""
        return self.authorize_header(request.headers.get("authorization"), needed)

    def authorize_header(self, header: str | None, needed: Role) -> Caller:
        """`authorize` given the request's ``Authorization`` header (None: absent)."""
        if header is None:
            if needed is Role.READ and not self.read_token:
                return Caller(None, None)
            raise ApiError(
                401,
                "unauthorized",
                f"this route needs a bearer token with the {needed} role; send "
                "`Authorization: Bearer TOKEN`",
                field="Authorization",
                headers={"WWW-Authenticate": 'Bearer realm="eventfold"'},
            )
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(
                401,
                "unauthorized",
                "the Authorization header must be `Bearer TOKEN`",
                field="Authorization",
                headers={"WWW-Authenticate": 'Bearer realm="eventfold"'},
            )
        found = self.tokens.role_of(token)
        if found is None:
            raise ApiError(
                401,
                "unauthorized",
                "the bearer token is not one this server knows; ask its operator for one",
                field="Authorization",
                headers={"WWW-Authenticate": 'Bearer realm="eventfold", error="invalid_token"'},
            )
        role, token_id = found
        if role.rank < needed.rank:
            raise ApiError(
                403,
                "forbidden",
                f"this route needs the {needed} role; the token has the {role} role",
                field="Authorization",
            )
        return Caller(role, token_id)

    async def audit(self, caller: Caller, action: str, target: str, **detail: object) -> None:
        """Record an admin action in `AUDIT_STREAM` (before it runs: an action whose
        record cannot be written does not run)."""
        entry = AuditEntry(action=action, target=target, token=caller.token or "", detail=detail)
        event = NewEvent(
            msgspec.to_builtins(entry),
            type=AUDIT_EVENT_TYPE,
            metadata={"actor": f"token:{caller.token}", "source": "eventfold.web"},
        )
        await self.store.append(AUDIT_STREAM, [event], expected_version=ANY)


Endpoint = Callable[[Request], Awaitable[Response]]


def guarded(fn: Callable[[Api, Request], Awaitable[Response]], api: Api) -> Endpoint:
    """``fn`` as a Starlette endpoint: refusals and eventfold errors become JSON errors,
    and stored events that do not decode are shown as stored instead of failing a read."""

    @functools.wraps(fn)
    async def endpoint(request: Request) -> Response:
        try:
            with keep_undecodable():
                return await fn(api, request)
        except ApiError as err:
            return error_response(err)
        except EventfoldError as exc:
            return error_response(from_eventfold(exc))

    return endpoint
