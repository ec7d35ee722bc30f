"""What the machine itself costs, measured beside each workload: the floors under its figures.

A durable commit cannot be faster than the disk's flush, and a PostgreSQL command cannot be
faster than its round trips. Both move a lot on a virtual machine from one minute to the
next, so each JSON line carries them as measured just before its workload ran:

- ``flush_us`` (SQLite): the median of 4 KiB written over existing data of a file in the
  benchmark's folder followed by ``fdatasync``: what a WAL commit with
  ``synchronous=FULL`` waits for at the least.
- ``roundtrip_us`` (PostgreSQL): the median ``SELECT 1`` through psycopg's async
  connection, the driver both eventfold and the raw baseline use.
- ``commit_us`` (PostgreSQL): the median autocommit one-row ``INSERT`` into a plain table
  in a scratch schema: a round trip plus the WAL flush of a commit.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from typing import Any

__all__ = ["probe"]

_FLUSHES = 200
_TRIPS = 500
_BLOCK = 4096


async def probe(backend: str, url: str | None, tmpdir: str | None) -> dict[str, float]:
    """The machine's floors for ``backend`` (empty for memory)."""
    if backend == "sqlite":
        return {"flush_us": _flush_us(tmpdir)}
    if backend == "postgres":
        assert url is not None
        return await _postgres_us(url)
    return {}


def _median_us(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1e6, 1)


def _flush_us(tmpdir: str | None) -> float:
    folder = tempfile.mkdtemp(prefix="eventfold-probe-", dir=tmpdir)
    try:
        fd = os.open(os.path.join(folder, "flush"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            slots = 64
            os.write(fd, b"\0" * _BLOCK * slots)
            os.fsync(fd)
            block = b"x" * _BLOCK
            samples = []
            clock = time.perf_counter
            for i in range(_FLUSHES):
                os.lseek(fd, (i % slots) * _BLOCK, os.SEEK_SET)
                start = clock()
                os.write(fd, block)
                os.fdatasync(fd)
                samples.append(clock() - start)
        finally:
            os.close(fd)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return _median_us(samples)


async def _postgres_us(url: str) -> dict[str, float]:
    import psycopg

    from raw import split_schema

    conninfo, _ = split_schema(url)
    clock = time.perf_counter
    conn: psycopg.AsyncConnection[Any] = await psycopg.AsyncConnection.connect(
        conninfo, autocommit=True
    )
    async with conn:
        trips = []
        for _ in range(_TRIPS):
            start = clock()
            await (await conn.execute("SELECT 1")).fetchall()
            trips.append(clock() - start)
        # Temporary and unlogged tables skip the WAL, the part to measure: so a plain
        # table, in a scratch schema dropped afterwards.
        schema = f"probe_{os.getpid()}_{int(time.time() * 1000)}"
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            await conn.execute(f'CREATE TABLE "{schema}".t (n int)')
            insert = f'INSERT INTO "{schema}".t VALUES (%s)'.encode()
            commits = []
            for i in range(_TRIPS):
                start = clock()
                await conn.execute(insert, (i,))
                commits.append(clock() - start)
        finally:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    return {"roundtrip_us": _median_us(trips), "commit_us": _median_us(commits)}
