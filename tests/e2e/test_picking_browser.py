"""The pickers' handheld page in a real browser (Debian's Chromium, phone-sized, driven by
Playwright) against the admin API served by uvicorn: sign in, claim, scan, a wrong item, a
short pick, the list done."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlmodel import col, select

from conveyor.db import Database
from models.orders import OrderLine
from models.warehouse import PickList, PickListLine, PickListStatus
from tests.factories import make_staff
from tests.integration.test_picking import (
    bin_,
    build,
    ledger_is_sound,
    lenient_screening,
    put,
    ready_order,
    sku_of,
    variant,
)

pytestmark = pytest.mark.browser



@pytest.fixture
def phone(browser: Browser, live_admin: str) -> Iterator[Page]:
    context = browser.new_context(base_url=live_admin, viewport={"width": 390, "height": 844},
                                  device_scale_factor=2, is_mobile=True, has_touch=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" and "status of 4" not in message.text else None)
    yield page
    context.close()
    assert errors == [], f"errors in the page (JavaScript, CSP): {errors}"


def test_a_picker_walks_a_pick_list_on_a_phone(phone: Page, db: Database, settings):
    lenient_screening(db)
    near, far = bin_(db, "WH1", "A-01", 10), bin_(db, "WH1", "B-07", 70)
    lamp = variant(db, "Desk Lamp", barcode="4006381333931")
    mug = variant(db, "Stoneware Mug")
    put(db, lamp, near, 5)
    put(db, mug, far, 1)  # the book says 1; the bin is empty
    order = ready_order(db, settings, [(lamp, 2), (mug, 1)])
    [pick_list] = build(db)
    picker = make_staff(db, "picker", email="pia@conveyor.test")

    phone.goto("/picker")
    phone.get_by_label("Email").fill(picker.email)
    phone.get_by_label("Password").fill(picker.password)
    phone.get_by_role("button", name="Sign in").click()
    expect(phone.get_by_test_id("who")).to_have_text(picker.email)
    phone.get_by_role("button", name=f"Claim: List #{pick_list.id}").click()

    expect(phone.get_by_test_id("bin")).to_have_text("A-01")
    expect(phone.get_by_test_id("sku")).to_have_text(sku_of(db, lamp))
    expect(phone.get_by_test_id("product")).to_contain_text("Desk Lamp")
    expect(phone.get_by_test_id("wanted")).to_have_text("2")
    phone.get_by_label("Scan or type the SKU or barcode").fill(sku_of(db, mug))
    phone.get_by_role("button", name="Confirm pick").click()
    expect(phone.get_by_test_id("message")).to_contain_text("Wrong item")
    expect(phone.get_by_test_id("wanted")).to_have_text("2")  # nothing changed

    phone.get_by_label("Scan or type the SKU or barcode").fill("4006381333931")
    phone.get_by_label("Quantity").fill("2")
    phone.get_by_role("button", name="Confirm pick").click()
    expect(phone.get_by_test_id("message")).to_contain_text("Picked 2")
    expect(phone.get_by_test_id("bin")).to_have_text("B-07")

    phone.get_by_label("Bin has fewer? Units found").fill("0")
    phone.get_by_role("button", name="Report short").click()
    expect(phone.get_by_test_id("message")).to_contain_text("1 backordered")
    expect(phone.get_by_text("Nothing left to pick on this list.")).to_be_visible()
    expect(phone.get_by_test_id("progress")).to_contain_text("(done)")

    phone.reload()  # the token survives a reload of the tab (sessionStorage)
    expect(phone.get_by_test_id("who")).to_have_text(picker.email)
    with db.read_session() as session:
        stored = session.get(PickList, pick_list.id)
        assert stored is not None and stored.status == PickListStatus.DONE
        lines = session.exec(select(PickListLine).where(
            PickListLine.pick_list_id == pick_list.id).order_by(col(PickListLine.sequence))
        ).all()
        assert [(li.picked, li.short) for li in lines] == [(2, 0), (0, 1)]
        backordered = session.exec(select(OrderLine.backordered).where(
            OrderLine.order_id == order.id, OrderLine.variant_id == mug)).one()
        assert backordered == 1
    ledger_is_sound(db)
