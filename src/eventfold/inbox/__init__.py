"""Exactly-once effects for a JetStream consumer: an inbox of processed message ids.

JetStream delivers at least once: a message whose ack is lost comes back, and a message
re-published after the stream's duplicate window (2 minutes by default) is stored again.
An `Inbox` keeps the ids (``Nats-Msg-Id``) of the messages a consumer has processed in
the consumer's own database (SQLite or PostgreSQL), written in the same transaction as
the effects, so each message's effects happen once::

    inbox = await Inbox.open("postgresql://app@db/billing", consumer="billing")
    async with inbox.receive(msg) as tx:
        if tx is not None:
            await tx.execute("INSERT INTO invoices ...", (...))
    await msg.ack()

`consume` runs a durable pull consumer that way, with retries and parking of messages
whose handler keeps failing. Needs nats-py (``pip install 'eventfold[nats]'``) for
`consume`; the inbox itself only reads a message's headers.
"""

from __future__ import annotations

from ..store import InboxSession
from ._consume import Handler, consume
from ._inbox import (
    DEFAULT_RETENTION,
    DEFAULT_TABLE,
    MESSAGE_ID_HEADER,
    Delivery,
    Inbox,
    message_id_of,
)

__all__ = [
    "DEFAULT_RETENTION",
    "DEFAULT_TABLE",
    "MESSAGE_ID_HEADER",
    "Delivery",
    "Handler",
    "Inbox",
    "InboxSession",
    "consume",
    "message_id_of",
]
