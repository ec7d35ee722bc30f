"""The demo's order domain: events, the folded state, decisions and the fold over a stream.

Type names carry a "demo." prefix so they never clash with a user's own OrderPlaced.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..._events import Event
from ...store import EventStore
from .checks import check

__all__ = [
    "CARRIERS",
    "Order",
    "OrderCancelled",
    "OrderPaid",
    "OrderPlaced",
    "OrderShipped",
    "cancel",
    "evolve",
    "load",
    "pay",
    "place",
    "ship",
]


class OrderPlaced(Event):
    """A customer placed an order."""

    __event_type__ = "demo.OrderPlaced"
    order_id: str
    sku: str
    quantity: int
    unit_price_cents: int
    currency: str


class OrderPaid(Event):
    """The order's total was paid."""

    __event_type__ = "demo.OrderPaid"
    order_id: str
    amount_cents: int
    currency: str


class OrderShipped(Event):
    """The order left the warehouse."""

    __event_type__ = "demo.OrderShipped"
    order_id: str
    carrier: str


class OrderCancelled(Event):
    """The order was cancelled before it shipped."""

    __event_type__ = "demo.OrderCancelled"
    order_id: str
    reason: str


@dataclass(frozen=True)
class Order:
    """An order's state, folded from its events."""

    order_id: str = ""
    total_cents: int = 0
    currency: str = ""
    placed: bool = False
    paid: bool = False
    shipped: bool = False
    cancelled: bool = False

    @property
    def status(self) -> str:
        """One word for people: new, placed, paid, shipped or cancelled."""
        if self.cancelled:
            return "cancelled"
        if self.shipped:
            return "shipped"
        if self.paid:
            return "paid"
        return "placed" if self.placed else "new"


def evolve(order: Order, event: object) -> Order:
    """The order after ``event``; pure, so replaying a stream always gives the same state."""
    match event:
        case OrderPlaced():
            total = event.quantity * event.unit_price_cents
            return replace(
                order,
                order_id=event.order_id,
                total_cents=total,
                currency=event.currency,
                placed=True,
            )
        case OrderPaid():
            return replace(order, paid=True)
        case OrderShipped():
            return replace(order, shipped=True)
        case OrderCancelled():
            return replace(order, cancelled=True)
    return order


# Decisions: pure functions from the state to new events. Paying and shipping do not
# depend on each other (orders may ship on invoice), which is what lets the conflict step
# end well whichever writer wins the race.


def pay(order: Order) -> list[Event]:
    """Pay the order's total."""
    check(order.placed and not order.paid and not order.cancelled, f"cannot pay {order}")
    return [
        OrderPaid(order_id=order.order_id, amount_cents=order.total_cents, currency=order.currency)
    ]


def ship(order: Order, carrier: str) -> list[Event]:
    """Hand the order to a carrier."""
    check(order.placed and not order.shipped and not order.cancelled, f"cannot ship {order}")
    return [OrderShipped(order_id=order.order_id, carrier=carrier)]


def cancel(order: Order, reason: str) -> list[Event]:
    """Cancel an order that has not shipped."""
    check(order.placed and not order.shipped and not order.cancelled, f"cannot cancel {order}")
    return [OrderCancelled(order_id=order.order_id, reason=reason)]


_SKUS = ("KB-01 keyboard", "MS-02 mouse", "MN-27 monitor", "CB-10 cable", "DK-05 dock")
CARRIERS = ("DHL", "UPS", "PostNL")


def place(order_id: str, n: int) -> OrderPlaced:
    """A deterministic order number ``n``: varied SKUs, quantities and prices."""
    return OrderPlaced(
        order_id=order_id,
        sku=_SKUS[n % len(_SKUS)],
        quantity=1 + n % 4,
        unit_price_cents=1_990 + 500 * (n % 7),
        currency="EUR",
    )


async def load(store: EventStore, stream_id: str) -> tuple[Order, int]:
    """Fold the order's stream; return its state and the version read."""
    order, version = Order(), 0
    async for e in store.read_stream(stream_id):
        order, version = evolve(order, e.data), e.version
    return order, version
