"""The storefront over HTTP (Starlette's test client, in process): pages, forms, bad input.

Every bad input here must give a clear message and never a 500.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlmodel import func, select
from starlette.testclient import TestClient

from conveyor.db import Database
from conveyor.settings import Settings
from models.base import utcnow
from models.orders import Order, OrderStatus
from storefront.app import create_app
from tests.factories import make_product
from tests.helpers import CARD_DECLINED, card_token

ADDRESS = {
    "email": "ada@example.com", "full_name": "Ada Lovelace", "phone": "+49 30 1234567",
    "address": "Unter den Linden 1", "city": "Berlin", "postal_code": "10117",
    "country": "DE", "shipping_method": "standard",
}


@pytest.fixture
def client(db: Database, settings: Settings):
    with TestClient(create_app(settings, db=db), base_url="http://127.0.0.1:8000",
                    follow_redirects=True) as test_client:
        yield test_client


def csrf(page_html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page_html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def add_to_cart(client: TestClient, slug: str, variant_id: int | str, quantity: object = 1):
    page = client.get(f"/p/{slug}")
    return client.post("/cart/add", data={"csrf_token": csrf(page.text),
                                          "variant_id": str(variant_id),
                                          "quantity": str(quantity)})


def test_browsing_pages_show_products_prices_and_live_availability(client, db):
    plenty = make_product(db, name="Plenty Mug", category="Mugs", variants=[("Std", 1290, 40)])
    few = make_product(db, name="Few Mug", category="Mugs", variants=[("Std", 990, 3)])
    none = make_product(db, name="Gone Mug", category="Mugs", variants=[("Std", 590, 0)])

    home = client.get("/")
    assert home.status_code == 200 and "Plenty Mug" in home.text
    category = client.get("/c/mugs")
    assert category.status_code == 200
    assert all(name in category.text for name in ("Plenty Mug", "Few Mug", "Gone Mug"))
    assert "€12.90" in category.text
    for made, label in ((plenty, "In stock"), (few, "Only 3 left"), (none, "Out of stock")):
        page = client.get(f"/p/{made.slug}")
        assert page.status_code == 200
        assert label in page.text


def test_categories_paginate_and_search_finds_names_and_skus(client, db):
    made = [make_product(db, name=f"Pen {i:02d}", category="Pens") for i in range(15)]
    first = client.get("/c/pens")
    assert "Page 1 of 2" in first.text and "Pen 00" in first.text and "Pen 14" not in first.text
    second = client.get("/c/pens?page=2")
    assert "Pen 14" in second.text and "Pen 00" not in second.text

    assert "Pen 07" in client.get("/search?q=pen+07").text
    by_sku = client.get(f"/search?q={made[3].skus[0]}")
    assert "Pen 03" in by_sku.text and "1 product" in by_sku.text
    assert "Nothing matches" in client.get("/search?q=zzzz").text


@pytest.mark.parametrize("path", [
    "/c/pens?page=abc", "/c/pens?page=-4", "/c/pens?page=99999999999999999999999",
    "/c/pens?sort=<script>", "/search?q=" + "x" * 5000, "/search?q=%25%5F%5C", "/p/x?variant=a",
    "/search?q=<script>alert(1)</script>", "/search?q=%00", "/c/pens?sort=%00",
])
def test_odd_query_strings_never_break_a_page(client, db, path):
    make_product(db, name="Pen", category="Pens")
    response = client.get(path)
    assert response.status_code in (200, 400, 404)
    assert "<script>alert(1)</script>" not in response.text


def test_unknown_pages_get_a_readable_404(client):
    response = client.get("/p/no-such-thing")
    assert response.status_code == 404
    assert "could not find that page" in response.text


def test_sale_prices_show_only_inside_their_window(client, db):
    now = utcnow()
    running = make_product(db, name="Sale Now", variants=[("Std", 2000, 5)],
                           sale=(1500, now - timedelta(minutes=1), now + timedelta(days=1)))
    soon = make_product(db, name="Sale Soon", variants=[("Std", 2000, 5)],
                        sale=(1500, now + timedelta(minutes=2), now + timedelta(days=1)))
    over = make_product(db, name="Sale Over", variants=[("Std", 2000, 5)],
                        sale=(1500, now - timedelta(days=2), now - timedelta(minutes=1)))
    page = client.get(f"/p/{running.slug}").text
    assert "€15.00" in page and "€20.00" in page  # the sale price and the struck one
    for made in (soon, over):
        page = client.get(f"/p/{made.slug}").text
        assert "€20.00" in page and "€15.00" not in page


def test_the_cart_caps_quantities_by_stock_and_recomputes_prices(client, db):
    made = make_product(db, name="Scarce Lamp", variants=[("Std", 4500, 2)])
    variant = made.variant_ids[0]
    capped = add_to_cart(client, made.slug, variant, 5)
    assert "Only 2 can be had right now" in capped.text
    cart = client.get("/cart")
    assert "€90.00" in cart.text  # 2 x 45.00, whatever the form might have said

    update = client.post("/cart/update", data={"csrf_token": csrf(cart.text),
                                               "variant_id": str(variant), "quantity": "1"})
    assert "€45.00" in update.text
    removed = client.post("/cart/remove", data={"csrf_token": csrf(update.text),
                                                "variant_id": str(variant)})
    assert "Your cart is empty" in removed.text


@pytest.mark.parametrize(("quantity", "message"), [
    ("0", "Choose a quantity between 1 and 20"),
    ("-3", "Choose a quantity between 1 and 20"),
    ("21", "Choose a quantity between 1 and 20"),
    ("99999999999999999999", "Choose a quantity between 1 and 20"),
    ("lots", "Choose a quantity between 1 and 20"),
    ("", "Choose a quantity between 1 and 20"),
])
def test_absurd_quantities_get_a_clear_message(client, db, quantity, message):
    made = make_product(db)
    response = add_to_cart(client, made.slug, made.variant_ids[0], quantity)
    assert response.status_code == 200
    assert message in response.text


def test_unknown_or_retired_products_cannot_be_added(client, db):
    made = make_product(db)
    retired = make_product(db, active=False)
    for variant in ("999999", "abc", str(retired.variant_ids[0])):
        response = add_to_cart(client, made.slug, variant)
        assert response.status_code == 200
        assert ("could not find that product" in response.text
                or "not sold any more" in response.text)
    page = client.get(f"/p/{made.slug}")
    by_sku = client.post("/cart/add", data={"csrf_token": csrf(page.text), "sku": "NOPE-1",
                                            "quantity": "1"})
    assert "could not find that product" in by_sku.text
    with_nul = client.post("/cart/add", data={"csrf_token": csrf(page.text), "sku": "A\x00B",
                                              "quantity": "1"})
    assert with_nul.status_code == 400 and "could not read that request" in with_nul.text


def test_every_form_post_needs_the_session_csrf_token(client, db):
    made = make_product(db)
    client.get(f"/p/{made.slug}")
    for path in ("/cart/add", "/cart/update", "/cart/remove", "/checkout",
                 "/checkout/authenticated"):
        missing = client.post(path, data={"variant_id": str(made.variant_ids[0])})
        wrong = client.post(path, data={"csrf_token": "forged", "quantity": "1"})
        as_json = client.post(path, json={"quantity": 1})
        assert (missing.status_code, wrong.status_code, as_json.status_code) == (403, 403, 403)
        assert "This form has expired" in missing.text
    # The signed Stripe webhook is the one exemption: it is refused for its signature instead.
    assert client.post("/stripe/webhook", content=b"{}").status_code == 400


def test_pages_carry_security_headers_and_a_strict_csp(client, settings, db):
    made = make_product(db)
    response = client.get(f"/p/{made.slug}")
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "object-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp
    assert settings.stripe_js_origin in csp
    assert set(re.findall(r"https?://[^\s;]+", csp)) == {settings.stripe_js_origin}
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "strict-origin-when-cross-origin"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie


def test_the_session_cookie_is_secure_when_the_shop_is_served_over_https(db, settings):
    https = settings.model_copy(update={"base_url": "https://shop.example"})
    with TestClient(create_app(https, db=db), base_url="https://shop.example") as client:
        made = make_product(db)
        response = client.get(f"/p/{made.slug}")
    assert "secure" in response.headers["set-cookie"].lower()
    assert "max-age=63072000" in response.headers["strict-transport-security"]


def test_checkout_keeps_what_was_typed_and_says_what_is_wrong_next_to_each_field(client, db):
    made = make_product(db)
    add_to_cart(client, made.slug, made.variant_ids[0])
    page = client.get("/checkout")
    for label in ("Email", "Full name", "Phone", "Address", "City", "Postal code", "Country"):
        assert f">{label}</label>" in page.text
    assert ">Pay</button>" in page.text
    bad = {"email": "ada@", "full_name": "<script>alert(1)</script>", "phone": "123",
           "address": "", "city": "Berlin", "postal_code": "ABCDE", "country": "DE",
           "shipping_method": "standard", "payment_token": ""}
    response = client.post("/checkout", data={"csrf_token": csrf(page.text), **bad})
    assert response.status_code == 422
    text = response.text
    assert 'id="email-error"' in text and "not valid" in text
    assert 'id="full_name-error"' in text and "cannot contain" in text
    assert 'id="phone-error"' in text
    assert 'id="address-error"' in text and "Enter your address" in text
    assert 'id="postal_code-error"' in text and "10115" in text  # an example of a German code
    assert 'value="ada@"' in text and 'value="ABCDE"' in text and 'value="Berlin"' in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<script>alert(1)</script>" not in text


def test_a_card_number_never_reaches_the_server_as_a_form_field(client, db):
    made = make_product(db)
    add_to_cart(client, made.slug, made.variant_ids[0])
    page = client.get("/checkout")
    assert 'name="card' not in page.text and "cardnumber" not in page.text
    response = client.post("/checkout", data={"csrf_token": csrf(page.text), **ADDRESS,
                                              "payment_token": "4242424242424242"})
    assert response.status_code == 422 and "Enter your card details" in response.text


def test_checkout_with_an_empty_cart_goes_back_to_the_cart(client):
    response = client.get("/checkout")
    assert response.url.path == "/cart" and "Your cart is empty" in response.text


def test_paying_ignores_prices_in_the_form_and_shows_the_status_page(client, db, settings):
    made = make_product(db, name="Honest Price", variants=[("Std", 3000, 5)])
    add_to_cart(client, made.slug, made.variant_ids[0], 2)
    page = client.get("/checkout")
    response = client.post("/checkout", data={
        "csrf_token": csrf(page.text), **ADDRESS, "price": "1", "total_cents": "1",
        "unit_price_cents": "1", "payment_token": card_token(settings.stripe_api_base)})
    assert response.status_code == 200 and "/checkout/confirmation/" in str(response.url)
    assert "Thank you for your order" in response.text
    with db.read_session() as session:
        order = session.exec(select(Order)).one()
    assert order.subtotal_cents == 6000 and order.status == OrderStatus.AUTHORIZED
    status = client.get(f"/orders/{order.status_token}")
    assert status.status_code == 200 and order.number in status.text
    assert "Payment authorised, being checked" in status.text
    assert status.headers["cache-control"] == "no-store"
    assert client.get("/orders/" + "x" * 32).status_code == 404
    assert "Your cart is empty" in client.get("/cart").text


def test_a_declined_card_keeps_the_form_and_the_order_for_the_next_card(client, db, settings):
    made = make_product(db, variants=[("Std", 3000, 5)])
    add_to_cart(client, made.slug, made.variant_ids[0])
    page = client.get("/checkout")
    declined = client.post("/checkout", data={
        "csrf_token": csrf(page.text), **ADDRESS,
        "payment_token": card_token(settings.stripe_api_base, CARD_DECLINED)})
    assert declined.status_code == 402
    assert "Your card was declined" in declined.text and 'value="Ada Lovelace"' in declined.text
    paid = client.post("/checkout", data={
        "csrf_token": csrf(declined.text), **ADDRESS,
        "payment_token": card_token(settings.stripe_api_base)})
    assert "Thank you for your order" in paid.text
    with db.read_session() as session:
        assert session.exec(select(func.count()).select_from(Order)).one() == 1


def test_a_checkout_that_lost_the_race_for_stock_says_so_and_fixes_the_cart(client, db, settings):
    made = make_product(db, name="Last Lamp", variants=[("Std", 3000, 2)])
    add_to_cart(client, made.slug, made.variant_ids[0], 2)
    page = client.get("/checkout")
    # Someone else buys one of the two before this shopper presses Pay.
    with TestClient(create_app(settings, db=db), base_url="http://127.0.0.1:8000") as other:
        add_to_cart(other, made.slug, made.variant_ids[0], 1)
        other_page = other.get("/checkout")
        other.post("/checkout", data={"csrf_token": csrf(other_page.text), **ADDRESS,
                                      "payment_token": card_token(settings.stripe_api_base)})
    response = client.post("/checkout", data={
        "csrf_token": csrf(page.text), **ADDRESS,
        "payment_token": card_token(settings.stripe_api_base)})
    assert response.status_code == 409
    assert "only 1 left of Last Lamp" in response.text
    assert 'value="1"' in client.get("/cart").text


def test_live_totals_follow_the_country_and_shipping_method(client, db):
    made = make_product(db, variants=[("Std", 10000, 5)])
    add_to_cart(client, made.slug, made.variant_ids[0])
    germany = client.get("/checkout/summary?country=DE&shipping_method=express").json()
    switzerland = client.get("/checkout/summary?country=CH&shipping_method=standard").json()
    assert germany == {"subtotal": "€100.00", "shipping": "€12.90", "tax": "€21.45",
                       "total": "€134.35", "tax_rate": "19%"}
    assert switzerland["tax"] == "€0.00" and switzerland["shipping"] == "€0.00"
