"""The relay: the event log (and the outbox) delivered to a message bus, in order per
stream, at least once, checkpointed in the store's database.

- `Relay`: a checkpointed subscription over the global log delivering through a sink;
  one active relay per destination across processes (leases), poison messages park
  their stream only, a bus that is down is waited for.
- `Sink`: the small interface a bus implements (`Message` in, an ack out);
  `NatsJetStreamSink` (``pip install 'eventfold[nats]'``) and `InProcessSink`.
- `relay_status`, `relay_parked`, `replay_parked`: lag, parked messages, replays
  (``eventfold relay status|parked|replay``).
"""

from __future__ import annotations

import typing

from ._relay import EVENTS, OUTBOX, Relay, RelayOptions, header_value
from ._sink import InProcessSink, Message, Sink
from ._status import RelayStatus, ReplayResult, relay_parked, relay_status, replay_parked
from ._subjects import subject_token, token_text

if typing.TYPE_CHECKING:
    from ._nats import NatsJetStreamSink

__all__ = [
    "EVENTS",
    "OUTBOX",
    "InProcessSink",
    "Message",
    "NatsJetStreamSink",
    "Relay",
    "RelayOptions",
    "RelayStatus",
    "ReplayResult",
    "Sink",
    "header_value",
    "relay_parked",
    "relay_status",
    "replay_parked",
    "subject_token",
    "token_text",
]


def __getattr__(name: str) -> typing.Any:
    if name == "NatsJetStreamSink":
        from ._nats import NatsJetStreamSink

        return NatsJetStreamSink
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
