"""Fifty shoppers press Pay at the same moment for the last five units, on a live storefront."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
from sqlmodel import func, select

from conveyor.db import Database
from conveyor.settings import Settings
from fulfilment.inventory import verify_ledger
from models.orders import Order, OrderStatus
from models.payments import Payment, PaymentStatus
from tests.factories import make_product, stock_of
from tests.helpers import card_token

SHOPPERS = 50
UNITS = 5


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match
    return match.group(1)


def test_fifty_concurrent_checkouts_for_the_last_five_units_make_exactly_five_orders(
    db: Database, settings: Settings, live_storefront: str
):
    made = make_product(db, name="Limited Print", variants=[("Signed", 8900, UNITS)])
    variant = made.variant_ids[0]
    start = threading.Barrier(SHOPPERS)

    def shopper(n: int) -> tuple[int, str]:
        with httpx.Client(base_url=live_storefront, follow_redirects=True, timeout=60) as web:
            page = web.get(f"/p/{made.slug}")
            web.post("/cart/add", data={"csrf_token": _csrf(page.text),
                                        "variant_id": str(variant), "quantity": "1"})
            checkout = web.get("/checkout")
            token = card_token(settings.stripe_api_base)
            start.wait()  # everyone presses Pay together
            response = web.post("/checkout", data={
                "csrf_token": _csrf(checkout.text), "email": f"shopper{n}@example.com",
                "full_name": f"Shopper {n}", "phone": "+49 30 1234567",
                "address": f"Teststrasse {n}", "city": "Berlin", "postal_code": "10117",
                "country": "DE", "shipping_method": "standard", "payment_token": token,
            })
            return response.status_code, response.text

    with ThreadPoolExecutor(max_workers=SHOPPERS) as pool:
        results = list(pool.map(shopper, range(SHOPPERS)))

    codes = [code for code, _ in results]
    assert codes.count(200) == UNITS, codes
    assert codes.count(409) == SHOPPERS - UNITS, codes
    assert all("Thank you for your order" in text for code, text in results if code == 200)
    assert all("has sold out" in text for code, text in results if code == 409)

    with db.read_session() as session:
        assert session.exec(select(func.count()).select_from(Order)).one() == UNITS
        assert session.exec(select(func.count()).select_from(Order).where(
            Order.status == OrderStatus.AUTHORIZED)).one() == UNITS
        assert session.exec(select(func.count()).select_from(Payment).where(
            Payment.status == PaymentStatus.AUTHORIZED)).one() == UNITS
        assert verify_ledger(session) == []
    item = stock_of(db, variant)
    assert (item.on_hand, item.reserved, item.available) == (UNITS, UNITS, 0)
