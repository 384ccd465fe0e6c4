"""Returns on PostgreSQL and localstripe: the window, the quantities, receipt back into stock
through the ledger, the refund linked to the return and the return completed once it is made,
refusals and rejection."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlmodel import col, select

from conveyor.db import Database
from conveyor.settings import Settings
from conveyor.stripe_gateway import create_gateway
from fulfilment import refunds, returns
from fulfilment.inventory import verify_ledger
from models.after_sales import ItemCondition, ReturnLine, ReturnRequest, ReturnStatus
from models.base import utcnow
from models.finance import Refund, RefundStatus
from models.inventory import MovementKind, StockMovement
from models.messaging import Email
from models.orders import Order, OrderEvent
from models.payments import Payment, PaymentStatus
from tests import shopping
from tests.after_sales import ENV, lenient_screening, ship_order, shipped_order
from tests.factories import make_product, stock_of

STOCK, FINANCE = "stock@conveyor.test", "finance@conveyor.test"


@pytest.fixture
def shop(db: Database):
    lenient_screening(db)
    yield db
    with db.read_session() as session:
        assert verify_ledger(session) == []


def ask(db: Database, settings: Settings, order: Order, lines: list[tuple[int, int]], *,
        reason: str = "Too small", now=None) -> ReturnRequest:
    with db.unit_of_work() as uow:
        return returns.request_return(
            uow=uow, order_id=order.id, reason=reason, env=ENV, settings=settings, now=now,
            lines=[returns.ReturnLineRequest(v, q) for v, q in lines])


def receive(db: Database, request: ReturnRequest, lines: list[returns.ReceivedLine]
            ) -> ReturnRequest:
    with db.unit_of_work() as uow:
        return returns.receive_return(uow=uow, return_id=request.id, lines=lines,
                                      received_by=STOCK)


def refund(db: Database, settings: Settings, request: ReturnRequest,
           by: str = FINANCE) -> Refund:
    with db.unit_of_work() as uow:
        return returns.refund_return(uow=uow, return_id=request.id, requested_by=by,
                                     settings=settings)


def process(db: Database, settings: Settings, refund_id: uuid.UUID) -> str:
    return refunds.process_refund(db=db, gateway=create_gateway(settings), env=ENV,
                                  settings=settings, refund_id=refund_id)


def reload(db: Database, request: ReturnRequest) -> ReturnRequest:
    with db.read_session() as session:
        found = session.get(ReturnRequest, request.id)
        assert found is not None
        return found


def two_items(db: Database, settings: Settings) -> tuple[Order, int, int]:
    made = make_product(db, variants=[("Red", 2000, 10), ("Blue", 3000, 10)])
    red, blue = made.variant_ids
    return shipped_order(db, settings, [(red, 2), (blue, 1)]), red, blue


def test_a_return_gets_a_number_an_email_with_instructions_and_a_public_history_entry(
        shop, settings):
    db = shop
    order, red, _ = two_items(db, settings)

    request = ask(db, settings, order, [(red, 1)], reason="Too small for me")

    assert request.number.startswith("R-") and request.status == ReturnStatus.REQUESTED
    with db.read_session() as session:
        [line] = session.exec(select(ReturnLine).where(ReturnLine.return_id == request.id))
        email = session.exec(select(Email).where(Email.template == "return_requested")).one()
        entry = session.exec(select(OrderEvent).where(
            OrderEvent.order_id == order.id, col(OrderEvent.note).contains(request.number))).one()
    assert (line.variant_id, line.quantity) == (red, 1)
    assert email.to_address == order.email
    assert request.number in email.text_body and settings.return_address in email.text_body
    assert "on the outside of the parcel" in email.text_body
    assert request.number in email.html_body and order.status_token in email.text_body
    assert entry.public and "Too small for me" in entry.note


def test_no_more_than_was_shipped_less_what_is_already_returned_or_refunded(shop, settings):
    db = shop
    order, red, blue = two_items(db, settings)
    with pytest.raises(returns.ReturnRefused, match="At most 2"):
        ask(db, settings, order, [(red, 3)])
    ask(db, settings, order, [(red, 1)])
    with pytest.raises(returns.ReturnRefused, match="At most 1"):
        ask(db, settings, order, [(red, 2)])
    with db.unit_of_work() as uow:  # finance refunds the blue one outside any return
        refunds.request_refund(uow=uow, order_id=order.id, amount_cents=None,
                               lines=[refunds.RefundLine(blue, 1)], reason="goodwill",
                               requested_by=FINANCE, settings=settings)
    with pytest.raises(returns.ReturnRefused, match="At most 0"):
        ask(db, settings, order, [(blue, 1)])
    other = make_product(db, variants=[("Std", 1000, 5)]).variant_ids[0]
    with pytest.raises(returns.ReturnRefused, match="not been shipped"):
        ask(db, settings, order, [(other, 1)])
    with pytest.raises(returns.ReturnRefused, match="at least one item"):
        ask(db, settings, order, [(red, 0)])
    with pytest.raises(returns.ReturnRefused, match="why"):
        ask(db, settings, order, [(red, 1)], reason="  ")
    with db.read_session() as session:
        assert len(session.exec(select(ReturnRequest)).all()) == 1


def test_only_shipped_items_and_only_within_the_window(shop, settings):
    db = shop
    made = make_product(db, variants=[("Std", 2000, 10)])
    variant = made.variant_ids[0]
    allocated = shopping.bought(db, settings, [(variant, 1)])
    with pytest.raises(returns.ReturnRefused, match="Only items that have been shipped"):
        ask(db, settings, allocated, [(variant, 1)])
    order = ship_order(db, settings, allocated)
    late = utcnow() + timedelta(days=settings.return_window_days, minutes=1)
    with pytest.raises(returns.ReturnRefused, match=r"return period .* ended"):
        ask(db, settings, order, [(variant, 1)], now=late)
    just_in_time = utcnow() + timedelta(days=settings.return_window_days, minutes=-1)
    assert ask(db, settings, order, [(variant, 1)], now=just_in_time).status == "requested"


def test_receipt_restocks_sellable_units_through_the_ledger_and_not_damaged_ones(shop, settings):
    db = shop
    order, red, blue = two_items(db, settings)
    request = ask(db, settings, order, [(red, 2), (blue, 1)])
    red_before, blue_before = stock_of(db, red).on_hand, stock_of(db, blue).on_hand

    received = receive(db, request, [
        returns.ReceivedLine(red, 2, ItemCondition.SELLABLE),
        returns.ReceivedLine(blue, 1, ItemCondition.DAMAGED)])

    assert received.status == ReturnStatus.RECEIVED and received.received_by == STOCK
    assert stock_of(db, red).on_hand == red_before + 2
    assert stock_of(db, blue).on_hand == blue_before
    with db.read_session() as session:
        moves = session.exec(select(StockMovement).where(
            StockMovement.kind == MovementKind.RETURN)).all()
        lines = {line.variant_id: line for line in session.exec(
            select(ReturnLine).where(ReturnLine.return_id == request.id))}
        entry = session.exec(select(OrderEvent).where(
            OrderEvent.order_id == order.id, col(OrderEvent.note).contains("arrived"))).one()
    assert [(m.variant_id, m.on_hand_delta, m.document_type, m.document_id) for m in moves] == [
        (red, 2, "return", request.number)]
    assert (lines[red].received_quantity, lines[red].restocked_quantity) == (2, 2)
    assert (lines[blue].received_quantity, lines[blue].restocked_quantity,
            lines[blue].condition) == (1, 0, "damaged")
    assert entry.public and entry.actor == STOCK
    with pytest.raises(returns.ReturnRefused, match="only a requested return"):
        receive(db, request, [returns.ReceivedLine(red, 2, ItemCondition.SELLABLE),
                              returns.ReceivedLine(blue, 1, ItemCondition.DAMAGED)])
    assert stock_of(db, red).on_hand == red_before + 2


def test_receipt_must_name_every_line_with_counts_that_fit(shop, settings):
    db = shop
    order, red, blue = two_items(db, settings)
    request = ask(db, settings, order, [(red, 1), (blue, 1)])
    with pytest.raises(returns.ReturnRefused, match="Name each line"):
        receive(db, request, [returns.ReceivedLine(red, 1, ItemCondition.SELLABLE)])
    with pytest.raises(returns.ReturnRefused, match="between 0 and 1"):
        receive(db, request, [returns.ReceivedLine(red, 2, ItemCondition.SELLABLE),
                              returns.ReceivedLine(blue, 1, ItemCondition.SELLABLE)])
    with pytest.raises(returns.ReturnRefused, match="missing"):
        receive(db, request, [returns.ReceivedLine(red, 1, ItemCondition.MISSING),
                              returns.ReceivedLine(blue, 1, ItemCondition.SELLABLE)])
    assert reload(db, request).status == ReturnStatus.REQUESTED


def test_the_refund_is_linked_and_the_return_completes_when_the_refund_is_made(shop, settings):
    db = shop
    order, red, blue = two_items(db, settings)
    request = ask(db, settings, order, [(red, 2), (blue, 1)])
    receive(db, request, [returns.ReceivedLine(red, 1, ItemCondition.SELLABLE),
                          returns.ReceivedLine(blue, 0, ItemCondition.MISSING)])
    red_after_receipt = stock_of(db, red).on_hand

    made = refund(db, settings, request)

    assert reload(db, request).refund_id == made.id
    assert made.amount_cents == 2000 + round(2000 * order.tax_rate_bps / 10_000)  # 1 red
    assert [(line["variant_id"], line["quantity"], line["restock_location_id"])
            for line in made.lines] == [(red, 1, None)]
    assert reload(db, request).status == ReturnStatus.RECEIVED  # until Stripe has done it
    with pytest.raises(returns.ReturnRefused, match="processing"):
        refund(db, settings, request)

    assert process(db, settings, made.id) == "succeeded"

    done = reload(db, request)
    assert done.status == ReturnStatus.REFUNDED and done.completed_at is not None
    assert stock_of(db, red).on_hand == red_after_receipt  # restocked once, at receipt
    with db.read_session() as session:
        payment = session.get(Payment, order.payment_id)
    assert payment is not None and payment.refunded_cents == made.amount_cents
    assert payment.status == PaymentStatus.PARTIALLY_REFUNDED
    with pytest.raises(returns.ReturnRefused, match="refunded"):
        refund(db, settings, request)


def test_a_large_return_refund_waits_for_a_second_person_and_the_return_stays_received(
        shop, settings):
    db = shop
    strict = settings.model_copy(update={"refund_approval_cents": 1000})
    order, red, _ = two_items(db, settings)
    request = ask(db, settings, order, [(red, 1)])
    receive(db, request, [returns.ReceivedLine(red, 1, ItemCondition.SELLABLE)])

    made = refund(db, strict, request, by="alice@conveyor.test")

    assert made.status == RefundStatus.PENDING_APPROVAL
    assert process(db, settings, made.id) == "nothing to do"
    assert reload(db, request).status == ReturnStatus.RECEIVED
    with db.unit_of_work() as uow:
        refunds.decide_refund(uow=uow, refund_id=made.id, approve=True,
                              decided_by="bob@conveyor.test")
    assert process(db, settings, made.id) == "succeeded"
    assert reload(db, request).status == ReturnStatus.REFUNDED


def test_a_rejected_refund_lets_finance_ask_again(shop, settings):
    db = shop
    strict = settings.model_copy(update={"refund_approval_cents": 1000})
    order, red, _ = two_items(db, settings)
    request = ask(db, settings, order, [(red, 1)])
    receive(db, request, [returns.ReceivedLine(red, 1, ItemCondition.SELLABLE)])
    first = refund(db, strict, request, by="alice@conveyor.test")
    with db.unit_of_work() as uow:
        refunds.decide_refund(uow=uow, refund_id=first.id, approve=False,
                              decided_by="bob@conveyor.test")
    second = refund(db, settings, request)
    assert second.id != first.id and reload(db, request).refund_id == second.id


def test_nothing_arrived_means_nothing_to_refund_and_a_rejection_tells_the_customer_why(
        shop, settings):
    db = shop
    order, red, _ = two_items(db, settings)
    request = ask(db, settings, order, [(red, 1)])
    receive(db, request, [returns.ReceivedLine(red, 0, ItemCondition.MISSING)])
    with pytest.raises(returns.ReturnRefused, match="Nothing of return"):
        refund(db, settings, request)

    with db.unit_of_work() as uow:
        rejected = returns.reject_return(uow=uow, return_id=request.id,
                                         reason="The parcel arrived empty.",
                                         rejected_by=STOCK, env=ENV, settings=settings)

    assert rejected.status == ReturnStatus.REJECTED
    assert rejected.rejection_reason == "The parcel arrived empty."
    with db.read_session() as session:
        email = session.exec(select(Email).where(Email.template == "return_rejected")).one()
        entry = session.exec(select(OrderEvent).where(
            OrderEvent.order_id == order.id, col(OrderEvent.note).contains("not accepted"))
        ).one()
    assert "arrived empty" in email.text_body and entry.public
    # a rejected return no longer counts: the unit may be returned again
    assert ask(db, settings, order, [(red, 2)]).status == ReturnStatus.REQUESTED


def test_concurrent_requests_for_the_same_units_let_only_one_through(shop, settings):
    db = shop
    order, red, _ = two_items(db, settings)

    def attempt(_: int) -> str:
        try:
            return ask(db, settings, order, [(red, 2)]).status
        except returns.ReturnRefused:
            return "refused"

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = sorted(pool.map(attempt, range(4)))
    assert outcomes == ["refused"] * 3 + ["requested"]
