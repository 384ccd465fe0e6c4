"""A discount code in a real browser: Apply works with the card script on the page, the summary
follows the country, and the paid order shows the discount."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from conveyor import audit
from conveyor.db import Database
from fulfilment import discounts
from models.discounts import DiscountKind
from tests.e2e.test_browser_journey import (
    fill_card,
    fill_details,
    orders_of,
    shop_to_checkout,
)
from tests.factories import make_product
from tests.helpers import CARD_OK

pytestmark = pytest.mark.browser


def test_a_shopper_applies_a_code_and_pays_the_discounted_total(page: Page, db: Database):
    make_product(db, name="Linen Apron", category="Kitchen", variants=[("Sand", 2500, 12)])
    with db.unit_of_work() as uow:
        discounts.create_code(uow=uow, actor=audit.Actor(email="test"), code="KITCHEN20",
                              fields=discounts.DiscountFields(kind=DiscountKind.PERCENT,
                                                              value=2000))
    shop_to_checkout(page, "Linen Apron", "apron")
    fill_details(page)
    page.get_by_label("Discount code").fill("kitchen2")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_text("We do not know the code KITCHEN2. Please check it.")).to_be_visible()
    expect(page.get_by_label("Full name")).to_have_value("Grace Hopper")

    page.get_by_label("Discount code").fill("kitchen20")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_test_id("summary-discount")).to_have_text("-€10.00")
    expect(page.locator("#summary-total")).to_have_text("€54.33")  # (50 - 10 + 4.90) + 21%
    page.get_by_label("Country").select_option("DE")
    expect(page.locator("#summary-total")).to_have_text("€53.43")  # the same, with 19%
    page.get_by_label("Country").select_option("NL")
    fill_card(page, CARD_OK)
    page.get_by_role("button", name="Pay").click()

    expect(page.get_by_role("heading", name="Thank you for your order")).to_be_visible()
    expect(page.get_by_test_id("order-discount")).to_have_text("-€10.00")
    [order] = orders_of(db)
    assert (order.discount_code, order.discount_cents, order.total_cents) == (
        "KITCHEN20", 1000, 5433)
