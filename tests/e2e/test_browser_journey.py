"""Shopper journeys in a real browser: Debian's Chromium driven by Playwright."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect
from sqlmodel import col, select

from conveyor.db import Database
from models.orders import Order, OrderStatus
from models.payments import Payment, PaymentStatus
from tests.factories import make_product
from tests.helpers import CARD_3DS, CARD_DECLINED, CARD_OK

pytestmark = pytest.mark.browser



def fill_details(page: Page) -> None:
    page.get_by_label("Email").fill("grace@example.com")
    page.get_by_label("Full name").fill("Grace Hopper")
    page.get_by_label("Phone").fill("+31 20 123 4567")
    page.get_by_label("Address").fill("Damrak 1")
    page.get_by_label("City").fill("Amsterdam")
    page.get_by_label("Postal code").fill("1012 LG")
    page.get_by_label("Country").select_option("NL")


def fill_card(page: Page, number: str) -> None:
    """localstripe's Stripe.js renders plain inputs; real Stripe renders an iframe."""
    card = page.locator("#card-element")
    card.locator("input[placeholder=number]").fill(number)
    card.locator("input[placeholder=exp_month]").fill("12")
    card.locator("input[placeholder=exp_year]").fill("30")
    card.locator("input[placeholder=cvc]").fill("123")
    card.locator("input[placeholder=postal_code]").fill("1012")


def shop_to_checkout(page: Page, product_name: str, search: str) -> None:
    page.goto("/")
    expect(page.get_by_role("heading", name="New in")).to_be_visible()
    page.get_by_label("Search products").fill(search)
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name=product_name).first.click()
    expect(page.get_by_role("heading", name=product_name)).to_be_visible()
    expect(page.get_by_test_id("availability")).to_have_text("In stock")
    page.get_by_label("Quantity").fill("2")
    page.get_by_role("button", name="Add to cart").click()
    expect(page.get_by_text("Added to your cart.")).to_be_visible()
    expect(page.get_by_test_id("cart-count")).to_have_text("2")
    page.get_by_role("link", name="Checkout").click()
    expect(page.get_by_role("heading", name="Checkout")).to_be_visible()


def orders_of(db: Database) -> list[Order]:
    with db.read_session() as session:
        return list(session.exec(select(Order)))


def test_a_shopper_finds_buys_and_follows_an_order(page: Page, db: Database):
    make_product(db, name="Copper Kettle", category="Kitchen", variants=[("1.5 l", 5900, 12)])
    shop_to_checkout(page, "Copper Kettle", "kettle")
    fill_details(page)
    expect(page.locator("#summary-tax-rate")).to_have_text("21%")  # the Netherlands' VAT
    fill_card(page, CARD_OK)
    page.get_by_role("button", name="Pay").click()

    expect(page.get_by_role("heading", name="Thank you for your order")).to_be_visible()
    number = page.get_by_test_id("order-number").inner_text()
    page.get_by_test_id("status-link").click()
    expect(page.get_by_role("heading", name=f"Order {number}")).to_be_visible()
    expect(page.get_by_test_id("order-status")).to_have_text("Payment authorised, being checked")
    [order] = orders_of(db)
    assert order.number == number and order.status == OrderStatus.AUTHORIZED
    assert (order.country, order.postal_code, order.phone) == ("NL", "1012 LG", "+31201234567")
    assert order.subtotal_cents == 2 * 5900


def test_a_declined_card_then_another_card_makes_exactly_one_order(page: Page, db: Database):
    make_product(db, name="Wool Blanket", category="Home", variants=[("Grey", 7900, 12)])
    shop_to_checkout(page, "Wool Blanket", "blanket")
    fill_details(page)
    fill_card(page, CARD_DECLINED)
    page.get_by_role("button", name="Pay").click()

    expect(page.get_by_text("Your card was declined. Please try another card.")).to_be_visible()
    expect(page.get_by_label("Full name")).to_have_value("Grace Hopper")
    expect(page.get_by_label("Postal code")).to_have_value("1012 LG")
    fill_card(page, CARD_OK)
    page.get_by_role("button", name="Pay").click()
    expect(page.get_by_role("heading", name="Thank you for your order")).to_be_visible()

    [order] = orders_of(db)
    assert order.status == OrderStatus.AUTHORIZED
    with db.read_session() as session:
        attempts = session.exec(select(Payment.status).where(Payment.order_id == order.id)
                                .order_by(col(Payment.attempt))).all()
    assert attempts == [PaymentStatus.FAILED, PaymentStatus.AUTHORIZED]


def test_three_d_secure_is_completed_in_the_page(page: Page, db: Database):
    make_product(db, name="Leather Wallet", category="Bags", variants=[("Brown", 5900, 12)])
    shop_to_checkout(page, "Leather Wallet", "wallet")
    fill_details(page)
    fill_card(page, CARD_3DS)
    page.get_by_role("button", name="Pay").click()
    expect(page.get_by_role("heading", name="Confirm your payment")).to_be_visible()
    page.get_by_role("button", name="Complete authentication").click()
    expect(page.get_by_role("heading", name="Thank you for your order")).to_be_visible()
    [order] = orders_of(db)
    assert order.status == OrderStatus.AUTHORIZED
