"""Discount codes at the storefront's checkout: Apply, the summary, readable refusals, and twenty
shoppers racing for a code that has five uses left, on a live storefront."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import pytest
from sqlmodel import col, func, select
from starlette.testclient import TestClient

from conveyor import audit
from conveyor.db import Database
from conveyor.settings import Settings
from fulfilment import discounts
from models.discounts import DiscountKind, DiscountRedemption
from models.orders import Order, OrderLine, OrderStatus
from models.payments import Payment, PaymentStatus
from storefront.app import create_app
from tests.factories import make_product
from tests.helpers import CARD_DECLINED, card_token

SHOPPERS = 20
USES = 5
ADDRESS = {
    "email": "ada@example.com", "full_name": "Ada Lovelace", "phone": "+49 30 1234567",
    "address": "Unter den Linden 1", "city": "Berlin", "postal_code": "10117",
    "country": "DE", "shipping_method": "standard",
}


def make_code(db: Database, name: str, **settings: object) -> None:
    values: dict[str, object] = {"kind": DiscountKind.PERCENT, "value": 1000}
    values.update(settings)
    with db.unit_of_work() as uow:
        discounts.create_code(uow=uow, actor=audit.Actor(email="test"), code=name,
                              fields=discounts.DiscountFields(**values))  # type: ignore[arg-type]


def csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no CSRF token"
    return match.group(1)


@pytest.fixture
def client(db: Database, settings: Settings):
    with TestClient(create_app(settings, db=db), base_url="http://127.0.0.1:8000",
                    follow_redirects=True) as test_client:
        yield test_client


def add_to_cart(client: TestClient, slug: str, variant_id: int, quantity: int = 1) -> None:
    page = client.get(f"/p/{slug}")
    client.post("/cart/add", data={"csrf_token": csrf(page.text),
                                   "variant_id": str(variant_id), "quantity": str(quantity)})


def test_apply_shows_the_discount_in_the_summary_and_a_bad_code_says_why_keeping_the_form(
    client, db
):
    made = make_product(db, variants=[("Std", 5000, 5)])
    make_code(db, "SAVE10")
    add_to_cart(client, made.slug, made.variant_ids[0])
    page = client.get("/checkout")
    assert 'name="discount_code"' in page.text and 'formaction="/checkout/discount"' in page.text

    wrong = client.post("/checkout/discount", data={
        "csrf_token": csrf(page.text), **ADDRESS, "discount_code": "nope"})
    assert wrong.status_code == 422
    assert "We do not know the code NOPE. Please check it." in wrong.text
    assert 'id="discount_code-error"' in wrong.text
    assert 'value="Ada Lovelace"' in wrong.text and 'value="nope"' in wrong.text
    assert 'data-testid="summary-discount" hidden' in wrong.text

    # Half-filled details are fine for Apply: only the code is judged.
    right = client.post("/checkout/discount", data={
        "csrf_token": csrf(wrong.text), "email": "", "full_name": "Ada",
        "discount_code": " save10 "})
    assert right.status_code == 200, right.text
    assert 'data-testid="summary-discount">-€5.00</dd>' in right.text
    assert "Discount (SAVE10)" in right.text and 'value="Ada"' in right.text
    assert 'id="summary-total">€59.38</dd>' in right.text  # 45.00 + 4.90, then 19% VAT
    assert client.get("/checkout/summary", params={
        "country": "DE", "shipping_method": "standard", "discount_code": "save10"},
    ).json() == {"subtotal": "€50.00", "shipping": "€4.90", "tax": "€9.48", "total": "€59.38",
                 "tax_rate": "19%", "discount": "-€5.00", "discount_message": "SAVE10: €5.00 off."}


def test_pay_decides_the_code_again_and_refuses_it_next_to_the_field(client, db, settings):
    made = make_product(db, variants=[("Std", 2000, 5)])
    make_code(db, "BIG", min_spend_cents=5000)
    add_to_cart(client, made.slug, made.variant_ids[0])
    page = client.get("/checkout")
    response = client.post("/checkout", data={
        "csrf_token": csrf(page.text), **ADDRESS, "discount_code": "big",
        "payment_token": card_token(settings.stripe_api_base)})
    assert response.status_code == 422
    assert "The code BIG needs a spend of at least €50.00" in response.text
    assert 'value="Unter den Linden 1"' in response.text
    with db.read_session() as session:
        assert session.exec(select(func.count()).select_from(Order)).one() == 0


def test_a_declined_card_then_another_card_uses_the_code_once(client, db, settings):
    made = make_product(db, variants=[("Std", 2000, 5)])
    make_code(db, "ONCE", usage_limit=1)
    add_to_cart(client, made.slug, made.variant_ids[0], 2)
    page = client.get("/checkout")
    declined = client.post("/checkout", data={
        "csrf_token": csrf(page.text), **ADDRESS, "discount_code": "ONCE",
        "payment_token": card_token(settings.stripe_api_base, CARD_DECLINED)})
    assert declined.status_code == 402
    assert 'value="ONCE"' in declined.text  # kept, and not refused as used up by itself
    assert "has been used up" not in declined.text
    paid = client.post("/checkout", data={
        "csrf_token": csrf(declined.text), **ADDRESS, "discount_code": "ONCE",
        "payment_token": card_token(settings.stripe_api_base)})
    assert "Thank you for your order" in paid.text
    assert "Discount (code ONCE)" in paid.text and "-€4.00" in paid.text
    with db.read_session() as session:
        [order] = session.exec(select(Order)).all()
        uses = session.exec(select(DiscountRedemption)).all()
    assert (order.status, order.discount_cents, order.discount_code) == (
        OrderStatus.AUTHORIZED, 400, "ONCE")
    assert [use.order_id for use in uses] == [order.id]


def test_twenty_concurrent_checkouts_with_a_code_limited_to_five_uses_make_five_discounted_orders(
    db: Database, settings: Settings, live_storefront: str
):
    made = make_product(db, name="Popular Print", variants=[("A3", 3000, SHOPPERS)])
    variant = made.variant_ids[0]
    make_code(db, "FIVE", kind=DiscountKind.FIXED, value=500, usage_limit=USES)
    start = threading.Barrier(SHOPPERS)

    def shopper(n: int) -> tuple[int, str]:
        with httpx.Client(base_url=live_storefront, follow_redirects=True, timeout=60) as web:
            page = web.get(f"/p/{made.slug}")
            web.post("/cart/add", data={"csrf_token": csrf(page.text),
                                        "variant_id": str(variant), "quantity": "1"})
            checkout = web.get("/checkout")
            token = card_token(settings.stripe_api_base)
            start.wait()  # everyone presses Pay with the code together
            response = web.post("/checkout", data={
                "csrf_token": csrf(checkout.text), **ADDRESS,
                "email": f"shopper{n}@example.com", "full_name": f"Shopper {n}",
                "address": f"Teststrasse {n}", "discount_code": "five",
                "payment_token": token,
            })
            return response.status_code, response.text

    with ThreadPoolExecutor(max_workers=SHOPPERS) as pool:
        results = list(pool.map(shopper, range(SHOPPERS)))

    codes = [code for code, _ in results]
    assert codes.count(200) == USES, codes
    assert codes.count(422) == SHOPPERS - USES, codes
    assert all("Thank you for your order" in text and "Discount (code FIVE)" in text
               for code, text in results if code == 200)
    assert all("The code FIVE has been used up." in text
               for code, text in results if code == 422)
    with db.read_session() as session:
        orders = session.exec(select(Order)).all()
        uses = session.exec(select(DiscountRedemption)).all()
        line_discounts = session.exec(select(func.sum(OrderLine.discount_cents))).one()
        authorised = session.exec(select(func.count()).select_from(Payment).where(
            col(Payment.status) == PaymentStatus.AUTHORIZED)).one()
    assert len(orders) == USES and authorised == USES
    assert all(o.status == OrderStatus.AUTHORIZED and o.discount_cents == 500
               and o.discount_code == "FIVE" for o in orders)
    assert sorted(u.order_id for u in uses) == sorted(o.id for o in orders)
    assert line_discounts == 500 * USES
