"""A test client for the HTTP API: the app over one store, in process (httpx + ASGI)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

import eventfold
import eventfold.privacy
from eventfold.projections import ProjectionBase
from eventfold.testing import settle
from eventfold.web import Limits, create_app, hash_token

READ, WRITE, ADMIN = "read-token", "write-token", "admin-token"
TOKENS = {hash_token(READ): "read", hash_token(WRITE): "write", hash_token(ADMIN): "admin"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Web:
    """A client of the app, and the store under it."""

    http: httpx.AsyncClient
    store: eventfold.EventStore

    async def append(
        self,
        stream: str,
        events: list[dict[str, Any]],
        *,
        if_match: str = "*",
        token: str = WRITE,
    ) -> httpx.Response:
        headers = {**bearer(token), "If-Match": if_match}
        return await self.http.post(
            f"/streams/{stream}/events", json={"events": events}, headers=headers
        )

    async def settled(self, response: httpx.Response) -> None:
        """Wait until the appended events are readable in the log (PostgreSQL)."""
        await settle(self.store, eventfold.Position.parse(response.json()["position"]))


@asynccontextmanager
async def serving(
    url: str,
    *,
    projections: tuple[ProjectionBase, ...] = (),
    limits: Limits | None = None,
    read_token: bool = False,
    privacy: bool = False,
) -> AsyncIterator[Web]:
    async with eventfold.connect(url) as store:
        app = create_app(
            store,
            projections=projections,
            tokens=TOKENS,
            limits=limits,
            read_token=read_token,
            privacy=eventfold.privacy.enable(store, cache_seconds=0) if privacy else None,
        )
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
                yield Web(http, store)
        finally:
            await app.state.eventfold.close()
