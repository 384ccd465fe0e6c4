"""The after-sales journey in a real browser (Debian's Chromium driven by Playwright) against
the storefront served by uvicorn, with staff on the admin API: sign up, buy, see the order in
the account, request a return; stock staff receive and restock it, finance refunds it; the
customer sees the return completed."""

from __future__ import annotations

import uuid

import pytest
from playwright.sync_api import Page, expect
from sqlmodel import select
from starlette.testclient import TestClient

from admin.app import create_app as create_admin
from conveyor.db import Database
from conveyor.settings import Settings
from conveyor.stripe_gateway import create_gateway
from fulfilment import refunds
from fulfilment.inventory import verify_ledger
from fulfilment.payments import capture_order_payment
from fulfilment.screening import screen_order
from models.after_sales import ReturnRequest
from models.audit import AuditEntry
from models.orders import Order
from tests.after_sales import ENV, lenient_screening, ship_order
from tests.e2e.admin_client import bearer, login
from tests.e2e.test_account_browser import sign_up
from tests.e2e.test_browser_journey import fill_card
from tests.factories import make_product, make_staff, stock_of
from tests.helpers import CARD_OK

pytestmark = pytest.mark.browser


def buy(page: Page) -> str:
    page.goto("/search?q=lantern")
    page.get_by_role("link", name="Storm Lantern").first.click()
    page.get_by_label("Quantity").fill("2")
    page.get_by_role("button", name="Add to cart").click()
    page.get_by_role("link", name="Checkout").click()
    page.get_by_label("Phone").fill("+31 20 123 4567")
    page.get_by_label("Address", exact=True).fill("Damrak 1")
    page.get_by_label("City").fill("Amsterdam")
    page.get_by_label("Postal code").fill("1012 LG")
    page.get_by_label("Country").select_option("NL")
    fill_card(page, CARD_OK)
    page.get_by_role("button", name="Pay").click()
    expect(page.get_by_role("heading", name="Thank you for your order")).to_be_visible()
    return page.get_by_test_id("order-number").inner_text()


def the_warehouse_ships(db: Database, settings: Settings, number: str) -> Order:
    """What the workers and the warehouse do: screen, capture, allocate, pick, pack, ship."""
    with db.read_session() as session:
        order = session.exec(select(Order).where(Order.number == number)).one()
    with db.unit_of_work() as uow:
        screen_order(uow=uow, order_id=order.id, env=ENV, settings=settings)
    assert capture_order_payment(db=db, gateway=create_gateway(settings), env=ENV,
                                 settings=settings, order_id=order.id) == "captured"
    with db.read_session() as session:
        allocated = session.get(Order, order.id)
    assert allocated is not None
    return ship_order(db, settings, allocated)


def test_a_customer_returns_an_item_and_sees_the_return_completed(
        page: Page, db: Database, settings: Settings):
    lenient_screening(db)
    lantern = make_product(db, name="Storm Lantern", category="Outdoor",
                           variants=[("Brass", 4500, 10)])
    variant, sku = lantern.variant_ids[0], lantern.skus[0]

    # Sign up, buy two lanterns; the shop ships them
    sign_up(page, db)
    number = buy(page)
    order = the_warehouse_ships(db, settings, number)
    on_hand = stock_of(db, variant).on_hand

    # The order is in the account; its page offers the return of what was shipped
    page.goto("/account")
    page.get_by_role("link", name=number).click()
    expect(page.get_by_role("heading", name=f"Order {number}")).to_be_visible()
    expect(page.get_by_test_id("order-status")).to_have_text("Shipped")
    page.get_by_label("Storm Lantern (Brass)").fill("1")
    page.get_by_label("Why are you sending it back?").fill("One is enough for the boat")
    page.get_by_role("button", name="Request a return").click()
    expect(page.get_by_text("is registered")).to_be_visible()
    expect(page.get_by_test_id("return-status")).to_have_text(
        "Requested: we are waiting for your parcel")
    with db.read_session() as session:
        request = session.exec(select(ReturnRequest)).one()
    expect(page.get_by_test_id("return")).to_contain_text(request.number)

    # Stock staff receive the parcel and restock it; finance refunds it
    with TestClient(create_admin(settings, db=db)) as admin:
        stock = bearer(login(admin, make_staff(db, "stock")))
        finance = bearer(login(admin, make_staff(db, "finance")))
        received = admin.post(f"/api/returns/{request.number}/receive", headers=stock,
                              json={"lines": [{"sku": sku, "received_quantity": 1,
                                               "condition": "sellable"}]})
        assert received.status_code == 200, received.text
        page.reload()
        expect(page.get_by_test_id("return-status")).to_have_text(
            "Received: your refund is on its way")
        asked = admin.post(f"/api/returns/{request.number}/refund", headers=finance)
        assert asked.status_code == 202, asked.text
        refund_id = asked.json()["refund"]["id"]
    assert refunds.process_refund(db=db, gateway=create_gateway(settings), env=ENV,
                                  settings=settings, refund_id=uuid.UUID(refund_id)) == "succeeded"

    # The customer sees the return completed, and the credit note
    page.reload()
    expect(page.get_by_test_id("return-status")).to_have_text(
        "Refunded: this return is complete")
    expect(page.get_by_test_id("document-link").filter(has_text="Credit note")).to_be_visible()
    assert stock_of(db, variant).on_hand == on_hand + 1
    with db.read_session() as session:
        assert verify_ledger(session) == []
        actions = set(session.exec(select(AuditEntry.action)))
        refreshed = session.get(Order, order.id)
    assert {"return.receive", "return.refund"} <= actions
    assert refreshed is not None and refreshed.customer_id is not None
