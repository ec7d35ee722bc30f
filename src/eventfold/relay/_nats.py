"""`NatsJetStreamSink`: deliver to a NATS JetStream stream with nats-py (``eventfold[nats]``).

Messages go out pipelined, as ``publish_async`` sends them (a publish with a reply
subject; many in flight on one connection, at most ``max_in_flight``), each with
``Nats-Msg-Id`` = the message's id, so a copy sent
again inside the stream's duplicate window is dropped by the server (its ack says
``duplicate``). The stream is created on `open` when it does not exist (subjects
``subjects``, duplicate window ``duplicate_window`` seconds); an existing one is used as
it is.

The acks are matched here rather than by nats-py's ``publish_async``: in nats-py 2.16 a
JetStream error reply (a message the stream refuses) raises inside its reply callback
and leaves the publish's future pending forever, so a rejected message would look like
a timeout and never park.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import Any

from ..errors import ConfigurationError, SinkRejected, SinkUnavailable
from ._sink import Message

__all__ = ["NatsJetStreamSink"]

MSG_ID = "Nats-Msg-Id"

_EXPIRED: dict[str, Any] = {"error": {"code": 0, "description": "expired"}}
_CLOSED: dict[str, Any] = {"error": {"code": 0, "description": "closed"}}
"""Sentinel replies (compared by identity) for an ack that timed out or a closed sink."""


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
        self._inbox: str | None = None
        self._futures: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._slots = asyncio.Semaphore(max_in_flight)
        self._idle = asyncio.Event()
        self._idle.set()
        self._token = 0
        self._deadlines: deque[tuple[float, str]] = deque()
        self._sweeper: asyncio.Task[None] | None = None

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
                max_reconnect_attempts=2,
                reconnect_time_wait=0.5,
            )
        except Exception as exc:
            raise SinkUnavailable(
                f"cannot connect to NATS at {where}: {type(exc).__name__}: {exc}"
            ) from exc
        js = nc.jetstream()
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
        inbox = nc.new_inbox()
        await nc.subscribe(f"{inbox}.*", cb=self._on_reply)
        self._nc, self._js, self._inbox = nc, js, inbox
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def send(self, message: Message) -> Awaitable[None]:
        nc = self._nc
        if nc is None or self._inbox is None:
            raise SinkUnavailable("the NATS sink is not connected")
        nats = _nats()
        headers = dict(message.headers)
        headers[MSG_ID] = message.message_id
        await self._slots.acquire()
        self._token += 1
        token = str(self._token)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._futures[token] = future
        self._deadlines.append((asyncio.get_running_loop().time() + self.ack_timeout, token))
        future.add_done_callback(lambda _: self._release(token))
        try:
            await nc.publish(
                message.subject, message.payload, reply=f"{self._inbox}.{token}", headers=headers
            )
        except nats.errors.MaxPayloadError as exc:
            future.set_result(_CLOSED)
            raise SinkRejected(message.subject, message.message_id, str(exc)) from exc
        except Exception as exc:
            future.set_result(_CLOSED)
            raise SinkUnavailable(f"cannot publish to NATS ({type(exc).__name__}: {exc})") from exc
        return self._ack(future, message)

    def _release(self, token: str) -> None:
        if self._futures.pop(token, None) is not None:
            self._slots.release()
            if not self._futures:
                self._idle.set()

    async def _on_reply(self, msg: Any) -> None:
        future = self._futures.get(msg.subject.rpartition(".")[2])
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            future.set_result({"error": {"code": 503, "description": "no responders"}})
            return
        try:
            future.set_result(json.loads(msg.data))
        except ValueError:
            future.set_result({"error": {"code": 500, "description": "unreadable ack"}})

    async def _ack(self, future: asyncio.Future[dict[str, Any]], message: Message) -> None:
        reply = await future
        if reply is _EXPIRED:
            raise SinkUnavailable(
                f"JetStream did not acknowledge message {message.message_id} on "
                f"{message.subject!r} within {self.ack_timeout:g} s"
            )
        if reply is _CLOSED:
            raise SinkUnavailable(
                f"the connection to NATS closed before message {message.message_id} was "
                "acknowledged"
            )
        error = reply.get("error")
        if error is None:
            return
        code = int(error.get("code") or 0)
        text = f"{error.get('description', 'error')} (code {code}, {error.get('err_code')})"
        if code == 503 and error.get("description") == "no responders":
            raise SinkUnavailable(
                f"no JetStream stream captures subject {message.subject!r} (or JetStream is "
                f"not running); the sink's stream {self.stream!r} takes {self.subjects}"
            )
        if code >= 500:
            raise SinkUnavailable(f"JetStream answered {text}")
        raise SinkRejected(message.subject, message.message_id, text)

    async def _sweep(self) -> None:
        """Expire acks older than ``ack_timeout`` (one timer for all, not one each)."""
        loop = asyncio.get_running_loop()
        step = max(self.ack_timeout / 4, 0.01)
        while True:
            await asyncio.sleep(step)
            now = loop.time()
            while self._deadlines and self._deadlines[0][0] <= now:
                _, token = self._deadlines.popleft()
                future = self._futures.get(token)
                if future is not None and not future.done():
                    future.set_result(_EXPIRED)

    async def flush(self) -> None:
        await self._idle.wait()

    async def close(self) -> None:
        nc, self._nc, self._js, self._inbox = self._nc, None, None, None
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for future in list(self._futures.values()):
            if not future.done():
                future.set_result(_CLOSED)
        self._deadlines.clear()
        if nc is not None:
            with contextlib.suppress(Exception):  # a broken connection: nothing to do
                await nc.close()
