"""Shipping on PostgreSQL: parcels leave stock one at a time (partial shipments), the order is
shipped when its last parcel leaves, the customer's email and status page show tracking."""

from __future__ import annotations

import uuid

import pytest
from sqlmodel import col, select
from starlette.testclient import TestClient

from conveyor.db import Database
from conveyor.errors import Conflict
from conveyor.settings import Settings
from fulfilment import shipping
from fulfilment.cancellation import cancel_order
from models.inventory import MovementKind, StockMovement
from models.messaging import Email
from models.orders import OrderEvent, OrderStatus
from storefront.app import create_app as create_storefront
from tests.factories import stock_of
from tests.integration.test_packing import pack
from tests.integration.test_picking import (
    ENV,
    bin_,
    build,
    claim,
    floor,  # noqa: F401 (fixture)
    pick_everything,
    put,
    ready_order,
    reload,
    scan,
    sku_of,
    variant,
)


def ship(db: Database, settings: Settings, parcel_id: int, tracking: str, *,
         carrier: str = "DHL", url: str | None = None) -> shipping.Shipped:
    with db.unit_of_work() as uow:
        return shipping.ship_parcel(
            uow=uow, parcel_id=parcel_id, carrier=carrier, tracking_number=tracking,
            tracking_url=url if url is not None else f"https://track.example/{tracking}",
            shipper="shipper@conveyor.test", env=ENV, settings=settings)


def emails(db: Database, order_id: uuid.UUID, template: str) -> list[Email]:
    with db.read_session() as session:
        return list(session.exec(select(Email).where(Email.order_id == order_id,
                                                     Email.template == template)))


def test_a_partial_shipment_then_the_rest_ships_the_order_and_emails_every_link(
        floor, settings):  # noqa: F811
    db = floor
    shelf, far = bin_(db, "WH1", "A-01", 10), bin_(db, "WH1", "Z-99", 990)
    lamp, mug = variant(db, "Lamp"), variant(db, "Mug")
    put(db, lamp, shelf, 10)
    put(db, mug, far, 10)
    order = ready_order(db, settings, [(lamp, 2), (mug, 1)])
    [pick_list] = build(db)
    claim(db, pick_list.id)
    scan(db, pick_list.id, sku_of(db, lamp), 2, bin_code="A-01")
    first = pack(db, order.id, [(sku_of(db, lamp), 2)])

    shipped = ship(db, settings, first.parcel.id or 0, "JD0001")

    assert not shipped.order_shipped and reload(db, order.id).status == OrderStatus.PICKING
    assert stock_of(db, lamp).on_hand == 8 and stock_of(db, lamp).allocated == 0
    assert emails(db, order.id, "order_shipped") == []
    with db.read_session() as session:
        on_its_way = session.exec(select(OrderEvent).where(
            OrderEvent.order_id == order.id, col(OrderEvent.note).contains("JD0001"))).one()
        assert on_its_way.public
        leaving = session.exec(select(StockMovement).where(
            StockMovement.kind == MovementKind.SHIP)).all()
    assert [(m.variant_id, m.on_hand_delta, m.document_type, m.document_id) for m in leaving] \
        == [(lamp, -2, "parcel", str(first.parcel.id))]

    pick_everything(db, pick_list.id)
    second = pack(db, order.id, [(sku_of(db, mug), 1)], weight=250)
    assert second.order_packed
    done = ship(db, settings, second.parcel.id or 0, "UP0002", carrier="UPS")

    assert done.order_shipped and reload(db, order.id).status == OrderStatus.SHIPPED
    assert stock_of(db, mug).on_hand == 9 and stock_of(db, mug).allocated == 0
    [email] = emails(db, order.id, "order_shipped")
    assert email.to_address == order.email and order.number in email.subject
    for body in (email.text_body, email.html_body):
        assert "https://track.example/JD0001" in body
        assert "https://track.example/UP0002" in body
        assert "UPS" in body and "DHL" in body


def test_shipping_a_parcel_twice_is_harmless_and_other_tracking_is_refused(
        floor, settings):  # noqa: F811
    db = floor
    shelf = bin_(db, "WH1", "A-01", 10)
    lamp = variant(db, "Lamp")
    put(db, lamp, shelf, 10)
    order = ready_order(db, settings, [(lamp, 1)])
    [pick_list] = build(db)
    claim(db, pick_list.id)
    pick_everything(db, pick_list.id)
    parcel_id = pack(db, order.id, [(sku_of(db, lamp), 1)]).parcel.id or 0

    ship(db, settings, parcel_id, "JD0001")
    again = ship(db, settings, parcel_id, "JD0001")

    assert again.already and again.order_shipped
    with pytest.raises(Conflict, match="left already"):
        ship(db, settings, parcel_id, "JD0002")
    assert stock_of(db, lamp).on_hand == 9
    assert len(emails(db, order.id, "order_shipped")) == 1


def test_a_cancelled_order_s_parcel_cannot_ship(floor, settings):  # noqa: F811
    db = floor
    shelf = bin_(db, "WH1", "A-01", 10)
    lamp = variant(db, "Lamp")
    put(db, lamp, shelf, 10)
    order = ready_order(db, settings, [(lamp, 2)])
    [pick_list] = build(db)
    claim(db, pick_list.id)
    scan(db, pick_list.id, sku_of(db, lamp), 1, bin_code="A-01")
    parcel_id = pack(db, order.id, [(sku_of(db, lamp), 1)]).parcel.id or 0
    with db.unit_of_work() as uow:
        cancel_order(uow=uow, order_id=order.id, reason="changed my mind", actor="desk",
                     env=ENV, settings=settings)

    with pytest.raises(Conflict, match="cancelled"):
        ship(db, settings, parcel_id, "JD0001")
    assert stock_of(db, lamp).on_hand == 10 and stock_of(db, lamp).allocated == 0


def test_the_status_page_shows_each_parcel_with_carrier_and_tracking_link(
        floor, settings):  # noqa: F811
    db = floor
    shelf = bin_(db, "WH1", "A-01", 10)
    lamp, mug = variant(db, "Lamp"), variant(db, "Mug")
    put(db, lamp, shelf, 10)
    put(db, mug, shelf, 10)
    order = ready_order(db, settings, [(lamp, 1), (mug, 1)])
    [pick_list] = build(db)
    claim(db, pick_list.id)
    pick_everything(db, pick_list.id)
    first = pack(db, order.id, [(sku_of(db, lamp), 1)]).parcel.id or 0
    pack(db, order.id, [(sku_of(db, mug), 1)])
    ship(db, settings, first, "JD0001", url="https://track.example/JD0001?x=1&y=<2>")

    with TestClient(create_storefront(settings, db=db),
                    base_url="http://127.0.0.1:8000") as client:
        page = client.get(f"/orders/{order.status_token}")

    assert page.status_code == 200
    html = page.text
    assert 'data-testid="parcels"' in html and html.count('data-testid="parcel"') == 2
    assert 'href="https://track.example/JD0001?x=1&amp;y=&lt;2&gt;"' in html
    assert "DHL" in html and "waiting for the carrier" in html
    assert "A parcel is on its way: DHL JD0001" in html  # the public history entry
