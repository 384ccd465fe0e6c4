"""Shipping: a packed parcel is handed to a carrier; its units leave stock.

Partial shipments are allowed: a parcel may leave while the rest of the order is still being
picked. The order becomes `shipped` when it is packed and every one of its parcels has left;
the customer then gets one email with every tracking link. Each earlier parcel is announced
on the order's status page (a public entry in its history).
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import Environment
from sqlmodel import col, select

from conveyor.db import UnitOfWork
from conveyor.errors import Conflict, NotFound
from conveyor.mail import queue_email
from conveyor.settings import Settings
from fulfilment.inventory import ship_picked
from fulfilment.packing import parcels_of
from models.base import utcnow
from models.orders import Order, OrderLine, OrderStatus, note, transition
from models.warehouse import Parcel, ParcelItem

SHIPPABLE = (OrderStatus.PICKING, OrderStatus.PACKED)


@dataclass(frozen=True)
class Shipped:
    parcel: Parcel
    order: Order
    order_shipped: bool  # this parcel was the order's last
    already: bool  # the parcel had left before with the same tracking: nothing changed


def describe(parcel: Parcel) -> str:
    return " ".join(part for part in (parcel.carrier, parcel.tracking_number) if part)


def ship_parcel(*, uow: UnitOfWork, parcel_id: int, carrier: str, tracking_number: str,
                tracking_url: str, shipper: str, env: Environment,
                settings: Settings) -> Shipped:
    """Hand a parcel to a carrier: its units leave stock (`ship_picked`, ledger rows with the
    parcel as document) and its carrier and tracking are recorded.

    Locks the order, then the parcel, then the stock rows in variant-id order. Idempotent for
    a repeat with the same carrier and tracking number (nothing changes, `already` is True);
    a parcel that left with other tracking, or an order not being picked or packed, is refused
    with Conflict. When the order is packed and this was its last parcel to leave, the order
    becomes `shipped` and the shipping email (template `order_shipped`, all tracking links)
    is queued in the same transaction.
    """
    session = uow.session
    found = session.get(Parcel, parcel_id)
    if found is None:
        raise NotFound(f"No parcel {parcel_id}.")
    order = session.get(Order, found.order_id, with_for_update=True)
    parcel = session.get(Parcel, parcel_id, with_for_update=True)
    assert order is not None and parcel is not None
    if parcel.shipped_at is not None:
        if (parcel.carrier, parcel.tracking_number) == (carrier, tracking_number):
            return Shipped(parcel, order, order.status == OrderStatus.SHIPPED, already=True)
        raise Conflict(f"This parcel left already with {describe(parcel)}.",
                       details={"carrier": parcel.carrier,
                                "tracking_number": parcel.tracking_number})
    if order.status not in SHIPPABLE:
        raise Conflict(f"Order {order.number} is {order.status.replace('_', ' ')}: its parcels "
                       "cannot be shipped.", details={"status": order.status})
    items = list(session.exec(select(ParcelItem).where(ParcelItem.parcel_id == parcel_id)
                              .order_by(col(ParcelItem.variant_id))))
    for item in items:
        ship_picked(uow=uow, order_id=order.id, variant_id=item.variant_id,
                    quantity=item.quantity, actor=shipper, document_type="parcel",
                    document_id=str(parcel_id))
    now = utcnow()
    parcel.carrier, parcel.tracking_number, parcel.tracking_url = (carrier, tracking_number,
                                                                   tracking_url)
    parcel.shipped_by, parcel.shipped_at = shipper, now
    session.flush()
    parcels = parcels_of(session, order.id)
    last = order.status == OrderStatus.PACKED and all(p.shipped_at for p, _ in parcels)
    if last:
        session.add(transition(order, OrderStatus.SHIPPED, actor=shipper, at=now,
                               reason=f"Shipped in {len(parcels)} parcel(s): "
                                      + "; ".join(describe(p) for p, _ in parcels) + "."))
        _queue_shipped_email(uow=uow, order=order, parcels=[p for p, _ in parcels], env=env,
                             settings=settings)
    else:
        session.add(note(order, f"A parcel is on its way: {describe(parcel)}. The rest of "
                                "your order follows.", actor=shipper, at=now, public=True))
    session.flush()
    return Shipped(parcel, order, last, already=False)


def _queue_shipped_email(*, uow: UnitOfWork, order: Order, parcels: list[Parcel],
                         env: Environment, settings: Settings) -> None:
    lines = list(uow.session.exec(select(OrderLine).where(OrderLine.order_id == order.id)
                                  .order_by(col(OrderLine.id))))
    status_url = f"{settings.base_url.rstrip('/')}/orders/{order.status_token}"
    queue_email(uow, env, to=order.email, subject=f"Your order {order.number} is on its way",
                template="order_shipped", order_id=order.id,
                context={"order": order, "parcels": parcels, "lines": lines,
                         "status_url": status_url})
