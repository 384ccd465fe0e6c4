"""Refunds against localstripe, invoices and credit notes: amounts, approvals, restocking."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlmodel import col, select

from conveyor.db import Database
from conveyor.settings import Settings
from conveyor.stripe_gateway import create_gateway
from fulfilment import refunds
from fulfilment.inventory import verify_ledger
from fulfilment.invoicing import issue_invoice
from models.finance import DocumentKind, FinanceDocument, Refund, RefundStatus
from models.inventory import Location
from models.messaging import Email
from models.payments import Payment, PaymentStatus
from tests import shopping
from tests.factories import make_pending_order, make_product, stock_of

ENV = shopping.ENV


def captured_order(db: Database, settings: Settings, units: int = 2):
    made = make_product(db, variants=[("Std", 4000, 10)])
    return shopping.bought(db, settings, [(made.variant_ids[0], units)]), made


def process(db: Database, settings: Settings, refund: Refund) -> str:
    return refunds.process_refund(db=db, gateway=create_gateway(settings), env=ENV,
                                  settings=settings, refund_id=refund.id)


def test_capture_issues_one_invoice_and_a_partial_refund_issues_a_credit_note(db, settings):
    order, _ = captured_order(db, settings)
    with db.read_session() as session:
        [invoice] = session.exec(select(FinanceDocument).where(
            FinanceDocument.order_id == order.id)).all()
    assert invoice.kind == DocumentKind.INVOICE and invoice.amount_cents == order.total_cents
    assert invoice.number.startswith("INV-") and invoice.number.endswith("000001")

    with db.unit_of_work() as uow:
        refund = refunds.request_refund(uow=uow, order_id=order.id, amount_cents=1500, lines=[],
                                        reason="scratched", requested_by="fin@x.test",
                                        settings=settings)
    assert refund.status == RefundStatus.PROCESSING
    assert process(db, settings, refund) == "succeeded"
    assert process(db, settings, refund) == "nothing to do"  # a repeated message
    with db.read_session() as session:
        payment = session.get(Payment, order.payment_id)
        notes = session.exec(select(FinanceDocument).where(
            FinanceDocument.kind == DocumentKind.CREDIT_NOTE)).all()
        email = session.exec(select(Email).where(Email.template == "refund_issued")).one()
    assert (payment.status, payment.refunded_cents) == (PaymentStatus.PARTIALLY_REFUNDED, 1500)
    assert [n.amount_cents for n in notes] == [1500] and notes[0].number.endswith("000001")
    assert notes[0].access_token in email.text_body


def test_never_more_than_was_captured_even_though_stripes_double_would_allow_it(db, settings):
    order, _ = captured_order(db, settings)
    with db.unit_of_work() as uow:
        refunds.request_refund(uow=uow, order_id=order.id, amount_cents=order.total_cents - 100,
                               lines=[], reason="most", requested_by="a", settings=settings)
    with pytest.raises(refunds.RefundRefused, match="At most 100 cents"), db.unit_of_work() as uow:
        refunds.request_refund(uow=uow, order_id=order.id, amount_cents=101, lines=[],
                               reason="more", requested_by="a", settings=settings)


def test_refunding_a_line_unit_by_unit_gives_back_exactly_its_gross_then_what_is_left(
        db, settings):
    # Given two units at a price whose VAT rounds up for one unit and down for two
    made = make_product(db, variants=[("Std", 1003, 10)])
    order = shopping.bought(db, settings, [(made.variant_ids[0], 2)])
    rate = order.tax_rate_bps / 10_000
    line_gross = 2006 + round(2006 * rate)
    assert round(1003 * rate) * 2 != round(2006 * rate)  # the case is a real one

    # When each unit is refunded on its own
    amounts = []
    for _ in range(2):
        with db.unit_of_work() as uow:
            amounts.append(refunds.request_refund(
                uow=uow, order_id=order.id, amount_cents=None, lines=[refunds.RefundLine(
                    made.variant_ids[0], 1)], reason="one", requested_by="a",
                settings=settings).amount_cents)

    # Then together they give back the line's gross to the cent, and what is left is shipping
    assert sum(amounts) == line_gross
    with db.unit_of_work() as uow:
        rest = refunds.request_refund(uow=uow, order_id=order.id, amount_cents=None, lines=[],
                                      reason="rest", requested_by="a", settings=settings)
    assert rest.amount_cents == order.total_cents - line_gross


def test_the_last_units_give_back_what_is_left_when_rounding_asks_a_cent_more(db, settings):
    # Given an order where what is left is one cent short of a line's gross (per-line VAT
    # rounding against the order's VAT rounded once can do that)
    made = make_product(db, variants=[("Std", 1003, 10)])
    order = shopping.bought(db, settings, [(made.variant_ids[0], 1)])
    line_gross = 1003 + round(1003 * order.tax_rate_bps / 10_000)
    with db.unit_of_work() as uow:
        refunds.request_refund(uow=uow, order_id=order.id, lines=[], reason="shipping",
                               amount_cents=order.total_cents - line_gross + 1,
                               requested_by="a", settings=settings)

    # When the line is refunded
    with db.unit_of_work() as uow:
        last = refunds.request_refund(uow=uow, order_id=order.id, amount_cents=None, lines=[
            refunds.RefundLine(made.variant_ids[0], 1)], reason="line", requested_by="a",
            settings=settings)

    # Then it gives back what is left rather than being refused
    assert last.amount_cents == line_gross - 1


def test_large_refunds_wait_for_a_second_person(db, settings):
    strict = settings.model_copy(update={"refund_approval_cents": 1000})
    order, _ = captured_order(db, settings)
    with db.unit_of_work() as uow:
        refund = refunds.request_refund(uow=uow, order_id=order.id, amount_cents=5000, lines=[],
                                        reason="broken", requested_by="alice", settings=strict)
    assert refund.status == RefundStatus.PENDING_APPROVAL
    with pytest.raises(refunds.RefundRefused, match="second person"), db.unit_of_work() as uow:
        refunds.decide_refund(uow=uow, refund_id=refund.id, approve=True, decided_by="alice")
    with db.unit_of_work() as uow:
        refunds.decide_refund(uow=uow, refund_id=refund.id, approve=True, decided_by="bob")
    assert process(db, settings, refund) == "succeeded"


def test_a_per_line_refund_can_put_the_items_back_into_a_bin(db, settings):
    order, made = captured_order(db, settings, units=2)
    variant = made.variant_ids[0]
    with db.read_session() as session:
        location = session.exec(select(Location).where(Location.code == "A-01-1")).one()
    before = stock_of(db, variant).on_hand
    with db.unit_of_work() as uow:
        refund = refunds.request_refund(
            uow=uow, order_id=order.id, amount_cents=None, reason="returned",
            lines=[refunds.RefundLine(variant, 1, location.id)], requested_by="a",
            settings=settings)
    assert refund.amount_cents == 4000 + round(4000 * order.tax_rate_bps / 10_000)
    assert process(db, settings, refund) == "succeeded"
    assert stock_of(db, variant).on_hand == before + 1
    with pytest.raises(refunds.RefundRefused, match="At most 1"), db.unit_of_work() as uow:
        refunds.request_refund(uow=uow, order_id=order.id, amount_cents=None, reason="again",
                               lines=[refunds.RefundLine(variant, 2)], requested_by="a",
                               settings=settings)
    with db.read_session() as session:
        assert verify_ledger(session) == []


def test_invoice_numbers_stay_gapless_when_issued_concurrently(db, settings):
    orders = [make_pending_order(db, email=f"n{i}@example.com") for i in range(24)]

    def issue(order_id) -> str:
        with db.unit_of_work() as uow:
            return issue_invoice(uow=uow, order_id=order_id).number

    with ThreadPoolExecutor(max_workers=8) as pool:
        numbers = list(pool.map(issue, orders))
    with db.read_session() as session:
        sequences = sorted(session.exec(select(FinanceDocument.sequence).where(
            FinanceDocument.kind == DocumentKind.INVOICE).order_by(
            col(FinanceDocument.sequence))).all())
    assert sequences == list(range(1, 25)) and len(set(numbers)) == 24
