"""Discount codes through the real services on PostgreSQL: placing orders with a code, limits
and the uses that count, refunds per line, the invoice, screening and the desk's services."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlmodel import col, select

from conveyor import audit
from conveyor.db import Database
from conveyor.errors import Conflict
from conveyor.settings import Settings
from conveyor.stripe_gateway import create_gateway
from fulfilment import discounts, refunds
from fulfilment.finance_documents import render_finance_document
from fulfilment.screening import quality_issues
from models.audit import AuditEntry
from models.base import utcnow
from models.catalog import Product
from models.discounts import DiscountKind, DiscountRedemption, Refusal
from models.finance import DocumentKind, FinanceDocument
from models.orders import Order, OrderLine, OrderStatus
from models.payments import Payment
from models.screening import Screening
from storefront import checkout
from tests import shopping
from tests.factories import make_product
from tests.helpers import CARD_DECLINED
from tests.unit.test_finance_documents import pdf_text

STAFF = audit.Actor(email="marketing@conveyor.test")


def make_code(db: Database, name: str = "SAVE10", **settings: object) -> None:
    values: dict[str, object] = {"kind": DiscountKind.PERCENT, "value": 1000}
    values.update(settings)
    with db.unit_of_work() as uow:
        discounts.create_code(uow=uow, actor=STAFF, code=name,
                              fields=discounts.DiscountFields(**values))  # type: ignore[arg-type]


def place(db: Database, settings: Settings, lines: list[tuple[int, int]], code: str, *,
          email: str = "ada@example.com", now=None, pending=None, cart=None) -> Order:
    cart_id, view = cart or shopping.cart(db, lines)
    with db.unit_of_work() as uow:
        return checkout.place_order(
            uow=uow, cart=view, cart_id=cart_id, pending_order_id=pending,
            details=shopping.details_for(email, discount_code=code), client_ip="192.0.2.10",
            settings=settings, now=now or utcnow())


def lines_of(db: Database, order: Order) -> list[OrderLine]:
    with db.read_session() as session:
        return list(session.exec(select(OrderLine).where(OrderLine.order_id == order.id)
                                 .order_by(col(OrderLine.id))))


def redemptions(db: Database) -> list[DiscountRedemption]:
    with db.read_session() as session:
        return list(session.exec(select(DiscountRedemption)))


def refused(db: Database, settings: Settings, lines, code: str, **kw) -> Refusal:
    with pytest.raises(discounts.DiscountRefused) as caught:
        place(db, settings, lines, code, **kw)
    return Refusal(caught.value.details["reason"])


def test_a_percent_code_takes_its_share_off_each_line_and_vat_is_on_the_rest(db, settings):
    shirt = make_product(db, variants=[("M", 4000, 10)]).variant_ids[0]
    mug = make_product(db, variants=[("Std", 1250, 10)]).variant_ids[0]
    make_code(db, "SAVE10")

    order = place(db, settings, [(shirt, 1), (mug, 1)], "save10", email="Ada@Example.com")

    assert (order.discount_code, order.subtotal_cents, order.discount_cents) == (
        "SAVE10", 5250, 525)
    assert order.shipping_cents == 490
    assert order.tax_cents == 991  # 19% of 5250 - 525 + 490 = 5215
    assert order.total_cents == 5250 - 525 + 490 + 991
    assert [line.discount_cents for line in lines_of(db, order)] == [400, 125]
    [use] = redemptions(db)
    assert (use.order_id, use.email, use.amount_cents) == (order.id, "ada@example.com", 525)


def test_a_fixed_code_with_a_minimum_spend_refuses_small_carts_and_leaves_nothing(db, settings):
    mug = make_product(db, variants=[("Std", 1250, 10)]).variant_ids[0]
    make_code(db, "FIVER", kind=DiscountKind.FIXED, value=500, min_spend_cents=2500)

    assert refused(db, settings, [(mug, 1)], "FIVER") == Refusal.MIN_SPEND
    with db.read_session() as session:
        assert session.exec(select(Order)).all() == []
    order = place(db, settings, [(mug, 2)], "fiver")
    assert (order.discount_cents, [line.discount_cents for line in lines_of(db, order)]) == (
        500, [500])


def test_validity_dates_hold_to_the_minute(db, settings):
    mug = make_product(db, variants=[("Std", 1250, 10)]).variant_ids[0]
    start = utcnow().replace(second=0, microsecond=0) + timedelta(minutes=5)
    make_code(db, "WEEKEND", starts_at=start, ends_at=start + timedelta(minutes=1))

    assert refused(db, settings, [(mug, 1)], "WEEKEND",
                   now=start - timedelta(seconds=1)) == Refusal.NOT_YET_VALID
    assert place(db, settings, [(mug, 1)], "WEEKEND", now=start).discount_cents == 125
    assert place(db, settings, [(mug, 1)], "WEEKEND", email="bo@example.com",
                 now=start + timedelta(seconds=59)).discount_cents == 125
    assert refused(db, settings, [(mug, 1)], "WEEKEND",
                   now=start + timedelta(minutes=1)) == Refusal.EXPIRED


def test_codes_limited_to_products_or_categories_discount_only_those_lines(db, settings):
    lamp = make_product(db, category="Lamps", variants=[("Brass", 5000, 10)])
    mug = make_product(db, category="Kitchen", variants=[("Std", 1000, 10)])
    with db.read_session() as session:
        product = session.get(Product, lamp.product_id)
        assert product is not None
        lamps_category = product.category_id
    make_code(db, "MUGS", value=5000, product_ids=[mug.product_id])
    make_code(db, "LAMPS", kind=DiscountKind.FIXED, value=700, category_ids=[lamps_category])
    cart = [(lamp.variant_ids[0], 1), (mug.variant_ids[0], 2)]

    mugs = place(db, settings, cart, "MUGS")
    assert [line.discount_cents for line in lines_of(db, mugs)] == [0, 1000]
    lamps = place(db, settings, cart, "LAMPS", email="bo@example.com")
    assert [line.discount_cents for line in lines_of(db, lamps)] == [700, 0]
    assert refused(db, settings, [(lamp.variant_ids[0], 1)], "MUGS") == Refusal.NOT_APPLICABLE


def test_the_per_customer_limit_counts_by_email_whatever_its_case(db, settings):
    mug = make_product(db, variants=[("Std", 1250, 10)]).variant_ids[0]
    make_code(db, "WELCOME", per_customer_limit=1)

    place(db, settings, [(mug, 1)], "WELCOME", email="Ada@Example.com")
    assert refused(db, settings, [(mug, 1)], "WELCOME",
                   email="ada@example.com") == Refusal.USED_BY_YOU
    assert place(db, settings, [(mug, 1)], "WELCOME", email="bo@example.com").discount_cents


def test_placing_the_pending_order_again_after_a_declined_card_uses_the_code_once(db, settings):
    mug = make_product(db, variants=[("Std", 1250, 10)]).variant_ids[0]
    make_code(db, "ONCE", usage_limit=1)
    cart = shopping.cart(db, [(mug, 1)])

    first = place(db, settings, [], "ONCE", cart=cart)
    assert shopping.pay(db, settings, first.id, CARD_DECLINED).outcome == "declined"
    again = place(db, settings, [], "ONCE", cart=cart, pending=first.id)
    assert again.id == first.id and again.discount_cents == 125
    assert [use.order_id for use in redemptions(db)] == [first.id]
    assert refused(db, settings, [(mug, 1)], "ONCE", email="bo@example.com") == Refusal.USED_UP

    without = place(db, settings, [], "", cart=cart, pending=first.id)  # code removed
    assert (without.id, without.discount_cents, without.discount_code) == (first.id, 0, None)
    assert redemptions(db) == []
    assert place(db, settings, [(mug, 1)], "ONCE", email="bo@example.com").discount_cents


def test_orders_that_ended_unpaid_free_their_use_and_captured_ones_keep_it(db, settings):
    mug = make_product(db, variants=[("Std", 1250, 50)]).variant_ids[0]
    make_code(db, "TWO", usage_limit=2)
    expired = place(db, settings, [(mug, 1)], "TWO", email="a@example.com")
    cancelled = place(db, settings, [(mug, 1)], "TWO", email="b@example.com")
    assert refused(db, settings, [(mug, 1)], "TWO", email="c@example.com") == Refusal.USED_UP

    with db.unit_of_work() as uow:
        for order, status in ((expired, OrderStatus.EXPIRED),
                              (cancelled, OrderStatus.CANCELLED)):
            found = uow.session.get(Order, order.id)
            assert found is not None
            found.status = status
    captured = shopping.bought(db, settings, [(mug, 1)], email="d@example.com",
                               discount_code="TWO")
    place(db, settings, [(mug, 1)], "TWO", email="e@example.com")
    assert refused(db, settings, [(mug, 1)], "TWO", email="f@example.com") == Refusal.USED_UP

    with db.unit_of_work() as uow:  # cancelled after its payment was captured: still a use
        found = uow.session.get(Order, captured.id)
        assert found is not None
        found.status = OrderStatus.CANCELLED
    assert refused(db, settings, [(mug, 1)], "TWO", email="f@example.com") == Refusal.USED_UP
    with db.read_session() as session:
        code = discounts.get_code(session, "two")
        assert code.id is not None
        usage = discounts.usage_of(session, [code.id])[code.id]
    assert (usage.uses, usage.released, usage.customers, usage.awaiting_payment) == (2, 2, 2, 1)


def test_a_discounted_order_passes_screening_and_its_invoice_shows_the_discount(db, settings):
    lamp = make_product(db, variants=[("Brass", 4000, 10)]).variant_ids[0]
    make_code(db, "SPRING25", value=2500)

    order = shopping.bought(db, settings, [(lamp, 3)], discount_code="spring25")

    with db.read_session() as session:
        screening = session.exec(select(Screening).where(Screening.order_id == order.id)).one()
        payment = session.get(Payment, order.payment_id)
        invoice = session.exec(select(FinanceDocument).where(
            FinanceDocument.order_id == order.id,
            FinanceDocument.kind == DocumentKind.INVOICE)).one()
    assert screening.decision == "approve" and screening.quality_issues == []
    assert payment is not None and payment.amount_cents == order.total_cents
    assert order.discount_cents == 3000 and order.shipping_cents == 0  # 90 € after discount
    assert (invoice.content["discount_cents"], invoice.content["discount_code"]) == (
        3000, "SPRING25")
    assert invoice.amount_cents == order.total_cents
    text_of_pdf = pdf_text(render_finance_document(invoice))
    assert b"Discount" in text_of_pdf and b"SPRING25" in text_of_pdf
    assert b"30.00" in text_of_pdf


def test_screening_notices_a_discount_the_lines_do_not_account_for(db, settings):
    mug = make_product(db, variants=[("Std", 1250, 10)]).variant_ids[0]
    make_code(db, "SAVE10")
    order = place(db, settings, [(mug, 2)], "SAVE10")
    with db.read_session() as session:
        assert "totals_mismatch" not in [
            issue["code"] for issue in quality_issues(session, order, None, utcnow())]
    with db.unit_of_work() as uow:
        uow.session.execute(text("UPDATE order_line SET discount_cents = 0 "
                                 "WHERE order_id = :id").bindparams(id=order.id))
    with db.read_session() as session:
        fresh = session.get(Order, order.id)
        assert fresh is not None
        issues = quality_issues(session, fresh, None, utcnow())
    assert "totals_mismatch" in [issue["code"] for issue in issues]


def test_refunds_per_line_give_back_what_was_paid_for_the_units(db, settings):
    lamp = make_product(db, variants=[("Brass", 4000, 10)]).variant_ids[0]
    make_code(db, "THIRD", kind=DiscountKind.FIXED, value=1000)
    order = shopping.bought(db, settings, [(lamp, 3)], discount_code="THIRD")
    assert [line.discount_cents for line in lines_of(db, order)] == [1000]

    amounts = []
    for units in (1, 2):  # the line's 1000 discount splits 333 + 667 over these refunds
        with db.unit_of_work() as uow:
            refund = refunds.request_refund(
                uow=uow, order_id=order.id, amount_cents=None, reason="returned",
                lines=[refunds.RefundLine(variant_id=lamp, quantity=units)],
                requested_by="fin@x.test", settings=settings)
            amounts.append(refund.amount_cents)
        assert refunds.process_refund(
            db=db, gateway=create_gateway(settings), env=shopping.ENV,
            settings=settings, refund_id=refund.id) == "succeeded"
    assert amounts == [3667 + 697, 7333 + 1393]  # net paid for the units, plus 19% VAT
    assert sum(amounts) == order.total_cents == 13_090  # 12000 - 1000, free shipping, VAT
    with db.read_session() as session:
        payment = session.get(Payment, order.payment_id)
        notes = session.exec(select(FinanceDocument).where(
            FinanceDocument.kind == DocumentKind.CREDIT_NOTE)
            .order_by(col(FinanceDocument.sequence))).all()
    assert payment is not None and payment.refunded_cents == order.total_cents
    assert [note.amount_cents for note in notes] == amounts
    assert b"after the discount code THIRD" in pdf_text(render_finance_document(notes[0]))


def test_the_desk_keeps_codes_unique_in_any_case_and_audits_every_change(db):
    make_code(db, "Summer-24", description="summer sale")
    with pytest.raises(Conflict), db.unit_of_work() as uow:
        discounts.create_code(uow=uow, actor=STAFF, code="summer-24",
                              fields=discounts.DiscountFields(kind="fixed", value=100))
    with db.unit_of_work() as uow:
        discounts.update_code(uow=uow, actor=STAFF, code="SUMMER-24",
                              changes={"value": 1500, "usage_limit": 10})
        discounts.set_paused(uow=uow, actor=STAFF, code="summer-24", paused=True)
    with pytest.raises(discounts.InvalidDiscount, match="value"), db.unit_of_work() as uow:
        discounts.update_code(uow=uow, actor=STAFF, code="SUMMER-24",
                              changes={"value": 10_001})
    with db.read_session() as session:
        entries = session.exec(select(AuditEntry).where(
            col(AuditEntry.target_type) == "discount_code")
            .order_by(col(AuditEntry.id))).all()
        assert audit.verify_chain(session).ok
    assert [e.action for e in entries] == ["discount.create", "discount.update",
                                           "discount.pause"]
    assert all(e.actor_email == STAFF.email and e.target_id == "SUMMER-24" for e in entries)
    assert entries[1].before["value"] == 1000 and entries[1].after["value"] == 1500
    assert entries[0].after["discount_code"] == "SUMMER-24"
