"""The bank account of ``bank.py`` behind a Flask app, on the blocking API.

Flask's views are plain functions, served by several threads at once: they share one
`eventfold.sync` store and one command handler. A projection daemon runs in the same
process here (a larger deployment runs it on its own), and the balance view reads its
documents with read-your-writes: ``?after=`` the position a command returned.

Run it: ``python examples/sync_flask.py [STORE_URL]`` (default: a fresh SQLite file), then
``curl -XPOST localhost:5000/accounts/a-1/open -d '{"owner": "ann"}' -H 'content-type:
application/json'``.
"""

from __future__ import annotations

import sys
import tempfile
from typing import Any

import msgspec
from bank import (
    Account,
    AccountOpened,
    BankError,
    Deposit,
    Deposited,
    OpenAccount,
    Withdraw,
    Withdrawn,
    account,
)
from flask import Flask, Response, jsonify, request

import eventfold
import eventfold.sync
from eventfold.projections import DocumentProjection


class Balance(msgspec.Struct):
    owner: str = ""
    balance: int = 0
    movements: int = 0


def balances() -> DocumentProjection[Balance]:
    """Each account's balance as a stored document, kept by the projection daemon."""
    p = DocumentProjection("balances", document=Balance, categories=["account"])

    @p.on(AccountOpened)
    def opened(doc: Balance, e: eventfold.RecordedEvent) -> Balance:
        return Balance(owner=e.data.owner)

    @p.on(Deposited, Withdrawn)
    def moved(doc: Balance, e: eventfold.RecordedEvent) -> Balance:
        sign = 1 if isinstance(e.data, Deposited) else -1
        return Balance(doc.owner, doc.balance + sign * e.data.amount, doc.movements + 1)

    return p


def create_app(url: str) -> Flask:
    """The app, with its store open and its projection running until `close_app`."""
    store = eventfold.sync.connect(url)
    store.open()
    models = eventfold.sync.read_models_for(store)
    projection = balances()
    daemon = eventfold.sync.ProjectionDaemon(store, models, [projection])
    daemon.start()
    handler = eventfold.sync.CommandHandler(store, account)
    view = eventfold.sync.DocumentView(models, projection, store=store)

    app = Flask(__name__)
    app.extensions["eventfold"] = (store, daemon)

    def run(account_id: str, command: OpenAccount | Deposit | Withdraw) -> Response:
        result = handler.handle(
            account_id, command, command_id=request.headers.get("Idempotency-Key")
        )
        return jsonify(
            version=result.version,
            balance=result.state.balance,
            position=str(result.position) if result.position else None,
        )

    @app.post("/accounts/<account_id>/open")
    def open_account(account_id: str) -> Response:
        return run(f"account-{account_id}", OpenAccount(owner=str(_field("owner"))))

    @app.post("/accounts/<account_id>/deposits")
    def deposit(account_id: str) -> Response:
        return run(f"account-{account_id}", Deposit(amount=_amount()))

    @app.post("/accounts/<account_id>/withdrawals")
    def withdraw(account_id: str) -> Response:
        return run(f"account-{account_id}", Withdraw(amount=_amount()))

    @app.get("/accounts/<account_id>")
    def state(account_id: str) -> Response | tuple[Response, int]:
        loaded = handler.load_details(f"account-{account_id}")
        if loaded.version == 0:
            return jsonify(error="no such account"), 404
        now: Account = loaded.state
        return jsonify(owner=now.owner, balance=now.balance, version=loaded.version)

    @app.get("/accounts/<account_id>/events")
    def events(account_id: str) -> Response:
        stream = store.read_stream(f"account-{account_id}")
        return jsonify([{"version": e.version, "type": e.type} for e in stream])

    @app.get("/balances/<account_id>")
    def balance(account_id: str) -> Response | tuple[Response, int]:
        # Read-your-writes: wait (up to 5 s) until the projection has seen `after`.
        doc = view.get(f"account-{account_id}", after=request.args.get("after"))
        if doc is None:
            return jsonify(error="no such account"), 404
        return jsonify(msgspec.to_builtins(doc))

    @app.errorhandler(BankError)
    def refused(exc: BankError) -> tuple[Response, int]:
        return jsonify(error=str(exc)), 422

    @app.errorhandler(eventfold.ConcurrencyError)
    def conflict(exc: eventfold.ConcurrencyError) -> tuple[Response, int]:
        return jsonify(error=str(exc)), 409

    @app.errorhandler(eventfold.StaleRead)
    def stale(exc: eventfold.StaleRead) -> tuple[Response, int]:
        return jsonify(error=str(exc)), 503

    @app.errorhandler(eventfold.InvalidInput)
    def bad_input(exc: eventfold.InvalidInput) -> tuple[Response, int]:
        return jsonify(error=str(exc)), 400

    return app


def _field(name: str) -> Any:
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or name not in body:
        raise eventfold.InvalidInput(f"send a JSON object with {name!r}")
    return body[name]


def _amount() -> int:
    amount = _field("amount")
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise eventfold.InvalidInput(f"amount must be an integer number of cents, got {amount!r}")
    return amount


def close_app(app: Flask) -> None:
    """Stop the projection and close the store."""
    store, daemon = app.extensions["eventfold"]
    daemon.stop()
    store.close()


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else f"sqlite:///{tempfile.mkdtemp()}/bank.db"
    app = create_app(target)
    try:
        app.run(threaded=True)
    finally:
        close_app(app)
