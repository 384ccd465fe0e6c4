"""The customer's own requests on PostgreSQL and localstripe: cancelling before and after the
capture, too late once picking began (refused and recorded), and messages about an order with
the support desk's replies, assignment and the hourly limit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import col, select

from conveyor.db import Database
from conveyor.settings import Settings
from conveyor.stripe_gateway import create_gateway
from fulfilment import refunds, support
from fulfilment.cancellation import request_cancellation
from fulfilment.inventory import verify_ledger
from models.after_sales import (
    CancellationRequest,
    CancellationStatus,
    SupportMessage,
    SupportThread,
    ThreadStatus,
)
from models.base import utcnow
from models.finance import Refund, RefundStatus
from models.inventory import Reservation
from models.messaging import Email, OutboxMessage
from models.orders import Order, OrderEvent, OrderStatus, transition
from models.payments import Payment, PaymentStatus
from tests import shopping
from tests.after_sales import ENV, lenient_screening, ship_order
from tests.factories import make_product, make_staff, stock_of


@pytest.fixture
def shop(db: Database):
    lenient_screening(db)
    yield db
    with db.read_session() as session:
        assert verify_ledger(session) == []


def cancel(db: Database, settings: Settings, order: Order, reason: str = "") -> \
        CancellationRequest:
    with db.unit_of_work() as uow:
        return request_cancellation(uow=uow, order_id=order.id, reason=reason, env=ENV,
                                    settings=settings)


def reload(db: Database, order: Order) -> Order:
    with db.read_session() as session:
        found = session.get(Order, order.id)
        assert found is not None
        return found


def authorised_order(db: Database, settings: Settings, variant: int) -> Order:
    cart_id, view = shopping.cart(db, [(variant, 2)])
    order = shopping.place(db, settings, cart_id, view)
    shopping.pay(db, settings, order.id)
    return reload(db, order)


def test_cancelling_before_the_capture_releases_stock_and_voids_the_authorisation(shop,
                                                                                  settings):
    db = shop
    variant = make_product(db, variants=[("Std", 2500, 10)]).variant_ids[0]
    order = authorised_order(db, settings, variant)
    assert order.status == OrderStatus.AUTHORIZED and stock_of(db, variant).reserved == 2

    request = cancel(db, settings, order, "Ordered the wrong size")

    assert request.status == CancellationStatus.CANCELLED and request.decided_at is not None
    assert reload(db, order).status == OrderStatus.CANCELLED
    assert stock_of(db, variant).reserved == 0 and stock_of(db, variant).available == 10
    with db.read_session() as session:
        voids = session.exec(select(OutboxMessage).where(
            OutboxMessage.actor_name == "void_payment")).all()
        assert session.exec(select(Refund)).all() == []
        event = session.exec(select(OrderEvent).where(
            OrderEvent.order_id == order.id, OrderEvent.to_status == OrderStatus.CANCELLED)
        ).one()
        assert session.exec(select(Reservation).where(
            Reservation.order_id == order.id, Reservation.status == "active")).all() == []
    assert len(voids) == 1
    assert event.actor == "customer" and "wrong size" in event.note and event.public


def test_cancelling_after_the_capture_refunds_everything(shop, settings):
    db = shop
    variant = make_product(db, variants=[("Std", 2500, 10)]).variant_ids[0]
    order = shopping.bought(db, settings, [(variant, 2)])
    assert order.status == OrderStatus.ALLOCATED and stock_of(db, variant).allocated == 2

    request = cancel(db, settings, order)

    assert request.status == CancellationStatus.CANCELLED and "refunded" in request.outcome
    assert reload(db, order).status == OrderStatus.CANCELLED
    assert stock_of(db, variant).allocated == 0 and stock_of(db, variant).on_hand == 10
    with db.read_session() as session:
        [refund] = session.exec(select(Refund).where(Refund.order_id == order.id)).all()
    assert refund.amount_cents == order.total_cents and refund.requested_by == "customer"
    assert refund.status == RefundStatus.PROCESSING
    assert refunds.process_refund(db=db, gateway=create_gateway(settings), env=ENV,
                                  settings=settings, refund_id=refund.id) == "succeeded"
    with db.read_session() as session:
        payment = session.get(Payment, order.payment_id)
    assert payment is not None and payment.status == PaymentStatus.REFUNDED


def test_an_order_on_hold_is_cancelled_without_a_refund(shop, settings):
    db = shop
    variant = make_product(db, variants=[("Std", 2500, 10)]).variant_ids[0]
    order = authorised_order(db, settings, variant)
    with db.unit_of_work() as uow:
        held = uow.session.get(Order, order.id)
        assert held is not None
        uow.session.add(transition(held, OrderStatus.ON_HOLD, actor="reviewer@conveyor.test",
                                   reason="checking the address", at=utcnow()))

    assert cancel(db, settings, order).status == CancellationStatus.CANCELLED

    assert reload(db, order).status == OrderStatus.CANCELLED
    with db.read_session() as session:
        assert session.exec(select(Refund)).all() == []


def test_too_late_once_picking_began_is_refused_and_recorded(shop, settings):
    db = shop
    variant = make_product(db, variants=[("Std", 2500, 10)]).variant_ids[0]
    order = ship_order(db, settings, shopping.bought(db, settings, [(variant, 1)]))

    request = cancel(db, settings, order, "changed my mind")

    assert request.status == CancellationStatus.REFUSED
    assert "already been shipped" in request.outcome
    assert reload(db, order).status == OrderStatus.SHIPPED
    with db.read_session() as session:
        stored = session.exec(select(CancellationRequest)).one()
        assert session.exec(select(Refund)).all() == []
    assert (stored.status, stored.reason) == ("refused", "changed my mind")


def message(db: Database, settings: Settings, order: Order, body: str, subject: str = "",
            now=None) -> SupportMessage:
    with db.unit_of_work() as uow:
        return support.post_customer_message(uow=uow, order_id=order.id, subject=subject,
                                             body=body, settings=settings, now=now)


def test_a_conversation_customer_writes_staff_replies_by_email_customer_answers(shop,
                                                                              settings):
    db = shop
    order = shopping.bought(db, settings, [(make_product(db).variant_ids[0], 1)])
    first = message(db, settings, order, "Where is my parcel?", subject="Delivery")
    with db.read_session() as session:
        thread = session.get(SupportThread, first.thread_id)
    assert thread is not None and thread.status == ThreadStatus.OPEN
    assert thread.subject == "Delivery" and first.author == order.email

    with db.unit_of_work() as uow:
        reply = support.reply_to_thread(uow=uow, thread_id=thread.id,
                                        body="It leaves <today>.", author="sam@conveyor.test",
                                        env=ENV, settings=settings)
    second = message(db, settings, order, "Thanks!")

    assert second.thread_id == thread.id and not reply.from_customer
    with db.read_session() as session:
        email = session.exec(select(Email).where(Email.template == "support_reply")).one()
        assert session.get(SupportThread, thread.id).status == ThreadStatus.OPEN
        history = session.exec(select(OrderEvent).where(
            OrderEvent.order_id == order.id, col(OrderEvent.note).contains("Reply"))).one()
    assert email.to_address == order.email and "It leaves <today>." in email.text_body
    assert "It leaves &lt;today&gt;." in email.html_body  # escaped in HTML
    assert "sam@conveyor.test" not in email.text_body  # staff addresses stay inside
    assert not history.public and history.actor == "sam@conveyor.test"


def test_a_closed_conversation_is_followed_by_a_new_one(shop, settings):
    db = shop
    order = shopping.bought(db, settings, [(make_product(db).variant_ids[0], 1)])
    first = message(db, settings, order, "Question one")
    with db.unit_of_work() as uow:
        support.set_thread_status(uow=uow, thread_id=first.thread_id,
                                  status=ThreadStatus.CLOSED, actor="sam@conveyor.test")
    second = message(db, settings, order, "Question two")
    assert second.thread_id != first.thread_id


def test_messages_are_checked_and_limited_per_order_and_hour(shop, settings):
    db = shop
    strict = settings.model_copy(update={"support_messages_per_order_per_hour": 2})
    order = shopping.bought(db, settings, [(make_product(db).variant_ids[0], 1)])
    with pytest.raises(support.MessageRefused, match="Write a message"):
        message(db, strict, order, "   ")
    with pytest.raises(support.MessageRefused, match="at most 5000"):
        message(db, strict, order, "x" * 5001)
    with pytest.raises(support.MessageRefused, match="subject"):
        message(db, strict, order, "hello", subject="s" * 201)
    message(db, strict, order, "one")
    message(db, strict, order, "two")
    with pytest.raises(support.TooManyMessages) as refused:
        message(db, strict, order, "three")
    assert 0 < refused.value.details["retry_after"] <= 3600
    assert message(db, strict, order, "later", now=utcnow() + timedelta(hours=1, seconds=5))
    with db.read_session() as session:
        assert len(session.exec(select(SupportMessage)).all()) == 3


def test_only_support_staff_can_be_assigned(shop, settings):
    db = shop
    order = shopping.bought(db, settings, [(make_product(db).variant_ids[0], 1)])
    first = message(db, settings, order, "Hello")
    helper = make_staff(db, "support", email="Helper@Conveyor.test")
    picker = make_staff(db, "picker")
    with pytest.raises(support.MessageRefused, match="not a staff user of the support desk"), \
            db.unit_of_work() as uow:
        support.assign_thread(uow=uow, thread_id=first.thread_id, assignee=picker.email,
                              actor="lead@conveyor.test")
    with db.unit_of_work() as uow:
        thread, before = support.assign_thread(uow=uow, thread_id=first.thread_id,
                                               assignee="helper@conveyor.test",
                                               actor="lead@conveyor.test")
    assert (thread.assigned_to, before) == (helper.email.lower(), "")
