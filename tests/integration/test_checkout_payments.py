"""Checkout and payment services against PostgreSQL and the real stripe SDK on localstripe."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import col, select

from conveyor.db import Database
from conveyor.stripe_gateway import create_gateway
from fulfilment import payments
from fulfilment.expiry import expire_unpaid_orders
from fulfilment.inventory import verify_ledger
from models.base import utcnow
from models.cart import CartLine
from models.messaging import Email, OutboxMessage
from models.orders import Order, OrderEvent, OrderLine, OrderStatus
from models.payments import Payment, PaymentStatus
from storefront import checkout
from tests import shopping
from tests.factories import make_product, stock_of
from tests.helpers import CARD_3DS, CARD_DECLINED
from tests.shopping import DETAILS, ENV


def _order(db: Database, order_id) -> Order:
    with db.read_session() as session:
        order = session.get(Order, order_id)
        assert order is not None
        return order


def _payments(db: Database, order_id) -> list[Payment]:
    with db.read_session() as session:
        return list(session.exec(select(Payment).where(Payment.order_id == order_id)
                                 .order_by(col(Payment.attempt))))


def _outbox(db: Database) -> list[str]:
    with db.read_session() as session:
        return [m.actor_name for m in session.exec(
            select(OutboxMessage).order_by(col(OutboxMessage.id)))]


def test_placing_an_order_snapshots_server_prices_and_reserves_stock(db, settings):
    product = make_product(db, variants=[("Blue", 2490, 6), ("Red", 1990, 6)])
    blue, red = product.variant_ids
    cart_id, view = shopping.cart(db, [(blue, 2), (red, 1)])
    order = shopping.place(db, settings, cart_id, view)

    assert order.status == OrderStatus.PENDING_PAYMENT
    assert order.subtotal_cents == 2 * 2490 + 1990
    assert order.tax_rate_bps == 1900
    assert order.total_cents == order.subtotal_cents + order.shipping_cents + order.tax_cents
    assert order.expires_at is not None and order.expires_at > utcnow() + timedelta(minutes=14)
    with db.read_session() as session:
        lines = session.exec(select(OrderLine).where(OrderLine.order_id == order.id)).all()
        assert {(ln.variant_id, ln.unit_price_cents, ln.quantity) for ln in lines} == {
            (blue, 2490, 2), (red, 1990, 1)}
    assert (stock_of(db, blue).reserved, stock_of(db, red).reserved) == (2, 1)


def test_a_good_card_authorises_the_order_and_hands_it_to_the_middle_office(db, settings):
    variant = make_product(db, variants=[("One", 4990, 3)]).variant_ids[0]
    cart_id, view = shopping.cart(db, [(variant, 1)])
    order = shopping.place(db, settings, cart_id, view)

    outcome = shopping.pay(db, settings, order.id)

    assert outcome.outcome == checkout.Outcome.AUTHORIZED
    paid = _order(db, order.id)
    assert paid.status == OrderStatus.AUTHORIZED and paid.expires_at is None
    [payment] = _payments(db, order.id)
    assert payment.status == PaymentStatus.AUTHORIZED
    assert (payment.card_brand, payment.card_last4) == ("Visa", "4242")
    assert payment.amount_cents == paid.total_cents
    assert payment.stripe_payment_intent_id is not None
    assert _outbox(db) == ["screen_order", "deliver_email"]
    with db.read_session() as session:
        email = session.exec(select(Email)).one()
        assert paid.status_token in email.text_body and email.to_address == "ada@example.com"
        assert session.exec(select(CartLine).where(CartLine.cart_id == cart_id)).all() == []
    intent = create_gateway(settings).retrieve_intent(payment.stripe_payment_intent_id)
    assert (intent.status, intent.amount) == ("requires_capture", paid.total_cents)
    assert intent.metadata["order_id"] == str(order.id)


def test_a_decline_then_another_card_ends_in_one_order_paid_on_the_second_attempt(db, settings):
    variant = make_product(db, variants=[("One", 1500, 3)]).variant_ids[0]
    cart_id, view = shopping.cart(db, [(variant, 1)])
    order = shopping.place(db, settings, cart_id, view)

    declined = shopping.pay(db, settings, order.id, CARD_DECLINED)
    assert declined.outcome == checkout.Outcome.DECLINED
    assert "declined" in declined.message
    assert _order(db, order.id).status == OrderStatus.PENDING_PAYMENT

    again = shopping.place(db, settings, cart_id, view, pending=order.id)
    assert again.id == order.id
    assert shopping.pay(db, settings, order.id).outcome == checkout.Outcome.AUTHORIZED
    with db.read_session() as session:
        assert len(session.exec(select(Order)).all()) == 1
    assert [(p.attempt, p.status) for p in _payments(db, order.id)] == [
        (1, PaymentStatus.FAILED), (2, PaymentStatus.AUTHORIZED)]
    assert stock_of(db, variant).reserved == 1


@pytest.mark.parametrize("passes", [True, False])
def test_three_d_secure_is_finished_in_the_browser_and_read_back_from_stripe(
    db, settings, passes
):
    variant = make_product(db, variants=[("One", 1500, 3)]).variant_ids[0]
    cart_id, view = shopping.cart(db, [(variant, 1)])
    order = shopping.place(db, settings, cart_id, view)
    outcome = shopping.pay(db, settings, order.id, CARD_3DS)
    assert outcome.outcome == checkout.Outcome.REQUIRES_ACTION and outcome.client_secret
    [payment] = _payments(db, order.id)
    assert payment.status == PaymentStatus.REQUIRES_ACTION

    shopping.authenticate(settings, payment.stripe_payment_intent_id, outcome.client_secret, passes)
    result = payments.refresh_payment(db=db, gateway=create_gateway(settings), env=ENV,
                                      settings=settings, payment_id=payment.id,
                                      source="3-D Secure return")
    assert result is not None
    if passes:
        assert result.payment_status == PaymentStatus.AUTHORIZED
        assert _order(db, order.id).status == OrderStatus.AUTHORIZED
    else:
        assert result.payment_status == PaymentStatus.FAILED
        assert _order(db, order.id).status == OrderStatus.PENDING_PAYMENT


def test_a_second_authorisation_for_a_paid_order_is_voided(db, settings):
    variant = make_product(db, variants=[("One", 1500, 3)]).variant_ids[0]
    cart_id, view = shopping.cart(db, [(variant, 1)])
    order = shopping.place(db, settings, cart_id, view)
    late = shopping.pay(db, settings, order.id, CARD_3DS)  # shopper leaves 3-D Secure open...
    assert shopping.pay(db, settings, order.id).outcome == checkout.Outcome.AUTHORIZED  # pays again
    first = _payments(db, order.id)[0]
    shopping.authenticate(settings, first.stripe_payment_intent_id, late.client_secret, True)

    gateway = create_gateway(settings)
    payments.refresh_payment(db=db, gateway=gateway, env=ENV, settings=settings,
                             payment_id=first.id, source="test")
    assert _outbox(db).count("void_payment") == 1
    assert payments.void_payment(db=db, gateway=gateway, env=ENV, settings=settings,
                                 payment_id=first.id)
    assert not payments.void_payment(db=db, gateway=gateway, env=ENV, settings=settings,
                                     payment_id=first.id)  # twice is harmless
    statuses = [p.status for p in _payments(db, order.id)]
    assert statuses == [PaymentStatus.CANCELED, PaymentStatus.AUTHORIZED]
    assert gateway.retrieve_intent(first.stripe_payment_intent_id).status == "canceled"
    assert _order(db, order.id).payment_id == _payments(db, order.id)[1].id


def test_unpaid_orders_expire_release_stock_and_cannot_be_paid_afterwards(db, settings):
    variant = make_product(db, variants=[("One", 1500, 4)]).variant_ids[0]
    gateway = create_gateway(settings)
    abandoned_id, view = shopping.cart(db, [(variant, 1)])
    abandoned = shopping.place(db, settings, abandoned_id, view)
    declined_id, view = shopping.cart(db, [(variant, 1)])
    declined = shopping.place(db, settings, declined_id, view)
    shopping.pay(db, settings, declined.id, CARD_DECLINED)
    in_3ds_id, view = shopping.cart(db, [(variant, 1)])
    in_3ds = shopping.place(db, settings, in_3ds_id, view)
    shopping.pay(db, settings, in_3ds.id, CARD_3DS)
    assert stock_of(db, variant).reserved == 3

    later = utcnow() + timedelta(minutes=settings.reservation_minutes + 1)
    report = expire_unpaid_orders(db=db, gateway=gateway, env=ENV, settings=settings, now=later)

    assert report.expired == 3
    assert _order(db, abandoned.id).status == OrderStatus.EXPIRED
    assert _order(db, declined.id).status == OrderStatus.PAYMENT_FAILED
    assert _order(db, in_3ds.id).status == OrderStatus.EXPIRED
    pending_3ds = _payments(db, in_3ds.id)[0]
    assert pending_3ds.status == PaymentStatus.CANCELED
    assert gateway.retrieve_intent(pending_3ds.stripe_payment_intent_id).status == "canceled"
    assert stock_of(db, variant).reserved == 0
    with db.read_session() as session:
        assert verify_ledger(session) == []
        reasons = session.exec(select(OrderEvent.note).where(
            OrderEvent.order_id == abandoned.id, OrderEvent.to_status == OrderStatus.EXPIRED
        )).all()
    assert reasons == ["Not paid before the reservation ran out."]


def test_an_order_paid_just_before_expiry_is_kept(db, settings):
    variant = make_product(db, variants=[("One", 1500, 2)]).variant_ids[0]
    cart_id, view = shopping.cart(db, [(variant, 1)])
    order = shopping.place(db, settings, cart_id, view)
    outcome = shopping.pay(db, settings, order.id, CARD_3DS)
    payment = _payments(db, order.id)[0]
    shopping.authenticate(settings, payment.stripe_payment_intent_id, outcome.client_secret, True)
    # The shopper closed the tab after 3-D Secure: no return, and localstripe sends no event.

    later = utcnow() + timedelta(minutes=settings.reservation_minutes + 1)
    report = expire_unpaid_orders(db=db, gateway=create_gateway(settings), env=ENV,
                                  settings=settings, now=later)
    assert (report.expired, report.paid_late) == (0, 1)
    assert _order(db, order.id).status == OrderStatus.AUTHORIZED
    assert stock_of(db, variant).reserved == 1


def test_payment_attempts_are_limited_per_email_and_per_ip(db, settings):
    strict = settings.model_copy(update={"payment_attempts_per_email_per_hour": 2})
    variant = make_product(db, variants=[("One", 1500, 5)]).variant_ids[0]
    cart_id, view = shopping.cart(db, [(variant, 1)])
    order = shopping.place(db, settings, cart_id, view)
    for _ in range(2):
        shopping.pay(db, settings, order.id, CARD_DECLINED)
    with pytest.raises(checkout.TooManyAttempts), db.read_session() as session:
        checkout.check_payment_rate(session, client_ip="198.51.100.1", email=DETAILS.email,
                                    settings=strict, now=utcnow())
    with db.read_session() as session:  # another shopper on another address is not affected
        checkout.check_payment_rate(session, client_ip="198.51.100.1",
                                    email="someone@example.com", settings=strict, now=utcnow())
