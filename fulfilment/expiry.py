"""Unpaid orders end when their reservation runs out, and give their stock back.

Before an order expires, its unfinished intents are settled at Stripe (outside any
transaction): one that turns out to be authorised pays the order instead; the others are
cancelled so they can no longer be paid. Then, under the order's row lock, the order expires
only if it is still unpaid and its deadline has not been moved by a new payment attempt.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from jinja2 import Environment
from sqlmodel import col, select

from conveyor.db import Database
from conveyor.settings import Settings
from conveyor.stripe_gateway import PaymentProviderError, StripeGateway
from fulfilment.inventory import release_reservations
from fulfilment.payments import UNSETTLED, apply_intent, intent_idempotency_key
from models.base import utcnow
from models.orders import Order, OrderStatus, transition
from models.payments import Payment, PaymentStatus

log = logging.getLogger(__name__)
ACTOR = "system:expiry"


@dataclass
class ExpiryReport:
    expired: int = 0
    paid_late: int = 0
    skipped: int = 0


def _settle_intents(
    *, db: Database, gateway: StripeGateway, env: Environment, settings: Settings,
    order_id: uuid.UUID,
) -> bool:
    """Settle the order's unfinished intents; True if one of them had in fact paid it."""
    with db.read_session() as session:
        payments = list(session.exec(
            select(Payment)
            .where(Payment.order_id == order_id)
            .where(col(Payment.status).in_(UNSETTLED))
            .where(col(Payment.stripe_payment_intent_id).is_not(None))
        ))
    paid = False
    for payment in payments:
        assert payment.stripe_payment_intent_id is not None
        intent = gateway.retrieve_intent(payment.stripe_payment_intent_id)
        if intent.status not in ("requires_capture", "succeeded", "canceled"):
            intent = gateway.cancel_intent(
                intent.id, idempotency_key=intent_idempotency_key(payment, "cancel")
            )
        with db.unit_of_work() as uow:
            result = apply_intent(uow=uow, intent=intent, env=env, settings=settings,
                                  source="expiry check")
        paid = paid or result.order_status == OrderStatus.AUTHORIZED
    return paid


def expire_unpaid_orders(
    *, db: Database, gateway: StripeGateway, env: Environment, settings: Settings,
    now: datetime | None = None, limit: int = 200,
) -> ExpiryReport:
    now = now or utcnow()
    report = ExpiryReport()
    with db.read_session() as session:
        order_ids = list(session.exec(
            select(Order.id)
            .where(Order.status == OrderStatus.PENDING_PAYMENT)
            .where(col(Order.expires_at) < now)
            .order_by(col(Order.expires_at))
            .limit(limit)
        ))
    for order_id in order_ids:
        try:
            if _settle_intents(db=db, gateway=gateway, env=env, settings=settings,
                               order_id=order_id):
                report.paid_late += 1
                continue
        except PaymentProviderError as exc:
            log.warning("order %s: Stripe unreachable, expiry postponed: %s", order_id, exc)
            report.skipped += 1
            continue
        with db.unit_of_work() as uow:
            order = uow.session.get(Order, order_id, with_for_update=True)
            if (order is None or order.status != OrderStatus.PENDING_PAYMENT
                    or order.expires_at is None or order.expires_at >= now):
                report.skipped += 1
                continue
            failed = uow.session.exec(
                select(Payment.id).where(Payment.order_id == order_id,
                                         Payment.status == PaymentStatus.FAILED)
            ).first()
            target, reason = (
                (OrderStatus.PAYMENT_FAILED, "Payment failed and the reservation ran out.")
                if failed else
                (OrderStatus.EXPIRED, "Not paid before the reservation ran out.")
            )
            uow.session.add(transition(order, target, actor=ACTOR, reason=reason, at=now))
            release_reservations(uow=uow, order_id=order_id, reason=reason, actor=ACTOR)
            report.expired += 1
    return report
