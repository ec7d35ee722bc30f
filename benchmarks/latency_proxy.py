"""A TCP proxy that adds a network's latency: what a store does in round trips shows.

On this machine PostgreSQL answers over loopback in tens of microseconds, so a read that
waits for two round trips instead of one looks no slower. Put this proxy between eventfold
and the server and every chunk of bytes waits ``--delay-ms`` in each direction (1 ms: a
round trip of 2 ms, as between two availability zones)::

    .venv/bin/python benchmarks/latency_proxy.py --listen 55432 --to 5432 --delay-ms 1 &
    .venv/bin/python benchmarks/http_api.py --url postgresql://postgres@127.0.0.1:55432/test

Bytes are forwarded in order, each chunk once its delay is over; the proxy adds no
bandwidth limit and little CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib


async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds later, then close it."""
    loop = asyncio.get_running_loop()
    # A peer that resets the connection ends the copy, as it would end the connection.
    with contextlib.suppress(ConnectionError):
        try:
            while data := await reader.read(1 << 16):
                loop.call_later(delay, writer.write, data)
            await asyncio.sleep(delay)  # the last chunk goes out before the close
        finally:
            writer.close()


async def serve(listen: int, to_host: str, to_port: int, delay: float) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(to_host, to_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(forward(client_r, server_w, delay), forward(server_r, client_w, delay))

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--listen", type=int, required=True, help="the port to listen on")
    parser.add_argument("--to", type=int, required=True, help="the server's port")
    parser.add_argument("--host", default="127.0.0.1", help="the server's host")
    parser.add_argument("--delay-ms", type=float, default=1.0, help="each way (default 1)")
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.host, args.to, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
