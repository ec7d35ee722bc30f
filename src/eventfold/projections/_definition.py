"""Projection definitions: a name, a version, the event types handled and the handlers.

Two kinds share one base, so the daemon, live folds and rebuilds treat them alike:

- `Projection`: free-form handlers, registered per event type with ``@proj.on(Type)``.
  A handler gets the recorded event and a `ProjectionTransaction` — the batch's
  read-model transaction, scoped to this projection's name and version — and writes
  documents (``await tx.put(id, doc)``) or, on the SQL backends, runs its own statements
  (``await tx.execute(...)`` against ``tx.table("orders")``).
- `DocumentProjection`: one keyed JSON document per id, evolved by pure functions. The
  daemon loads a batch's documents in one call, folds the batch's events into them and
  writes each back once; ``live`` folds the same definition on demand.

The API decision. Marten users expect a document per id evolved by per-event methods
and read back with ``await view.get(id)``; ``eventsourcing`` users expect a process
application whose policy sees each event with a tracking record committed alongside.
eventfold takes the first for reading and the second's guarantee for writing:

    summary = DocumentProjection("order_summary", document=Summary)

    @summary.on(OrderPlaced)
    def placed(doc: Summary, event: RecordedEvent) -> Summary | None:
        return msgspec.structs.replace(doc, total=event.data.total_cents)

    doc = await DocumentView(models, summary).get("order-1")

Evolvers are plain, pure functions (like a decider's ``evolve``, no I/O), so the same
definition runs async, live, and later inline inside an append's transaction even on
SQLite's synchronous writer thread. Returning None deletes the document. Documents are
keyed by stream id unless ``id_of`` says otherwise (it may return several ids, or None
to skip an event). The event types a projection handles are taken from its handlers,
so subscriptions ask the store for those types only.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, overload

import msgspec

from .._events import Event, RecordedEvent
from ..errors import ConfigurationError, HandlerFailed, InvalidProjection, StoreError
from ..store.ports import ReadModelTransaction

__all__ = [
    "DocumentProjection",
    "Handler",
    "PoisonPolicy",
    "Projection",
    "ProjectionBase",
    "ProjectionTransaction",
    "is_infrastructure_error",
]

T = TypeVar("T")
D = TypeVar("D")

_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
_TABLE = re.compile(r"[a-z_][a-z0-9_]{0,50}")
MAX_PARTITIONS = 1024


class ProjectionTransaction:
    """What a handler writes through: the batch's transaction, scoped to one projection.

    Documents are encoded as JSON with msgspec; ``get`` decodes them back as builtins or
    as ``type``.
    """

    __slots__ = ("name", "raw", "version")

    def __init__(self, raw: ReadModelTransaction, name: str, version: int) -> None:
        self.raw = raw
        """The underlying read-model transaction."""
        self.name = name
        self.version = version

    @overload
    async def get(self, doc_id: str) -> Any: ...
    @overload
    async def get(self, doc_id: str, type: type[T]) -> T | None: ...
    async def get(self, doc_id: str, type: Any = Any) -> Any:
        """The document with this id (as this transaction sees it), or None."""
        found = await self.raw.get_documents(self.name, self.version, [doc_id])
        data = found.get(doc_id)
        return None if data is None else msgspec.json.decode(data, type=type)

    async def get_many(self, ids: Sequence[str], type: type[T] | Any = Any) -> dict[str, Any]:
        """The documents with these ids; missing ones are left out."""
        found = await self.raw.get_documents(self.name, self.version, list(ids))
        return {i: msgspec.json.decode(d, type=type) for i, d in found.items()}

    async def put(self, doc_id: str, doc: object) -> None:
        """Insert or replace the document (anything msgspec encodes as JSON)."""
        await self.raw.put_document(self.name, self.version, doc_id, msgspec.json.encode(doc))

    async def delete(self, doc_id: str) -> None:
        """Delete the document; a missing one is not an error."""
        await self.raw.delete_document(self.name, self.version, doc_id)

    async def execute(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a SQL statement in this transaction (SQLite and PostgreSQL read models)."""
        return await self.raw.execute(query, params)

    async def write(self, query: str, params: Sequence[Any] = ()) -> None:
        """Queue a SQL statement whose rows are not needed; it runs before the next read
        or the commit, and same-text runs go to PostgreSQL in one round trip (see
        `ReadModelTransaction.write`)."""
        await self.raw.write(query, params)

    def table(self, base: str) -> str:
        """The quoted name of this version's copy of a SQL table: ``"orders_v2"``.

        Each version writes its own tables, so a rebuild fills new ones beside the live
        ones and readers switch when the pointer swaps.
        """
        if not isinstance(base, str) or not _TABLE.fullmatch(base):
            raise InvalidProjection(
                f"table name {base!r} must be lowercase letters, digits and _ (at most 51)"
            )
        return f'"{base}_v{self.version}"'


Handler = Callable[[RecordedEvent, ProjectionTransaction], Awaitable[None]]
"""A `Projection` handler: ``async def handler(event, tx) -> None``."""
Hook = Callable[[ProjectionTransaction], Awaitable[None]]
H = TypeVar("H", bound=Handler)
K = TypeVar("K", bound=Hook)


@dataclass(frozen=True)
class PoisonPolicy:
    """What a worker does when a handler keeps failing on one event.

    It retries the batch ``retries`` times, waiting ``backoff`` seconds, doubled each
    time up to ``max_backoff``. Then ``stop`` records the error and stops the projection
    (the default: nothing is ever skipped silently), and ``park`` sets the event aside in
    the dead-letter list and carries on. Store outages are not poison: they are retried
    until the store answers.
    """

    action: Literal["stop", "park"] = "stop"
    retries: int = 3
    backoff: float = 0.1
    max_backoff: float = 5.0

    def __post_init__(self) -> None:
        if self.action not in ("stop", "park"):
            raise InvalidProjection(f"poison action must be 'stop' or 'park', not {self.action!r}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise InvalidProjection(f"poison retries must be an int >= 0, got {self.retries!r}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise InvalidProjection("poison backoff and max_backoff must be >= 0 seconds")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        return float(min(self.backoff * 2 ** (attempt - 1), self.max_backoff))


def is_infrastructure_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the store failing (retried forever) rather than a poison event."""
    return isinstance(exc, StoreError) and not isinstance(exc, ConfigurationError)


def _type_name(t: type[Event] | str) -> str:
    if isinstance(t, str) and t:
        return t
    if isinstance(t, type) and issubclass(t, Event):
        return t.__event_type__
    raise InvalidProjection(f"{t!r} is not an event type; pass an Event subclass or a type name")


class ProjectionBase:
    """What every projection has: identity, declared event types, partitions, hooks."""

    name: str
    version: int

    def __init__(
        self,
        name: str,
        *,
        version: int = 1,
        categories: Sequence[str] | None = None,
        partitions: int = 1,
        depends_on: Sequence[str | ProjectionBase] = (),
        poison: PoisonPolicy | None = None,
    ) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidProjection(
                f"projection name {name!r} must start with a lowercase letter and hold only "
                "lowercase letters, digits and _ (at most 63): it names tables and locks"
            )
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise InvalidProjection(
                f"projection {name!r}: version must be an int >= 1, got {version!r}; bump it "
                "whenever the handlers change what they write"
            )
        if (
            isinstance(partitions, bool)
            or not isinstance(partitions, int)
            or not 1 <= partitions <= MAX_PARTITIONS
        ):
            raise InvalidProjection(
                f"projection {name!r}: partitions must be an int from 1 to {MAX_PARTITIONS}, "
                f"got {partitions!r}"
            )
        if isinstance(categories, str):
            categories = [categories]
        if categories is not None and not all(isinstance(c, str) and c for c in categories):
            raise InvalidProjection(f"projection {name!r}: categories must be non-empty strs")
        deps = tuple(d.name if isinstance(d, ProjectionBase) else d for d in depends_on)
        if name in deps:
            raise InvalidProjection(f"projection {name!r} cannot depend on itself")
        self.name = name
        self.version = version
        self.categories: tuple[str, ...] | None = None if categories is None else tuple(categories)
        self.partitions = partitions
        """How many workers share the log, each taking the streams that hash to it.
        Partitions run concurrently, so handlers of two partitions must never write the
        same document or row. Changing it moves streams between checkpoints: bump the
        version with it."""
        self.depends_on: tuple[str, ...] = deps
        """Projections this one reads: it never runs ahead of their checkpoints."""
        self.poison = poison
        """This projection's poison policy (None: the daemon's)."""
        self._setup: Hook | None = None
        self._drop: Hook | None = None
        self._handled: Mapping[str, object] = {}
        """The handled type names as keys (a subclass's handler table): `handles` reads it."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, version={self.version})"

    @property
    def event_types(self) -> tuple[str, ...]:
        """The stable names of the event types handled, sorted (the subscription filter)."""
        raise NotImplementedError

    def handles(self, event: RecordedEvent) -> bool:
        """Whether ``event`` is of a handled type and category."""
        if event.type not in self._handled:
            return False
        return self.categories is None or event.stream_id.partition("-")[0] in self.categories

    async def apply(self, events: Sequence[RecordedEvent], tx: ReadModelTransaction) -> None:
        """Apply ``events`` (in log order) to this version's read model inside ``tx``.

        A handler's error is raised as `HandlerFailed` naming the event, except the
        store's own errors, which pass through unchanged.
        """
        raise NotImplementedError

    def on_setup(self, hook: K) -> K:
        """Register ``async def hook(tx)``, run once when a version starts building
        (create a SQL projection's tables with ``tx.table(...)`` here)."""
        self._setup = hook
        return hook

    def on_drop(self, hook: K) -> K:
        """Register ``async def hook(tx)``, run when a version's data is dropped; ``tx``
        is scoped to the version being dropped (drop its tables here)."""
        self._drop = hook
        return hook

    async def run_setup(self, tx: ReadModelTransaction) -> None:
        """Run the setup hook, if any, for this version."""
        if self._setup is not None:
            await self._setup(ProjectionTransaction(tx, self.name, self.version))

    async def run_drop(self, tx: ReadModelTransaction, version: int) -> None:
        """Drop ``version``'s data: the drop hook, then the store's rows."""
        if self._drop is not None:
            await self._drop(ProjectionTransaction(tx, self.name, version))
        await tx.drop(self.name, version)

    def check_runnable(self) -> None:
        """Raise `InvalidProjection` if the projection handles no event type."""
        if not self.event_types:
            raise InvalidProjection(
                f"projection {self.name!r} handles no event types; register handlers with "
                f"@{self.name}.on(EventType)"
            )

    def _failed(self, event: RecordedEvent, exc: Exception) -> HandlerFailed | None:
        """The poison-event error for ``exc``, or None when it must pass through as is."""
        if is_infrastructure_error(exc) or isinstance(exc, HandlerFailed):
            return None
        return HandlerFailed(self.name, self.version, event, exc)


class Projection(ProjectionBase):
    """A projection with free-form async handlers, one per event type.

    ::

        totals = Projection("totals", version=1)

        @totals.on(OrderPlaced)
        async def placed(event: RecordedEvent, tx: ProjectionTransaction) -> None:
            doc = await tx.get("all") or {"orders": 0}
            doc["orders"] += 1
            await tx.put("all", doc)
    """

    def __init__(
        self,
        name: str,
        *,
        version: int = 1,
        categories: Sequence[str] | None = None,
        partitions: int = 1,
        depends_on: Sequence[str | ProjectionBase] = (),
        poison: PoisonPolicy | None = None,
    ) -> None:
        super().__init__(
            name,
            version=version,
            categories=categories,
            partitions=partitions,
            depends_on=depends_on,
            poison=poison,
        )
        self._handlers: dict[str, Handler] = {}
        self._handled = self._handlers

    def on(self, *types: type[Event] | str) -> Callable[[H], H]:
        """Register the decorated ``async def handler(event, tx)`` for these event types."""
        if not types:
            raise InvalidProjection(f"{self.name}.on() needs at least one event type")
        names = [_type_name(t) for t in types]
        for n in names:
            if n in self._handlers:
                raise InvalidProjection(f"projection {self.name!r} already handles {n!r}")

        def register(handler: H) -> H:
            for n in names:
                self._handlers[n] = handler
            return handler

        return register

    @property
    def event_types(self) -> tuple[str, ...]:
        return tuple(sorted(self._handlers))

    async def apply(self, events: Sequence[RecordedEvent], tx: ReadModelTransaction) -> None:
        scoped = ProjectionTransaction(tx, self.name, self.version)
        for event in events:
            handler = self._handlers.get(event.type)
            if handler is None:
                continue
            try:
                await handler(event, scoped)
            except Exception as exc:
                failure = self._failed(event, exc)
                if failure is None:
                    raise
                raise failure from exc


Evolver = Callable[[D, RecordedEvent], D | None]
IdOf = Callable[[RecordedEvent], str | Sequence[str] | None]


class DocumentProjection(ProjectionBase, Generic[D]):
    """One JSON document per id, evolved by pure functions of (document, event).

    ``document`` is the type documents decode into (a msgspec Struct, a dataclass, or
    ``dict``); ``initial(id)`` makes a fresh one (default: ``document()``). Register
    evolvers per type with ``@proj.on(Type)``, or pass one ``evolve`` together with the
    ``types`` it handles. ``id_of`` maps an event to its document id(s), default the
    stream id (one document per stream, which lets live reads fold a single stream).
    """

    def __init__(
        self,
        name: str,
        *,
        document: type[D],
        version: int = 1,
        initial: Callable[[str], D] | None = None,
        evolve: Evolver[D] | None = None,
        types: Sequence[type[Event] | str] = (),
        id_of: IdOf | None = None,
        categories: Sequence[str] | None = None,
        partitions: int = 1,
        depends_on: Sequence[str | ProjectionBase] = (),
        poison: PoisonPolicy | None = None,
    ) -> None:
        super().__init__(
            name,
            version=version,
            categories=categories,
            partitions=partitions,
            depends_on=depends_on,
            poison=poison,
        )
        if evolve is not None and not types:
            raise InvalidProjection(
                f"projection {name!r}: pass the event types evolve handles, types=[...]"
            )
        if evolve is None and types:
            raise InvalidProjection(f"projection {name!r}: types=[...] needs an evolve function")
        if id_of is not None and partitions > 1:
            # Two partitions could then fold events of different streams into one
            # document at the same time, and one write would be lost.
            raise InvalidProjection(
                f"projection {name!r}: documents keyed by id_of may gather events of streams "
                "in different partitions; use partitions=1, or key documents by stream id"
            )
        self.document = document
        self.initial: Callable[[str], D] = initial or (lambda _doc_id: document())
        self.id_of = id_of
        self._evolvers: dict[str, Evolver[D]] = {}
        self._handled = self._evolvers
        if evolve is not None:
            for t in types:
                self._evolvers[_type_name(t)] = evolve
        self._decoder = msgspec.json.Decoder(document)
        self._encoder = msgspec.json.Encoder()

    @property
    def per_stream(self) -> bool:
        """True when documents are keyed by stream id (the default ``id_of``)."""
        return self.id_of is None

    def on(self, *types: type[Event] | str) -> Callable[[Evolver[D]], Evolver[D]]:
        """Register the decorated ``def evolve(doc, event) -> doc | None`` for these types."""
        if not types:
            raise InvalidProjection(f"{self.name}.on() needs at least one event type")
        names = [_type_name(t) for t in types]
        for n in names:
            if n in self._evolvers:
                raise InvalidProjection(f"projection {self.name!r} already handles {n!r}")

        def register(evolver: Evolver[D]) -> Evolver[D]:
            for n in names:
                self._evolvers[n] = evolver
            return evolver

        return register

    @property
    def event_types(self) -> tuple[str, ...]:
        return tuple(sorted(self._evolvers))

    def encode(self, doc: D) -> bytes:
        """A document as stored."""
        return self._encoder.encode(doc)

    def decode(self, data: bytes) -> D:
        """A stored document back as ``document``."""
        return self._decoder.decode(data)

    def ids_of(self, event: RecordedEvent) -> tuple[str, ...]:
        """The ids of the documents ``event`` changes (none when ``id_of`` returns None)."""
        if self.id_of is None:
            return (event.stream_id,)
        found = self.id_of(event)
        if found is None:
            return ()
        if isinstance(found, str):
            return (found,)
        ids = tuple(found)
        if not all(isinstance(i, str) for i in ids):
            raise TypeError(f"id_of returned {found!r}; return a str, a list of str, or None")
        return ids

    def evolve(self, doc: D | None, doc_id: str, event: RecordedEvent) -> D | None:
        """One step of the fold: a missing document starts from ``initial(doc_id)``."""
        evolver = self._evolvers.get(event.type)
        if evolver is None:
            return doc
        return evolver(self.initial(doc_id) if doc is None else doc, event)

    def fold(
        self,
        docs: dict[str, D | None],
        events: Sequence[RecordedEvent],
        *,
        only: str | None = None,
    ) -> dict[str, D | None]:
        """Fold ``events`` into ``docs`` (id to document, None: absent); returns ``docs``.

        ``only`` folds that one document and skips the others' events. Raises
        `HandlerFailed` naming the first event an evolver (or ``id_of``) failed on.
        """
        for event in events:
            if not self.handles(event):
                continue
            try:
                for doc_id in self.ids_of(event):
                    if only is None or doc_id == only:
                        docs[doc_id] = self.evolve(docs.get(doc_id), doc_id, event)
            except Exception as exc:
                failure = self._failed(event, exc)
                if failure is None:
                    raise
                raise failure from exc
        return docs

    async def apply(self, events: Sequence[RecordedEvent], tx: ReadModelTransaction) -> None:
        wanted: dict[str, None] = {}
        for event in events:
            if self.handles(event):
                try:
                    wanted.update(dict.fromkeys(self.ids_of(event)))
                except Exception as exc:
                    failure = self._failed(event, exc)
                    if failure is None:
                        raise
                    raise failure from exc
        if not wanted:
            return
        stored = await tx.get_documents(self.name, self.version, list(wanted))
        docs: dict[str, D | None] = {}
        for doc_id, data in stored.items():
            try:
                docs[doc_id] = self.decode(data)
            except msgspec.DecodeError as exc:
                first = next(e for e in events if self.handles(e) and doc_id in self.ids_of(e))
                raise HandlerFailed(self.name, self.version, first, exc) from exc
        self.fold(docs, events)
        for doc_id in wanted:
            doc = docs.get(doc_id)
            if doc is not None:
                await tx.put_document(self.name, self.version, doc_id, self.encode(doc))
            elif doc_id in stored:
                await tx.delete_document(self.name, self.version, doc_id)
