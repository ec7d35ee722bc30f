"""The latency proxy forwards bytes in order, each way after its delay."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

PROXY = Path(__file__).resolve().parent.parent / "benchmarks" / "latency_proxy.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_the_proxy_delays_each_way_and_keeps_the_bytes() -> None:
    handled: list[asyncio.Future[None]] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        done = asyncio.get_running_loop().create_future()
        handled.append(done)
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
        finally:
            writer.close()
            done.set_result(None)

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    target = server.sockets[0].getsockname()[1]
    listen = _free_port()
    proxy = subprocess.Popen(  # noqa: ASYNC220 - started once, before any timing
        [sys.executable, str(PROXY), "--listen", str(listen), "--to", str(target),
         "--delay-ms", "50"]
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", listen)
                break
            except OSError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the proxy did not start")
        payload = bytes(range(256)) * 1000
        start = time.perf_counter()
        writer.write(payload)
        echoed = await asyncio.wait_for(reader.readexactly(len(payload)), 10)
        took = time.perf_counter() - start
        assert echoed == payload
        assert took >= 0.1  # 50 ms there and 50 ms back
        writer.close()
        await writer.wait_closed()
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
        # Every connection the echo server took is closed before the loop is: a stream
        # left open warns when it is collected, in whatever test runs then.
        await asyncio.wait_for(asyncio.gather(*handled), 10)
        server.close()
        await server.wait_closed()
