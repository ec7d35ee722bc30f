"""`consume`: a JetStream pull consumer that applies each message once through an inbox."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from ..errors import ConfigurationError, InvalidInput, StoreUnavailable
from ..store import InboxSession
from ._inbox import Inbox, message_id_of

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

__all__ = ["Handler", "consume"]

logger: Final = logging.getLogger("eventfold.inbox")

Handler = Callable[["Msg", InboxSession], Awaitable[None]]
"""``async def handler(msg, tx)``: apply one message's effects through ``tx``."""

_MAX_RETRY_DELAY_S: Final = 60.0


async def consume(
    js: JetStreamContext,
    stream: str,
    durable: str,
    inbox: Inbox,
    handler: Handler,
    *,
    batch: int = 64,
    max_attempts: int = 5,
    retry_delay: float = 1.0,
    ack_wait: float = 30.0,
    fetch_timeout: float = 1.0,
    prune_every: float = 3600.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Apply the messages of the durable pull consumer ``durable`` on ``stream`` through
    ``handler``, each at most once, until ``stop`` is set (or the task is cancelled).

    The consumer is created (explicit acks, ``ack_wait`` seconds) if it does not exist.
    For each message: the inbox transaction begins and records the message id; the
    handler runs in it (skipped when the id was processed already); the transaction
    commits; only then is the message acked. So a crash between commit and ack brings
    the message back, and the inbox drops it.

    A handler that raises rolls its effects back and the message is nak'ed with a delay
    (``retry_delay`` doubling per attempt, at most 60 s); after ``max_attempts``
    deliveries it is terminated (parked: JetStream sends it no more) with an error
    logged on ``eventfold.inbox``. A database that cannot be reached (`StoreUnavailable`)
    never parks a message: it is nak'ed until the database is back. A message without
    ``Nats-Msg-Id`` cannot be applied once, so it is terminated at once, logged.
    Processed ids older than the inbox's retention are pruned every ``prune_every`` s.
    Other errors (of the NATS connection, of the stream) end ``consume`` with that error;
    the message in hand is then redelivered after ``ack_wait``.
    """
    _check_options(batch, max_attempts, retry_delay, ack_wait, fetch_timeout, prune_every)
    try:
        from nats.js.api import AckPolicy, ConsumerConfig
        from nats.js.errors import NotFoundError
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"consume needs nats-py, which is not installed ({exc.name} is missing); "
            "install it with: pip install 'eventfold[nats]'"
        ) from None

    try:
        await js.consumer_info(stream, durable)
    except NotFoundError:
        await js.add_consumer(
            stream,
            ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait),
        )
    subscription = await js.pull_subscribe_bind(durable=durable, stream=stream)
    stop = stop or asyncio.Event()
    next_prune = time.monotonic()
    try:
        while not stop.is_set():
            if time.monotonic() >= next_prune:
                pruned = await inbox.prune()
                if pruned:
                    logger.info("inbox %s: forgot %d processed ids", inbox.consumer, pruned)
                next_prune = time.monotonic() + prune_every
            try:
                messages = await subscription.fetch(batch, timeout=fetch_timeout)
            except TimeoutError:  # nothing to fetch (nats-py raises both kinds)
                continue
            for msg in messages:
                await _apply(msg, inbox, handler, max_attempts, retry_delay)
    finally:
        await subscription.unsubscribe()


async def _apply(
    msg: Msg, inbox: Inbox, handler: Handler, max_attempts: int, retry_delay: float
) -> None:
    try:
        message_id_of(msg)
    except InvalidInput as exc:
        logger.error("terminated message %s: %s", _describe(msg), exc)
        await msg.term()
        return
    try:
        async with inbox.receive(msg) as tx:
            if tx is not None:
                await handler(msg, tx)
    except Exception as exc:
        attempts = msg.metadata.num_delivered or 1
        if attempts >= max_attempts and not isinstance(exc, StoreUnavailable):
            logger.error(
                "parked message %s after %d attempts (terminated; JetStream will not "
                "deliver it again): %s: %s",
                _describe(msg),
                attempts,
                type(exc).__name__,
                exc,
            )
            await msg.term()
        else:
            delay = min(retry_delay * 2 ** (attempts - 1), _MAX_RETRY_DELAY_S)
            logger.warning(
                "message %s failed (attempt %d of %d), retrying in %.1f s: %s: %s",
                _describe(msg),
                attempts,
                max_attempts,
                delay,
                type(exc).__name__,
                exc,
            )
            await msg.nak(delay=delay)
        return
    await msg.ack()


def _describe(msg: Msg) -> str:
    message_id = (msg.headers or {}).get("Nats-Msg-Id")
    metadata = msg.metadata
    return (
        f"{message_id or '(no id)'} on {msg.subject!r} (stream {metadata.stream}, "
        f"seq {metadata.sequence.stream})"
    )


def _check_options(
    batch: int,
    max_attempts: int,
    retry_delay: float,
    ack_wait: float,
    fetch_timeout: float,
    prune_every: float,
) -> None:
    for name, value in (("batch", batch), ("max_attempts", max_attempts)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidInput(f"{name}={value!r} must be an int >= 1")
    for name, number in (
        ("retry_delay", retry_delay),
        ("ack_wait", ack_wait),
        ("fetch_timeout", fetch_timeout),
        ("prune_every", prune_every),
    ):
        if not isinstance(number, int | float) or isinstance(number, bool) or number <= 0:
            raise InvalidInput(f"{name}={number!r} must be a number of seconds > 0")
