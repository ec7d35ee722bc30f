"""Server-Sent Events: how long an appended event takes to reach every live subscriber.

``--clients`` (100) connections follow ``GET /subscribe`` on ``eventfold serve``
(uvicorn, one worker, a process of its own); then ``--appends`` single-event appends are
made over HTTP, one at a time, each once every client has received the one before. The
latency of one delivery is from just before the append request is written to when a
client has read the event's frame; p50/p99/max are over every (append, client) pair.
Target: p99 <= 100 ms. One JSON line on stdout::

    .venv/bin/python benchmarks/http_sse.py [--url postgresql://...] [--clients 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from http_api import CREATED, TOKEN, Connection, drop_created, fresh_url, serve


class Subscriber:
    """One ``/subscribe`` connection; notes when each event id arrives."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def run(self, base: str, ready: asyncio.Event, count: list[int], total: int) -> None:
        host, port = base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /subscribe HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
        try:
            while (line := await reader.readline()) not in (b"\r\n", b""):
                pass
            while True:
                line = await reader.readline()
                if not line:
                    return
                if line.startswith(b"retry:"):
                    count[0] += 1
                    if count[0] == total:
                        ready.set()
                elif line.startswith(b"id: "):
                    self.seen[line[4:].strip().decode()] = time.perf_counter()
                    self.changed.set()
        finally:
            writer.close()


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", help="a PostgreSQL URL (default: a SQLite file)")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--appends", type=int, default=50)
    return parser.parse_args()


async def main(args: argparse.Namespace) -> None:
    backend = "postgres" if args.url else "sqlite"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        async with serve(fresh_url(args.url, folder), folder) as base:
            ready = asyncio.Event()
            count = [0]
            subscribers = [Subscriber() for _ in range(args.clients)]
            for s in subscribers:
                s.task = asyncio.create_task(s.run(base, ready, count, args.clients))
            await asyncio.wait_for(ready.wait(), 30)
            writer = await Connection.open(base)
            headers = f"Authorization: Bearer {TOKEN}\r\nIf-Match: *\r\n"
            latencies: list[float] = []
            for n in range(args.appends):
                body = json.dumps({"events": [{"type": "BenchPlaced", "data": {"n": n}}]})
                start = time.perf_counter()
                status, answer = await writer.request(
                    "POST", "/streams/sse-1/events", body.encode(), headers
                )
                if status != 201:
                    raise RuntimeError(answer.decode())
                at = json.loads(answer)["position"]
                deadline = time.monotonic() + 10
                for s in subscribers:
                    while at not in s.seen:
                        s.changed.clear()
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise RuntimeError(f"event {at} did not reach every subscriber")
                        await asyncio.wait_for(s.changed.wait(), left)
                    latencies.append(s.seen[at] - start)
            writer.close()
            for s in subscribers:
                assert s.task is not None
                s.task.cancel()
            await asyncio.gather(*(s.task for s in subscribers if s.task), return_exceptions=True)
    latencies.sort()
    ms = [t * 1000 for t in latencies]
    print(json.dumps({
        "workload": "sse_fanout", "backend": backend, "clients": args.clients,
        "appends": args.appends, "deliveries": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
        "max_ms": round(ms[-1], 2), "target": "p99 <= 100",
        "load_1m": round(os.getloadavg()[0], 2),
    }), flush=True)  # fmt: skip


if __name__ == "__main__":
    given = arguments()
    try:
        asyncio.run(main(given))
    finally:
        if CREATED:
            drop_created(given.url)
