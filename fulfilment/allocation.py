"""Allocation: an approved, paid order gets its stock set aside in bins and is ready to pick."""

from __future__ import annotations

import uuid

from sqlmodel import col, select

from conveyor.db import UnitOfWork
from fulfilment.inventory import BinPick, allocate_order_stock
from models.base import utcnow
from models.inventory import StockItem, Warehouse
from models.orders import Order, OrderLine, OrderStatus, transition

ACTOR = "worker:allocation"


def allocate_order(*, uow: UnitOfWork, order_id: uuid.UUID) -> list[BinPick] | None:
    """Allocate an approved order's reserved stock (see `plan_allocation` for the rule) and
    mark it allocated. Locks the order; None when there is nothing to do (already allocated,
    cancelled meanwhile)."""
    session = uow.session
    order = session.get(Order, order_id, with_for_update=True)
    if order is None or order.status != OrderStatus.APPROVED:
        return None
    picks = allocate_order_stock(uow=uow, order_id=order_id, actor=ACTOR)
    costs = {item.variant_id: item.unit_cost_cents for item in session.exec(
        select(StockItem).where(col(StockItem.variant_id).in_({p.variant_id for p in picks})))}
    for line in session.exec(select(OrderLine).where(OrderLine.order_id == order_id)):
        if line.unit_cost_cents is None:  # what the units cost the shop, for margins
            line.unit_cost_cents = costs.get(line.variant_id, 0)
    codes = {w.id: w.code for w in session.exec(select(Warehouse))}
    warehouses = sorted({codes.get(p.warehouse_id, "?") for p in picks})
    session.add(transition(order, OrderStatus.ALLOCATED, actor=ACTOR, at=utcnow(),
                           reason=f"Stock set aside in {', '.join(warehouses) or 'no bins'};"
                                  " ready to pick."))
    return picks
