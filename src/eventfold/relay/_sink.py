"""The sink interface a relay delivers through, and the in-process sink for tests.

A sink is four coroutines. `Sink.send` hands one message over and returns an awaitable
that completes when the bus has stored it (the relay keeps many in flight at once and
awaits each), or raises `SinkRejected` (this message will never be accepted: the relay
parks its stream) or `SinkUnavailable` (try again later: the relay backs off, nothing is
lost). A bus that de-duplicates should use `Message.message_id` for it: the relay sends a
message again after a crash or an outage, never fewer times than once.

Another bus (Kafka, RabbitMQ) needs only these four methods::

    class KafkaSink:
        name = "kafka"
        async def open(self) -> None: ...       # connect; raise SinkUnavailable if down
        async def send(self, message: Message) -> Awaitable[None]: ...
        async def flush(self) -> None: ...      # wait for every sent message's ack
        async def close(self) -> None: ...
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..errors import SinkRejected, SinkUnavailable

__all__ = ["InProcessSink", "Message", "Sink"]


@dataclass(frozen=True, slots=True)
class Message:
    """One message for the bus."""

    subject: str
    """Where it goes (a NATS subject; a topic or routing key on other buses)."""
    payload: bytes
    headers: dict[str, str]
    message_id: str
    """The de-duplication id (an event's or outbox message's id): stable across resends."""
    key: str
    """The ordering key (the stream id, or the outbox message's key): messages with the
    same key reach the bus in order."""


@runtime_checkable
class Sink(Protocol):
    """Where a relay delivers messages (see the module's documentation)."""

    name: str
    """Names the bus in errors and the status (``nats``, ``in-process``)."""

    async def open(self) -> None:
        """Connect (the relay calls it before the first send, and again after a failure)."""
        ...

    async def send(self, message: Message) -> Awaitable[None]:
        """Hand ``message`` over; the result completes once the bus stored it, or raises
        `SinkRejected` / `SinkUnavailable`. May raise either at once too."""
        ...

    async def flush(self) -> None:
        """Wait until every message sent so far is acknowledged or failed."""
        ...

    async def close(self) -> None:
        """Disconnect; safe to call twice."""
        ...


async def _done() -> None:
    return None


@dataclass
class InProcessSink:
    """Keeps what it is sent in ``messages``; tests tell it to fail.

    ``reject(message)`` returns a reason to refuse that message (a poison message), or
    None. ``down`` makes every send fail with `SinkUnavailable`; ``hang`` makes sends
    never acknowledge (the relay's ``ack_timeout`` turns that into `SinkUnavailable`).
    ``dedupe`` drops a message whose id it already holds, as JetStream does inside its
    duplicate window. ``ack_timeout``: seconds a hanging send waits before it fails.
    """

    name: str = "in-process"
    reject: Callable[[Message], str | None] | None = None
    down: bool = False
    hang: bool = False
    dedupe: bool = False
    ack_timeout: float = 5.0
    messages: list[Message] = field(default_factory=list)
    attempts: int = 0
    """Every call of `send`, failed ones included."""
    opened: int = 0
    _ids: set[str] = field(default_factory=set)

    async def open(self) -> None:
        if self.down:
            raise SinkUnavailable("the in-process sink is down")
        self.opened += 1

    async def send(self, message: Message) -> Awaitable[None]:
        self.attempts += 1
        if self.down:
            raise SinkUnavailable("the in-process sink is down")
        if self.hang:
            return self._never(message)
        if self.reject is not None:
            reason = self.reject(message)
            if reason is not None:
                raise SinkRejected(message.subject, message.message_id, reason)
        if not (self.dedupe and message.message_id in self._ids):
            self._ids.add(message.message_id)
            self.messages.append(message)
        return _done()

    async def _never(self, message: Message) -> None:
        await asyncio.sleep(self.ack_timeout)
        raise SinkUnavailable(
            f"the in-process sink did not acknowledge message {message.message_id} within "
            f"{self.ack_timeout:g} s"
        )

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def by_key(self) -> dict[str, list[Message]]:
        """The messages received, grouped by ordering key, each list in arrival order."""
        out: dict[str, list[Message]] = {}
        for m in self.messages:
            out.setdefault(m.key, []).append(m)
        return out
