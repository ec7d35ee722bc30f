"""`NatsJetStreamSink`: deliver to a NATS JetStream stream with nats-py (``eventfold[nats]``).

Messages go out with ``publish_async`` (pipelined: many in flight on one connection, at
most ``max_in_flight``), each with ``Nats-Msg-Id`` = the message's id, so a copy sent
again inside the stream's duplicate window is dropped by the server (its ack says
``duplicate``). The stream is created on `open` when it does not exist (subjects
``subjects``, duplicate window ``duplicate_window`` seconds); an existing one is used as
it is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Sequence
from typing import Any

from ..errors import ConfigurationError, SinkRejected, SinkUnavailable
from ._sink import Message

__all__ = ["NatsJetStreamSink"]

MSG_ID = "Nats-Msg-Id"


def _nats() -> Any:
    try:
        import nats
        import nats.errors
        import nats.js.errors
    except ImportError:  # pragma: no cover - depends on the install
        raise ConfigurationError(
            "NatsJetStreamSink needs nats-py: pip install 'eventfold[nats]'"
        ) from None
    return nats


class NatsJetStreamSink:
    """A `Sink` publishing to JetStream stream ``stream`` on the server(s) at ``servers``.

    ``ack_timeout``: seconds to wait for a message's ack before the send counts as failed
    (`SinkUnavailable`; the relay sends it again). ``subjects`` default to every subject
    (``>``) is not allowed by JetStream, so give the relay's prefix, e.g. ``["orders.>"]``.
    """

    name = "nats"

    def __init__(
        self,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        *,
        stream: str,
        subjects: Sequence[str],
        duplicate_window: float = 120.0,
        max_in_flight: int = 4000,
        ack_timeout: float = 5.0,
        connect_timeout: float = 2.0,
        create_stream: bool = True,
    ) -> None:
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.stream = stream
        self.subjects = list(subjects)
        self.duplicate_window = duplicate_window
        self.max_in_flight = max_in_flight
        self.ack_timeout = ack_timeout
        self.connect_timeout = connect_timeout
        self.create_stream = create_stream
        self._nc: Any = None
        self._js: Any = None

    def __repr__(self) -> str:
        return f"NatsJetStreamSink({', '.join(self.servers)}, stream={self.stream!r})"

    async def open(self) -> None:
        nats = _nats()
        if self._nc is not None and self._nc.is_connected:
            return
        await self.close()
        where = ", ".join(self.servers)
        try:
            nc = await nats.connect(
                self.servers,
                connect_timeout=self.connect_timeout,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
            )
        except Exception as exc:
            raise SinkUnavailable(
                f"cannot connect to NATS at {where}: {type(exc).__name__}: {exc}"
            ) from exc
        js = nc.jetstream(publish_async_max_pending=self.max_in_flight)
        try:
            await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            if not self.create_stream:
                await nc.close()
                raise ConfigurationError(
                    f"JetStream has no stream {self.stream!r} at {where}; create it, or let "
                    "the sink create it (create_stream=True)"
                ) from None
            try:
                await js.add_stream(
                    name=self.stream,
                    subjects=self.subjects,
                    duplicate_window=self.duplicate_window,
                )
            except Exception as exc:
                await nc.close()
                raise SinkUnavailable(
                    f"cannot create JetStream stream {self.stream!r} at {where}: {exc}"
                ) from exc
        except Exception as exc:
            await nc.close()
            raise SinkUnavailable(
                f"JetStream at {where} does not answer ({type(exc).__name__}: {exc})"
            ) from exc
        self._nc, self._js = nc, js

    async def send(self, message: Message) -> Awaitable[None]:
        nats = _nats()
        js = self._js
        if js is None:
            raise SinkUnavailable("the NATS sink is not connected")
        headers = dict(message.headers)
        headers[MSG_ID] = message.message_id
        try:
            future = await js.publish_async(message.subject, message.payload, headers=headers)
        except nats.errors.MaxPayloadError as exc:
            raise SinkRejected(message.subject, message.message_id, str(exc)) from exc
        except Exception as exc:
            raise SinkUnavailable(f"cannot publish to NATS ({type(exc).__name__}: {exc})") from exc
        return self._ack(future, message)

    async def _ack(self, future: asyncio.Future[Any], message: Message) -> None:
        nats = _nats()
        try:
            async with asyncio.timeout(self.ack_timeout):
                await future
        except TimeoutError:
            future.cancel()
            raise SinkUnavailable(
                f"JetStream did not acknowledge message {message.message_id} on "
                f"{message.subject!r} within {self.ack_timeout:g} s"
            ) from None
        except nats.js.errors.NoStreamResponseError:
            raise SinkUnavailable(
                f"no JetStream stream captures subject {message.subject!r} (or JetStream is "
                f"not running); the sink's stream {self.stream!r} takes {self.subjects}"
            ) from None
        except nats.js.errors.APIError as exc:
            code = getattr(exc, "code", None) or 0
            if code >= 500:
                raise SinkUnavailable(f"JetStream answered {exc}") from exc
            raise SinkRejected(message.subject, message.message_id, str(exc)) from exc

    async def flush(self) -> None:
        if self._js is not None and self._js.publish_async_pending():
            await self._js.publish_async_completed()

    async def close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(Exception):  # a broken connection: nothing to do
                await nc.close()
