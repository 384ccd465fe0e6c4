"""A customer's account in a real browser (Debian's Chromium driven by Playwright) against the
storefront served by uvicorn: sign up, confirm the email from the link, buy with the details
filled in from the account, find the order in the account, sign out and back in."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect
from sqlmodel import col, select

from conveyor.db import Database
from models.customers import Customer, CustomerAddress
from models.messaging import Email
from models.orders import Order
from tests.e2e.test_browser_journey import fill_card
from tests.factories import make_product
from tests.helpers import CARD_OK

pytestmark = pytest.mark.browser

PASSWORD = "a long and secret passphrase"


def emailed_link(db: Database, template: str) -> str:
    with db.read_session() as session:
        email = session.exec(select(Email).where(Email.template == template)
                             .order_by(col(Email.created_at).desc())).first()
    assert email is not None, f"no {template} email"
    match = re.search(r"https?://[^/\s]+(/account/[a-z-]+/[A-Za-z0-9_-]+)", email.text_body)
    assert match
    return match.group(1)


def sign_up(page: Page, db: Database) -> None:
    """Grace signs up from the header and confirms her email with the link it was sent."""
    page.goto("/")
    page.get_by_role("link", name="Sign in").click()
    page.get_by_role("link", name="Create an account").click()
    page.get_by_label("Email").fill("grace@example.com")
    page.get_by_label("Full name").fill("Grace Hopper")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    page.goto(emailed_link(db, "account_verify"))
    page.get_by_role("button", name="Confirm and sign in").click()
    expect(page.get_by_role("heading", name="Your orders")).to_be_visible()


def test_a_customer_signs_up_buys_and_finds_the_order_in_the_account(page: Page, db: Database):
    make_product(db, name="Tea Caddy", category="Kitchen", variants=[("Tin", 1900, 10)])

    # Sign up from the header, and confirm the email with the link it was sent
    sign_up(page, db)
    expect(page.get_by_text("No orders yet")).to_be_visible()

    # Buy: contact details come from the account; the address is saved for next time
    page.goto("/search?q=caddy")
    page.get_by_role("link", name="Tea Caddy").first.click()
    page.get_by_role("button", name="Add to cart").click()
    page.get_by_role("link", name="Checkout").click()
    expect(page.get_by_label("Email")).to_have_value("grace@example.com")
    expect(page.get_by_label("Full name")).to_have_value("Grace Hopper")
    page.get_by_label("Phone").fill("+31 20 123 4567")
    page.get_by_label("Address").fill("Damrak 1")
    page.get_by_label("City").fill("Amsterdam")
    page.get_by_label("Postal code").fill("1012 LG")
    page.get_by_label("Country").select_option("NL")
    page.get_by_label("Save it to my account for next time").check()
    fill_card(page, CARD_OK)
    page.get_by_role("button", name="Pay").click()
    expect(page.get_by_role("heading", name="Thank you for your order")).to_be_visible()
    number = page.get_by_test_id("order-number").inner_text()

    # The order is in the account, linked by its number to its status page
    page.get_by_role("link", name="Account").click()
    page.get_by_role("link", name=number).click()
    expect(page.get_by_role("heading", name=f"Order {number}")).to_be_visible()
    with db.read_session() as session:
        customer = session.exec(select(Customer)).one()
        order = session.exec(select(Order)).one()
        saved = session.exec(select(CustomerAddress)).one()
    assert order.customer_id == customer.id and order.number == number
    assert (saved.address, saved.is_default) == ("Damrak 1", True)

    # Sign out, and back in with the password: the next checkout is filled in completely
    page.goto("/account")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You are signed out.")).to_be_visible()
    page.get_by_role("link", name="Sign in").click()
    page.get_by_label("Email", exact=True).fill("grace@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("heading", name="Your orders")).to_be_visible()
    page.goto("/search?q=caddy")
    page.get_by_role("link", name="Tea Caddy").first.click()
    page.get_by_role("button", name="Add to cart").click()
    page.get_by_role("link", name="Checkout").click()
    expect(page.get_by_label("Address", exact=True)).to_have_value("Damrak 1")
    expect(page.get_by_label("Country")).to_have_value("NL")
