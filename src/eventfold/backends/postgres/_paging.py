"""Keyset paging for `PostgresStore`'s readers, one page ahead: the next page is asked
for before this one is handed over, so the server reads and sends it while the caller
decodes (one connection at a time per reader, and no page waits for a round trip)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Final

__all__ = ["PAGE", "Pager", "Rows"]

PAGE: Final = 2000
"""Rows per round trip for the paging readers. Pages overlap (see `Pager.pages`), so a
small page loses nothing to round trips and starts the overlap early; memory stays flat."""

Rows = list[tuple[Any, ...]]


class Pager:
    """Runs the pages of keyset queries through ``fetch`` (the store's `fetch_rows`),
    holding every page in flight until it is done, even when its reader is gone."""

    def __init__(self, fetch: Callable[[bytes, Any], Awaitable[Rows]]) -> None:
        self._fetch = fetch
        self._fetching: set[asyncio.Task[Rows]] = set()

    async def settle(self) -> None:
        """Wait for the pages still in flight (before the pool closes)."""
        await asyncio.gather(*self._fetching, return_exceptions=True)

    async def pages(
        self,
        query: bytes,
        params: dict[str, Any],
        limit: int | None,
        advance: Callable[[tuple[Any, ...]], None],
        *,
        then: bytes | None = None,
    ) -> AsyncGenerator[Rows, None]:
        """Pages of a keyset query, up to ``limit`` rows in all (``then``, if given, is
        the query for the pages after the first); ``advance`` moves ``params`` past a
        page's last row."""
        remaining = limit

        def start() -> tuple[int, asyncio.Task[Rows]]:
            size = PAGE if remaining is None else min(PAGE, remaining)
            return size, self._prefetch(query, {**params, "n": size})

        if remaining == 0:
            return
        # A reader that stops early leaves its last page to finish in the background
        # (milliseconds): cancelling a query midway would cost the pool its connection.
        size, task = start()
        while True:
            rows = await task
            if remaining is not None:
                remaining -= len(rows)
            more = len(rows) == size and (remaining is None or remaining > 0)
            if more:
                advance(rows[-1])
                if then is not None:
                    query = then
                size, task = start()
                await asyncio.sleep(0)  # let it put the query on the wire
            yield rows
            if not more:
                return

    def _prefetch(self, query: bytes, params: dict[str, Any]) -> asyncio.Task[Rows]:
        task = asyncio.ensure_future(self._fetch(query, params))
        self._fetching.add(task)  # held until done, even when its reader is gone
        task.add_done_callback(self._fetched)
        return task

    def _fetched(self, task: asyncio.Task[Rows]) -> None:
        self._fetching.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved, so an unread page's error is not logged
