"""Dispute events (which localstripe never sends), signed with Stripe's scheme, on a live
storefront: an unshipped order goes on hold, the dispute and its fee are kept, the outcome is
tracked, and repeated or late events change nothing."""

from __future__ import annotations

import httpx2 as httpx
from sqlmodel import col, select

from conveyor.db import Database
from conveyor.settings import Settings
from conveyor.stripe_gateway import create_gateway
from fulfilment import payments
from fulfilment.payments import capture_order_payment
from fulfilment.screening import screen_order
from models.finance import Dispute
from models.messaging import StripeEvent
from models.orders import Order, OrderStatus
from models.payments import Payment, PaymentStatus
from tests import shopping
from tests.conftest import WEBHOOK_SECRET
from tests.factories import make_product
from tests.helpers import sign_payload, stripe_event


def _captured(db: Database, settings: Settings) -> tuple[Order, Payment]:
    made = make_product(db, variants=[("Std", 6000, 5)])
    cart_id, view = shopping.cart(db, [(made.variant_ids[0], 1)])
    order = shopping.place(db, settings, cart_id, view)
    shopping.pay(db, settings, order.id)
    with db.unit_of_work() as uow:
        screen_order(uow=uow, order_id=order.id, env=shopping.ENV, settings=settings)
    capture_order_payment(db=db, gateway=create_gateway(settings), env=shopping.ENV,
                          settings=settings, order_id=order.id)
    with db.read_session() as session:
        order = session.get(Order, order.id)
        payment = session.get(Payment, order.payment_id)
    assert order.status == OrderStatus.ALLOCATED and payment.stripe_charge_id
    return order, payment


def _send(base: str, db: Database, settings: Settings, event_id: str, kind: str,
          dispute: dict) -> None:
    payload = stripe_event(event_id, kind, dispute)
    response = httpx.post(f"{base}/stripe/webhook", content=payload,
                          headers={"stripe-signature": sign_payload(payload, WEBHOOK_SECRET),
                                   "content-type": "application/json"})
    assert response.status_code == 200
    with db.read_session() as session:
        ids = [e.id for e in session.exec(select(StripeEvent).where(
            col(StripeEvent.processed_at).is_(None)))]
    for stored in ids:  # what the worker's process_stripe_event does
        with db.unit_of_work() as uow:
            payments.process_event(uow=uow, event_id=stored, env=shopping.ENV,
                                   settings=settings)


def _dispute(payment: Payment, status: str, fee: int = 1500) -> dict:
    return {"id": "dp_test_1", "object": "dispute", "amount": payment.captured_cents,
            "currency": "eur", "charge": payment.stripe_charge_id,
            "payment_intent": payment.stripe_payment_intent_id, "reason": "fraudulent",
            "status": status,
            "balance_transactions": [{"fee": fee, "amount": -payment.captured_cents}]}


def test_a_dispute_holds_an_unshipped_order_and_its_outcome_is_tracked(
    db: Database, settings: Settings, live_storefront: str
):
    order, payment = _captured(db, settings)

    _send(live_storefront, db, settings, "evt_dp_1", "charge.dispute.created",
          _dispute(payment, "needs_response"))
    _send(live_storefront, db, settings, "evt_dp_1", "charge.dispute.created",
          _dispute(payment, "needs_response"))  # delivered twice
    with db.read_session() as session:
        held = session.get(Order, order.id)
        disputed = session.get(Payment, payment.id)
        dispute = session.get(Dispute, "dp_test_1")
    assert held.status == OrderStatus.ON_HOLD
    assert (disputed.status, disputed.disputed_cents) == (PaymentStatus.DISPUTED,
                                                          payment.captured_cents)
    assert (dispute.fee_cents, dispute.reason, dispute.outcome) == (1500, "fraudulent", "")

    _send(live_storefront, db, settings, "evt_dp_3", "charge.dispute.closed",
          _dispute(payment, "won"))
    _send(live_storefront, db, settings, "evt_dp_2", "charge.dispute.updated",
          _dispute(payment, "under_review"))  # late: must not reopen it
    with db.read_session() as session:
        dispute = session.get(Dispute, "dp_test_1")
        won = session.get(Payment, payment.id)
    assert (dispute.status, dispute.outcome) == ("won", "won")
    assert (won.status, won.disputed_cents) == (PaymentStatus.CAPTURED, 0)
