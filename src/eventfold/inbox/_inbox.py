"""`Inbox`: a consumer's processed message ids, committed with its effects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from types import TracebackType
from typing import Final, Protocol, Self
from urllib.parse import urlsplit

from ..errors import ConfigurationError, InvalidInput
from ..store import InboxDatabase, InboxSession, backend_for_scheme
from ..store.ports import now_us

__all__ = [
    "DEFAULT_RETENTION",
    "DEFAULT_TABLE",
    "MESSAGE_ID_HEADER",
    "Delivery",
    "Inbox",
    "message_id_of",
]

MESSAGE_ID_HEADER: Final = "Nats-Msg-Id"
"""The header that names a message: JetStream de-duplicates on it within the stream's
duplicate window, and the inbox remembers it for ``retention``."""

DEFAULT_TABLE: Final = "eventfold_inbox"

DEFAULT_RETENTION: Final = timedelta(days=7)
"""How long a processed id is remembered by default. It must outlast the longest time a
message can come back: the stream's ``max_age``, a relay's longest outage, a replay of
parked messages. A message that comes back after its id was pruned is applied again."""

_MAX_ID_LENGTH: Final = 1024
_MAX_CONSUMER_LENGTH: Final = 200


class Delivery(Protocol):
    """What the inbox needs of a message (a nats-py ``Msg`` has it): its headers, and its
    subject for the messages of errors."""

    @property
    def headers(self) -> dict[str, str] | None: ...

    @property
    def subject(self) -> str: ...


def message_id_of(msg: Delivery) -> str:
    """The message's ``Nats-Msg-Id``, or `InvalidInput` when it has none."""
    headers = msg.headers or {}
    message_id = headers.get(MESSAGE_ID_HEADER)
    where = f" on subject {msg.subject!r}" if msg.subject else ""
    if not message_id:
        raise InvalidInput(
            f"the message{where} has no {MESSAGE_ID_HEADER} header, so the inbox cannot tell "
            f"a redelivery from a new message; publish it with headers={{"
            f"'{MESSAGE_ID_HEADER}': <a unique id>}} (the eventfold relay sends the event id)"
        )
    if len(message_id) > _MAX_ID_LENGTH:
        raise InvalidInput(
            f"the message{where} has a {MESSAGE_ID_HEADER} of {len(message_id)} characters; "
            f"use an id of at most {_MAX_ID_LENGTH} (a UUID is 36)"
        )
    return message_id


def _check_consumer(consumer: object) -> str:
    if (
        not isinstance(consumer, str)
        or not consumer
        or len(consumer) > _MAX_CONSUMER_LENGTH
        or not consumer.isprintable()
    ):
        raise InvalidInput(
            f"consumer={consumer!r} must be a non-empty printable str of at most "
            f"{_MAX_CONSUMER_LENGTH} characters naming the consumer (e.g. 'billing')"
        )
    return consumer


def _check_table(table: object) -> str:
    if (
        not isinstance(table, str)
        or not table.isidentifier()
        or not table.isascii()
        or len(table) > 50
    ):
        raise ConfigurationError(
            f"table={table!r} must be an ASCII identifier of at most 50 characters "
            f"(letters, digits, _), e.g. {DEFAULT_TABLE!r}"
        )
    return table


def _database(url: object, table: str) -> InboxDatabase:
    if not isinstance(url, str):
        raise ConfigurationError(f"the inbox URL must be a str, got {type(url).__name__}")
    scheme = urlsplit(url).scheme
    backend = backend_for_scheme(scheme) if scheme else None
    if backend is None:
        raise ConfigurationError(
            f"the inbox cannot use the URL {url.split('@')[-1]!r}: unknown scheme {scheme!r}; "
            "use sqlite:///path.db or postgresql://user@host:5432/dbname"
        )
    if backend.inbox is None:
        raise ConfigurationError(
            f"the {backend.name} backend keeps no inbox (its state would not outlive the "
            "process); use sqlite:///path.db or postgresql://user@host:5432/dbname"
        )
    return backend.inbox(url, table)


class Inbox:
    """A consumer's inbox: the ids of the messages it has processed, in its own database,
    written in the same transaction as the effects of processing them.

    ::

        inbox = await Inbox.open("sqlite:///billing.db", consumer="billing")
        async with inbox.receive(msg) as tx:
            if tx is not None:  # None: processed already, nothing to do
                await tx.execute("UPDATE accounts SET ...", (...))
        await msg.ack()  # after the commit

    JetStream drops a re-published message only within its stream's duplicate window; a
    message redelivered (no ack in time) or re-published later reaches the consumer
    again, and the inbox makes its effects happen once. Several consumers may share one
    database and table: their ids are kept apart by ``consumer``.
    """

    def __init__(
        self,
        url: str,
        *,
        consumer: str,
        table: str = DEFAULT_TABLE,
        retention: timedelta = DEFAULT_RETENTION,
    ) -> None:
        self.consumer = _check_consumer(consumer)
        if not isinstance(retention, timedelta) or retention <= timedelta(0):
            raise InvalidInput(
                f"retention={retention!r} must be a positive timedelta (how long processed "
                "ids are kept; e.g. timedelta(days=7))"
            )
        self.retention = retention
        self._db = _database(url, _check_table(table))

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        consumer: str,
        table: str = DEFAULT_TABLE,
        retention: timedelta = DEFAULT_RETENTION,
    ) -> Inbox:
        """Connect to the database at ``url`` (``sqlite:///…`` or ``postgresql://…``) and
        create the inbox table if it is missing."""
        inbox = cls(url, consumer=consumer, table=table, retention=retention)
        await inbox._db.open()
        return inbox

    def __repr__(self) -> str:
        return f"Inbox({self._db!r}, consumer={self.consumer!r})"

    async def close(self) -> None:
        """Close the connections; safe to call again."""
        await self._db.close()

    async def __aenter__(self) -> Self:
        await self._db.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @asynccontextmanager
    async def receive(self, msg: Delivery) -> AsyncIterator[InboxSession | None]:
        """A transaction for processing ``msg``, or None if its id was processed already.

        The id is recorded in the transaction before the block runs; the block's
        ``tx.execute`` statements join it, and everything commits when the block ends, or
        rolls back if it raises (the message is then not recorded). Ack the message only
        after the block. A message without ``Nats-Msg-Id`` raises `InvalidInput`.
        """
        async with self.receive_id(message_id_of(msg)) as tx:
            yield tx

    def receive_id(self, message_id: str) -> AbstractAsyncContextManager[InboxSession | None]:
        """`receive` for a message id the caller has in hand (any non-empty str)."""
        if not isinstance(message_id, str) or not message_id or len(message_id) > _MAX_ID_LENGTH:
            raise InvalidInput(
                f"message id {message_id!r} must be a non-empty str of at most "
                f"{_MAX_ID_LENGTH} characters"
            )
        return self._db.transaction(self.consumer, message_id)

    async def processed(self, message_id: str) -> bool:
        """Whether ``message_id`` was processed (its transaction committed)."""
        return await self._db.processed(self.consumer, message_id)

    async def prune(self, *, older_than: timedelta | None = None) -> int:
        """Forget the ids processed more than ``older_than`` (default: ``retention``)
        ago; the number forgotten. `consume` calls it periodically."""
        age = self.retention if older_than is None else older_than
        if not isinstance(age, timedelta) or age < timedelta(0):
            raise InvalidInput(f"older_than={age!r} must be a timedelta >= 0")
        before = now_us() - age // timedelta(microseconds=1)
        return await self._db.prune(self.consumer, before)
