"""The HTTP API beside the same work done in process.

- ``append``: single-event appends from ``--clients`` concurrent clients (32), each to a
  stream of its own with ``If-Match: *``, through ``eventfold serve`` (uvicorn, one worker,
  a process of its own) and through ``store.append`` in this process; target ratio
  http/in-process >= 0.5.
- ``read_page``: one 1,000-event page of a stream, over HTTP (``GET
  /streams/{id}/events?limit=1000``, parsed by the client with ``msgspec.json.decode``) and
  in process (``read_stream(limit=1000)``); target: the HTTP time <= 2x the in-process time.
  ``http_json_loads_ms`` is the same read parsed with the standard library's ``json.loads``
  instead, ``http_body_ms`` the time until the body is read, before any parse. Beside them,
  ``plain``: the same page served the plain way by a bare ASGI app under the same uvicorn
  (``read_stream``, each event as a dict of the API's fields, one msgspec encode), the
  baseline of eventfold's own simpler path (``plain_ratio``: plain/in-process;
  ``api_plain_ratio``: http/plain).

  Beside the appends, ``floor``: the same appends through a bare ASGI app under the same uvicorn
  (no framework, no auth, no checks: read the body, one msgspec decode, ``store.append``,
  a JSON answer), the most one uvicorn worker gives on this machine (``floor_ratio``:
  floor/in-process; ``api_floor_ratio``: http/floor, aim >= 0.85). It runs as ``eventfold
  serve`` does: log level info, the default loop and HTTP parser, no access log
  (``--access-log`` turns it on for both). ``http_cpu_us`` and ``floor_cpu_us``: each
  server's CPU time per append (Linux), steadier than rates when other work shares the
  cores; ``api_floor_cpu_ratio`` is floor/http of those.

Runs alternate (HTTP, floor, in process, HTTP, ...) on fresh SQLite files (or fresh PostgreSQL
schemas with ``--url``), and the medians are compared: ``--rounds`` (6) of each append arm
and five times as many page reads of each kind (at 3 rounds, the page's ratio moved by
+/-10% from one run to the next with the in-process read itself). One JSON line per
workload on stdout::

    .venv/bin/python benchmarks/http_api.py [--url postgresql://...] [--rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec

import eventfold
from eventfold.web import hash_token

TOKEN = secrets.token_urlsafe(32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


CREATED: list[str] = []
"""The PostgreSQL schemas this run made, dropped at its end."""


def fresh_url(base: str | None, folder: Path) -> str:
    name = f"bench_{secrets.token_hex(6)}"
    if base is None:
        return f"sqlite:///{folder / (name + '.db')}"
    CREATED.append(name)
    joiner = "&" if "?" in base else "?"
    return f"{base}{joiner}schema={name}"


def drop_created(base: str) -> None:
    import psycopg

    plain = base.split("?")[0]
    with psycopg.connect(plain, autocommit=True) as conn:
        for name in CREATED:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


class _Floor(msgspec.Struct):
    type: str
    data: dict[str, object]


class _FloorIn(msgspec.Struct):
    events: list[_Floor]


def floor_app(store: eventfold.EventStore) -> Callable[..., Awaitable[None]]:
    """A bare ASGI app that appends a request's events (the floor of an HTTP append) and
    serves a page of a stream the plain way (`plain_page`)."""
    decoder = msgspec.json.Decoder(_FloorIn)
    encoder = msgspec.json.Encoder()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    await store.open()
                    await send({"type": "lifespan.startup.complete"})
            await store.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["method"] == "GET":
            answer = b"{}"
            parts = scope["path"].split("/")
            if len(parts) == 4 and parts[1] == "streams" and parts[3] == "events":
                answer = await plain_page(store, parts[2], scope["query_string"], encoder)
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(answer)),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": answer})
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = decoder.decode(b"".join(chunks))
        stream = scope["path"].split("/")[2]
        events = [eventfold.NewEvent(e.data, type=e.type) for e in body.events]
        result = await store.append(stream, events, expected_version=eventfold.ANY)
        answer = encoder.encode({"version": result.version, "position": str(result.position)})
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return app


async def plain_page(
    store: eventfold.EventStore, stream: str, query: bytes, encoder: msgspec.json.Encoder
) -> bytes:
    """A page of ``stream`` as the API writes it, the plain way: `read_stream`, each event
    as a dict of the API's fields, one msgspec encode (no version lookup, no cursor)."""
    limit = int(query.decode().partition("limit=")[2] or 100)
    events = [
        {
            "event_id": str(e.event_id),
            "stream_id": e.stream_id,
            "version": e.version,
            "position": str(e.position),
            "type": e.type,
            "schema_version": e.schema_version,
            "data": e.data,
            "metadata": e.metadata,
            "recorded_at": e.recorded_at.isoformat().replace("+00:00", "Z"),
        }
        async for e in store.read_stream(stream, limit=limit)
    ]
    return encoder.encode({"stream_id": stream, "events": events, "next": None})


def serve_floor(url: str, port: int, access_log: bool) -> None:
    import uvicorn

    store = eventfold.connect(url)
    # As `eventfold serve` runs its app.
    uvicorn.run(
        floor_app(store), host="127.0.0.1", port=port, log_level="info",
        access_log=access_log, workers=1,
    )  # fmt: skip


SERVERS: dict[str, int] = {}
"""The process id of each server this run started, by base URL."""
CPU_US: dict[str, list[float]] = {}
"""The server's CPU time (user + system) per append of each timed run, by base URL."""


def cpu_seconds(pid: int) -> float | None:
    """The CPU time a process has used (Linux: /proc), or None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@asynccontextmanager
async def serve(
    url: str, folder: Path, *, floor: bool = False, access_log: bool = False
) -> AsyncIterator[str]:
    """``eventfold serve`` over ``url`` in a process of its own (with ``floor``, the bare
    ASGI app under uvicorn instead); yields its base URL."""
    tokens = folder / "tokens"
    tokens.write_text(f"write {hash_token(TOKEN)}\n")
    port = free_port()
    command = [
        sys.executable, "-c", "from eventfold.cli import main; main()", "--url", url,
        "serve", "--port", str(port), "--tokens", str(tokens),
    ]  # fmt: skip
    if floor:
        command = [sys.executable, __file__, "--serve-floor", url, "--port", str(port)]
    if access_log:
        command.append("--access-log")
    server = subprocess.Popen(  # noqa: ASYNC220 - once, before any timing
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient() as client:
            while True:
                if server.poll() is not None:
                    raise RuntimeError(server.communicate()[1].decode())
                try:
                    if (await client.get(f"{base}/openapi.json")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("eventfold serve did not start")
                await asyncio.sleep(0.05)
        SERVERS[base] = server.pid
        yield base
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)


class Connection:
    """One keep-alive HTTP/1.1 connection, written and read by hand: httpx spends more CPU
    per request than the server does, and the client shares the machine with it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, base: str) -> Connection:
        host, port = base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer)

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: str = ""
    ) -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\n{headers}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def payload(n: int) -> dict[str, object]:
    return {"order_id": f"o-{n}", "total_cents": n, "note": "x" * 40}


async def http_appends(base: str, clients: int, per_client: int) -> float:
    headers = f"Authorization: Bearer {TOKEN}\r\nIf-Match: *\r\n"
    connections = [await Connection.open(base) for _ in range(clients)]

    async def one(c: int) -> None:
        stream = f"h{secrets.token_hex(4)}-{c}"
        for n in range(per_client):
            body = json.dumps({"events": [{"type": "BenchPlaced", "data": payload(n)}]})
            status, answer = await connections[c].request(
                "POST", f"/streams/{stream}/events", body.encode(), headers
            )
            if status != 201:
                raise RuntimeError(answer.decode())

    try:
        # The server's CPU per append: steadier than its rate on a machine whose cores
        # the client and other work share.
        used = cpu_seconds(SERVERS[base])
        start = time.perf_counter()
        await asyncio.gather(*(one(c) for c in range(clients)))
        took = time.perf_counter() - start
        after = cpu_seconds(SERVERS[base])
        if used is not None and after is not None:
            CPU_US.setdefault(base, []).append((after - used) / (clients * per_client) * 1e6)
        return took
    finally:
        for connection in connections:
            connection.close()


async def local_appends(url: str, clients: int, per_client: int) -> float:
    async with eventfold.connect(url) as store:

        async def one(c: int) -> None:
            stream = f"l{secrets.token_hex(4)}-{c}"
            for n in range(per_client):
                event = eventfold.NewEvent(payload(n), type="BenchPlaced")
                await store.append(stream, [event], expected_version=eventfold.ANY)

        start = time.perf_counter()
        await asyncio.gather(*(one(c) for c in range(clients)))
        return time.perf_counter() - start


async def fill(url: str, stream: str, count: int) -> None:
    async with eventfold.connect(url) as store:
        events = [eventfold.NewEvent(payload(n), type="BenchPlaced") for n in range(count)]
        await store.append(stream, events, expected_version=eventfold.NO_STREAM)


async def alternate(rounds: int, *runs: Callable[[], Awaitable[float]]) -> list[list[float]]:
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(rounds):
        for run, kept in zip(runs, times, strict=True):
            kept.append(await run())
    return times


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", help="a PostgreSQL URL (default: SQLite files)")
    parser.add_argument("--clients", type=int, default=32)
    # 32 x 250 appends: about 0.25 s in process on SQLite, long enough to time steadily
    # (32 x 50 took 50 ms, in which a scheduling hiccup shows).
    parser.add_argument("--per-client", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--access-log", action="store_true", help="uvicorn's access log on, for both servers"
    )
    parser.add_argument("--serve-floor", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


async def main(args: argparse.Namespace) -> None:
    backend = "postgres" if args.url else "sqlite"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        appends = args.clients * args.per_client

        server_url = fresh_url(args.url, folder)
        async with (
            serve(server_url, folder, access_log=args.access_log) as base,
            serve(
                fresh_url(args.url, folder), folder, floor=True, access_log=args.access_log
            ) as floor_base,
        ):
            http_t, floor_t, local_t = await alternate(
                args.rounds,
                lambda: http_appends(base, args.clients, args.per_client),
                lambda: http_appends(floor_base, args.clients, args.per_client),
                lambda: local_appends(fresh_url(args.url, folder), args.clients, args.per_client),
            )
        http_cpu = statistics.median(CPU_US[base]) if base in CPU_US else None
        floor_cpu = statistics.median(CPU_US[floor_base]) if floor_base in CPU_US else None
        http_rate = appends / statistics.median(http_t)
        floor_rate = appends / statistics.median(floor_t)
        local_rate = appends / statistics.median(local_t)
        print(json.dumps({
            "workload": "http_append", "backend": backend, "clients": args.clients,
            "appends": appends, "http_per_s": round(http_rate, 1),
            "floor_per_s": round(floor_rate, 1), "in_process_per_s": round(local_rate, 1),
            "access_log": args.access_log,
            "ratio": round(http_rate / local_rate, 3), "target": ">= 0.5",
            "floor_ratio": round(floor_rate / local_rate, 3),
            "api_floor_ratio": round(http_rate / floor_rate, 3), "api_floor_target": ">= 0.85",
            "http_cpu_us": None if http_cpu is None else round(http_cpu, 1),
            "floor_cpu_us": None if floor_cpu is None else round(floor_cpu, 1),
            "api_floor_cpu_ratio": (
                round(floor_cpu / http_cpu, 3) if http_cpu and floor_cpu is not None else None
            ),
            "http_s": [round(t, 4) for t in http_t],
            "floor_s": [round(t, 4) for t in floor_t],
            "in_process_s": [round(t, 4) for t in local_t],
            "load_1m": round(os.getloadavg()[0], 2),
        }), flush=True)  # fmt: skip

        server_url = fresh_url(args.url, folder)
        plain_url = fresh_url(args.url, folder)
        async with (
            serve(server_url, folder) as base,
            serve(plain_url, folder, floor=True) as plain_base,
        ):
            await fill(server_url, "page-1", 1000)
            await fill(plain_url, "page-1", 1000)
            local_url = fresh_url(args.url, folder)
            await fill(local_url, "page-1", 1000)
            connection = await Connection.open(base)
            plain_connection = await Connection.open(plain_base)
            async with eventfold.connect(local_url) as store:
                # Of each HTTP read, the time until its body was read (before it is parsed),
                # and that time plus a parse with the standard library's json.loads.
                received: list[float] = []
                with_json: list[float] = []
                sizes: list[int] = []

                async def http_page() -> float:
                    start = time.perf_counter()
                    _, answer = await connection.request("GET", "/streams/page-1/events?limit=1000")
                    got = time.perf_counter()
                    events = msgspec.json.decode(answer)["events"]
                    took = time.perf_counter() - start
                    assert len(events) == 1000
                    received.append(got - start)
                    sizes.append(len(answer))
                    again = time.perf_counter()
                    assert len(json.loads(answer)["events"]) == 1000
                    with_json.append(got - start + time.perf_counter() - again)
                    return took

                async def plain_read() -> float:
                    start = time.perf_counter()
                    _, answer = await plain_connection.request(
                        "GET", "/streams/page-1/events?limit=1000"
                    )
                    events = msgspec.json.decode(answer)["events"]
                    took = time.perf_counter() - start
                    assert len(events) == 1000
                    return took

                async def local_page() -> float:
                    start = time.perf_counter()
                    events = [e async for e in store.read_stream("page-1", limit=1000)]
                    took = time.perf_counter() - start
                    assert len(events) == 1000
                    return took

                await http_page()
                await plain_read()
                await local_page()  # warm all three
                http_t, plain_t, local_t = await alternate(
                    args.rounds * 5, http_page, plain_read, local_page
                )
            connection.close()
            plain_connection.close()
            h, loc = statistics.median(http_t), statistics.median(local_t)
            pl = statistics.median(plain_t)
            print(json.dumps({
                "workload": "http_read_page", "backend": backend, "events": 1000,
                "http_ms": round(h * 1000, 3), "in_process_ms": round(loc * 1000, 3),
                "http_body_ms": round(statistics.median(received[2:]) * 1000, 3),
                "http_json_loads_ms": round(statistics.median(with_json[2:]) * 1000, 3),
                "body_bytes": sizes[-1],
                "ratio": round(h / loc, 3), "target": "<= 2",
                "plain_ms": round(pl * 1000, 3), "plain_ratio": round(pl / loc, 3),
                "api_plain_ratio": round(h / pl, 3),
                "load_1m": round(os.getloadavg()[0], 2),
            }), flush=True)  # fmt: skip


if __name__ == "__main__":
    given = arguments()
    if given.serve_floor:
        serve_floor(given.serve_floor, given.port, given.access_log)
        sys.exit()
    try:
        asyncio.run(main(given))
    finally:
        if CREATED:
            drop_created(given.url)
