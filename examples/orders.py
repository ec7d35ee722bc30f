"""An order as a class-style aggregate: place, ship, refund, cancel with a reason and an
actor.

Run it: ``python examples/orders.py [STORE_URL]`` (default: a fresh SQLite file).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid

import eventfold
from eventfold import applies


class OrderPlaced(eventfold.Event):
    __event_type__ = "orders.OrderPlaced"
    order_id: str
    sku: str
    quantity: int
    unit_price_cents: int
    currency: str = "EUR"


class OrderShipped(eventfold.Event):
    __event_type__ = "orders.OrderShipped"
    carrier: str


class OrderRefunded(eventfold.Event):
    __event_type__ = "orders.OrderRefunded"
    amount_cents: int
    actor: str


class OrderCancelled(eventfold.Event):
    __event_type__ = "orders.OrderCancelled"
    reason: str
    actor: str


class OrderError(Exception):
    """A command the order's rules refuse."""


class Order(eventfold.Aggregate):
    status: str
    total_cents: int
    refunded_cents: int

    def __init__(self) -> None:
        self.status = "new"
        self.total_cents = 0
        self.refunded_cents = 0

    # -- commands --------------------------------------------------------------------

    def place(self, order_id: str, sku: str, quantity: int, unit_price_cents: int) -> None:
        if self.status != "new":
            raise OrderError(f"the order is already {self.status}")
        if quantity <= 0:
            raise OrderError("order at least one item")
        self.record(
            OrderPlaced(
                order_id=order_id, sku=sku, quantity=quantity, unit_price_cents=unit_price_cents
            )
        )

    def ship(self, carrier: str) -> None:
        if self.status != "placed":
            raise OrderError(f"only a placed order ships; this one is {self.status}")
        self.record(OrderShipped(carrier=carrier))

    def refund(self, amount_cents: int, actor: str) -> None:
        if self.status not in ("shipped", "cancelled"):
            raise OrderError(f"refund a shipped or cancelled order; this one is {self.status}")
        if amount_cents <= 0 or self.refunded_cents + amount_cents > self.total_cents:
            raise OrderError(f"refund between 1 and {self.total_cents - self.refunded_cents} cents")
        self.record(OrderRefunded(amount_cents=amount_cents, actor=actor))

    def cancel(self, reason: str, actor: str) -> None:
        if self.status != "placed":
            raise OrderError(f"only a placed order can be cancelled; this one is {self.status}")
        if not reason.strip():
            raise OrderError("say why the order is cancelled")
        self.record(OrderCancelled(reason=reason, actor=actor))

    # -- apply steps -----------------------------------------------------------------

    @applies(OrderPlaced)
    def _placed(self, event: OrderPlaced) -> None:
        self.status = "placed"
        self.total_cents = event.quantity * event.unit_price_cents

    @applies(OrderShipped)
    def _shipped(self, event: OrderShipped) -> None:
        self.status = "shipped"

    @applies(OrderRefunded)
    def _refunded(self, event: OrderRefunded) -> None:
        self.refunded_cents += event.amount_cents

    @applies(OrderCancelled)
    def _cancelled(self, event: OrderCancelled) -> None:
        self.status = "cancelled"


order = Order.decider()


async def main(url: str) -> None:
    # New orders each run, so the example runs again against the same store.
    run = uuid.uuid4().hex[:8]
    first, second = f"order-{run}-1", f"order-{run}-2"
    async with eventfold.connect(url) as store:
        handler = eventfold.CommandHandler(store, order)
        await handler.handle(first, lambda o: o.place(first, "SKU-1", 2, 1250))
        await handler.handle(first, lambda o: o.ship("DHL"))
        result = await handler.handle(first, lambda o: o.refund(500, actor="support:bob"))
        print(
            f"{first}: {result.state.status}, refunded {result.state.refunded_cents} "
            f"of {result.state.total_cents} cents"
        )
        await handler.handle(second, lambda o: o.place(second, "SKU-9", 1, 999))
        result = await handler.handle(
            second, lambda o: o.cancel("customer changed their mind", actor="ann")
        )
        print(f"{second}: {result.state.status}")
        try:
            await handler.handle(second, lambda o: o.ship("UPS"))
        except OrderError as exc:
            print(f"refused: {exc}")


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else f"sqlite:///{tempfile.mkdtemp()}/orders.db"
    asyncio.run(main(target))
