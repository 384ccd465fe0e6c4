"""Shopping through the real services: a cart, an order placed from it, a card payment."""

from __future__ import annotations

import dataclasses
import json
import urllib.request
import uuid

from conveyor.db import Database
from conveyor.settings import Settings
from conveyor.stripe_gateway import create_gateway
from conveyor.templating import create_environment
from fulfilment.payments import capture_order_payment
from fulfilment.screening import screen_order
from models.base import utcnow
from models.orders import Order
from storefront import cart as carts
from storefront import checkout
from storefront.catalogue import load_snapshot
from tests.helpers import CARD_OK, card_token

ENV = create_environment()
DETAILS = checkout.parse_checkout_form({
    "email": "ada@example.com", "full_name": "Ada Lovelace", "phone": "+49 30 1234567",
    "address": "Unter den Linden 1", "city": "Berlin", "postal_code": "10117",
    "country": "DE", "shipping_method": "standard",
}, require_payment=False).details
assert DETAILS is not None


def cart(db: Database, lines: list[tuple[int, int]]) -> tuple[uuid.UUID, carts.CartView]:
    with db.unit_of_work() as uow:
        cart_id = carts.create_cart(uow=uow)
        for variant_id, quantity in lines:
            carts.set_quantity(uow=uow, cart_id=cart_id, variant_id=variant_id,
                               quantity=quantity, max_quantity=20)
    with db.read_session() as session:
        return cart_id, carts.view_cart(session, load_snapshot(session), cart_id, utcnow())


def place(db: Database, settings: Settings, cart_id, view, pending=None, *,
          details: checkout.CheckoutDetails = DETAILS, device_id: str = "") -> Order:
    with db.unit_of_work() as uow:
        return checkout.place_order(uow=uow, cart=view, cart_id=cart_id, details=details,
                                    device_id=device_id,
                                    pending_order_id=pending, client_ip="192.0.2.10",
                                    settings=settings, now=utcnow())


def details_for(email: str, **changes: str) -> checkout.CheckoutDetails:
    """The standard shopper's details with another email (and any other changes)."""
    return dataclasses.replace(DETAILS, email=email, **changes)


def pay(db, settings, order_id, card=CARD_OK):
    return checkout.pay_order(db=db, gateway=create_gateway(settings), env=ENV,
                              settings=settings, order_id=order_id,
                              payment_token=card_token(settings.stripe_api_base, card),
                              client_ip="192.0.2.10")


def authenticate(settings: Settings, intent_id: str, client_secret: str, ok: bool = True) -> None:
    """What the bank's 3-D Secure page does in the shopper's browser."""
    body = json.dumps({"key": "pk_test_x", "client_secret": client_secret}).encode()
    url = (f"{settings.stripe_api_base}/v1/payment_intents/{intent_id}/_authenticate"
           f"?success={'true' if ok else 'false'}")
    urllib.request.urlopen(urllib.request.Request(url, body, method="POST"), timeout=10)


def bought(db: Database, settings: Settings, lines: list[tuple[int, int]], *,
           email: str = "ada@example.com", discount_code: str = "") -> Order:
    """An order placed, paid, screened and captured at localstripe (as the workers would)."""
    cart_id, view = cart(db, lines)
    order = place(db, settings, cart_id, view,
                  details=details_for(email, discount_code=discount_code))
    pay(db, settings, order.id)
    with db.unit_of_work() as uow:
        screen_order(uow=uow, order_id=order.id, env=ENV, settings=settings)
    assert capture_order_payment(db=db, gateway=create_gateway(settings), env=ENV,
                                 settings=settings, order_id=order.id) == "captured"
    with db.read_session() as session:
        fresh = session.get(Order, order.id)
        assert fresh is not None
        return fresh
