"""The bank account of ``bank.py`` behind FastAPI, with plain ``def`` endpoints.

FastAPI runs a ``def`` endpoint on a thread of its pool, so it may block: here each one
calls the `eventfold.sync` store and command handler, shared by every thread. (An
``async def`` endpoint would await `eventfold.connect`'s store instead.) The store opens
and closes with the app's lifespan.

Run it: ``uvicorn sync_fastapi:app`` from ``examples/`` (the store at ``$EVENTFOLD_URL``,
default ``sqlite:///eventfold.db``), or build one with ``create_app(url)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
import msgspec
from bank import BankError, Deposit, OpenAccount, Withdraw, account
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

import eventfold
import eventfold.sync


class Opening(BaseModel):
    owner: str = Field(min_length=1)


class Amount(BaseModel):
    amount: int = Field(gt=0)


class Outcome(BaseModel):
    version: int
    balance: int
    position: str | None


class AccountState(BaseModel):
    owner: str
    balance: int
    version: int


class EventLine(BaseModel):
    version: int
    type: str
    data: dict[str, object]


def create_app(url: str | None = None) -> FastAPI:
    """The app; its store (``url``, default ``$EVENTFOLD_URL``) is open while it runs."""
    store = eventfold.sync.connect(url)
    handler = eventfold.sync.CommandHandler(store, account)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Opening blocks (it may create the tables): not on the server's event loop.
        await anyio.to_thread.run_sync(store.open)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(store.close)

    app = FastAPI(title="bank", lifespan=lifespan)
    app.state.store = store

    def run(account_id: str, command: OpenAccount | Deposit | Withdraw, key: str | None) -> Outcome:
        result = handler.handle(f"account-{account_id}", command, command_id=key)
        position = str(result.position) if result.position else None
        return Outcome(version=result.version, balance=result.state.balance, position=position)

    @app.post("/accounts/{account_id}/open")
    def open_account(
        account_id: str, body: Opening, idempotency_key: str | None = Header(default=None)
    ) -> Outcome:
        return run(account_id, OpenAccount(owner=body.owner), idempotency_key)

    @app.post("/accounts/{account_id}/deposits")
    def deposit(
        account_id: str, body: Amount, idempotency_key: str | None = Header(default=None)
    ) -> Outcome:
        return run(account_id, Deposit(amount=body.amount), idempotency_key)

    @app.post("/accounts/{account_id}/withdrawals")
    def withdraw(
        account_id: str, body: Amount, idempotency_key: str | None = Header(default=None)
    ) -> Outcome:
        return run(account_id, Withdraw(amount=body.amount), idempotency_key)

    @app.get("/accounts/{account_id}")
    def state(account_id: str) -> AccountState:
        loaded = handler.load_details(f"account-{account_id}")
        if loaded.version == 0:
            raise HTTPException(404, "no such account")
        now = loaded.state
        return AccountState(owner=now.owner, balance=now.balance, version=loaded.version)

    @app.get("/accounts/{account_id}/events")
    def events(account_id: str) -> list[EventLine]:
        return [
            EventLine(version=e.version, type=e.type, data=msgspec.to_builtins(e.data))
            for e in store.read_stream(f"account-{account_id}")
        ]

    @app.exception_handler(BankError)
    def refused(request: Request, exc: BankError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(eventfold.ConcurrencyError)
    def conflict(request: Request, exc: eventfold.ConcurrencyError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(eventfold.InvalidInput)
    def bad_input(request: Request, exc: eventfold.InvalidInput) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    return app


app = create_app()
