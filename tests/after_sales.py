"""Orders that have left the warehouse, through the real services: bought at localstripe,
picked, packed and shipped; the starting point of returns."""

from __future__ import annotations

from sqlmodel import col, select

from conveyor.db import Database
from conveyor.settings import Settings
from fulfilment import packing, picking, shipping
from models.orders import Order, OrderLine, OrderStatus
from models.screening import DEFAULT_RULES, RuleSet
from models.warehouse import PickListLine
from tests import shopping

ENV = shopping.ENV
STAFF = "warehouse@conveyor.test"


def lenient_screening(db: Database) -> None:
    """A rule set that approves everything: these tests buy many similar orders."""
    body = DEFAULT_RULES.model_dump(mode="json")
    for rule in body["signals"].values():
        rule["weight"] = 0
    with db.unit_of_work() as uow:
        uow.session.add(RuleSet(version=2, body=body, note="after-sales tests",
                                created_by="test"))


def ship_order(db: Database, settings: Settings, order: Order, *,
               tracking: str = "JD000001") -> Order:
    """Pick, pack in one parcel and ship an allocated order (the only one ready to pick)."""
    with db.unit_of_work() as uow:
        [pick_list] = picking.build_wave(uow=uow, actor=STAFF, max_orders=50).pick_lists
    assert pick_list.id is not None
    with db.unit_of_work() as uow:
        picking.claim_pick_list(uow=uow, pick_list_id=pick_list.id, picker=STAFF)
    with db.read_session() as session:
        wanting = picking.open_units(session, pick_list.id)
        walk = list(session.exec(select(PickListLine).where(
            PickListLine.pick_list_id == pick_list.id).order_by(col(PickListLine.sequence))))
        lines = list(session.exec(select(OrderLine).where(OrderLine.order_id == order.id)
                                  .order_by(col(OrderLine.id))))
    skus = {line.variant_id: line.sku for line in lines}
    for step in walk:
        quantity = wanting.get((step.location_id, step.variant_id), 0)
        if quantity:
            with db.unit_of_work() as uow:
                picking.scan_item(uow=uow, pick_list_id=pick_list.id, picker=STAFF,
                                  code=skus[step.variant_id], quantity=quantity,
                                  line_id=step.id)
    with db.unit_of_work() as uow:
        packed = packing.pack_parcel(
            uow=uow, order_id=order.id, weight_grams=900, packer=STAFF,
            items=[packing.ItemRequest(line.sku, line.quantity) for line in lines])
    assert packed.parcel.id is not None
    with db.unit_of_work() as uow:
        shipped = shipping.ship_parcel(uow=uow, parcel_id=packed.parcel.id, carrier="DHL",
                                       tracking_number=tracking,
                                       tracking_url=f"https://track.example/{tracking}",
                                       shipper=STAFF, env=ENV, settings=settings)
    assert shipped.order_shipped
    with db.read_session() as session:
        fresh = session.get(Order, order.id)
        assert fresh is not None and fresh.status == OrderStatus.SHIPPED
        return fresh


def shipped_order(db: Database, settings: Settings, lines: list[tuple[int, int]], *,
                  email: str = "ada@example.com") -> Order:
    """An order bought, captured, picked, packed and shipped."""
    return ship_order(db, settings, shopping.bought(db, settings, lines, email=email))
