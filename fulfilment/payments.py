"""Payment records and what they do to orders.

One `Payment` per attempt to pay an order, each with its own PaymentIntent. Every piece of news
about an intent, whether the answer to our own confirm call, a webhook, or a re-read during
sync or expiry, goes through `apply_intent`, which is idempotent and order-insensitive:
payments and orders only move forward along their state machines, so a late or repeated
event changes nothing.

An authorised payment for an order that is already paid by another attempt, or that expired or
was cancelled meanwhile, is voided through the `void_payment` actor (never inside a transaction).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment
from sqlmodel import Session, col, delete, select

from conveyor import outbox
from conveyor.db import Database, UnitOfWork
from conveyor.mail import queue_email
from conveyor.settings import Settings
from conveyor.stripe_gateway import IntentSnapshot, PaymentProviderError, StripeGateway
from fulfilment.allocation import allocate_order
from fulfilment.disputes import record_dispute
from fulfilment.invoicing import issue_invoice
from models.base import utcnow
from models.cart import CartLine
from models.messaging import StripeEvent
from models.money import format_money
from models.orders import Order, OrderLine, OrderStatus, note, transition
from models.payments import Payment, PaymentStatus, payment_can_move, status_from_intent

log = logging.getLogger(__name__)

# Payments in these states may still change at Stripe without us having heard about it.
UNSETTLED = (PaymentStatus.PENDING, PaymentStatus.REQUIRES_ACTION)


def intent_idempotency_key(payment: Payment, step: str) -> str:
    """Deterministic per order attempt and step: a retried request never pays twice."""
    return f"conveyor:order:{payment.order_id}:attempt:{payment.attempt}:{step}"


def begin_attempt(*, uow: UnitOfWork, order_id: uuid.UUID, client_ip: str) -> Payment:
    """Number and record a new payment attempt for a pending order (locks the order row)."""
    session = uow.session
    order = session.get(Order, order_id, with_for_update=True)
    if order is None or order.status != OrderStatus.PENDING_PAYMENT:
        raise ValueError("only an order waiting for payment can start a payment attempt")
    order.payment_attempts += 1
    payment = Payment(order_id=order.id, attempt=order.payment_attempts,
                      amount_cents=order.total_cents, currency=order.currency,
                      client_ip=client_ip, email=order.email)
    session.add(payment)
    session.flush()
    return payment


def attach_intent(*, uow: UnitOfWork, payment_id: uuid.UUID, intent_id: str) -> None:
    payment = uow.session.get(Payment, payment_id, with_for_update=True)
    if payment is not None and payment.stripe_payment_intent_id is None:
        payment.stripe_payment_intent_id = intent_id
        payment.updated_at = utcnow()


def record_decline(
    *, uow: UnitOfWork, payment_id: uuid.UUID, code: str, message: str,
) -> None:
    """The card was refused before any intent state told us so (e.g. a CardError on confirm)."""
    session = uow.session
    payment = session.get(Payment, payment_id, with_for_update=True)
    if payment is None or not payment_can_move(payment.status, PaymentStatus.FAILED):
        return
    payment.status = PaymentStatus.FAILED
    payment.failure_code = code[:64]
    payment.failure_message = message[:300]
    payment.updated_at = utcnow()
    order = session.get(Order, payment.order_id)
    if order is not None:
        session.add(note(order, f"Payment attempt {payment.attempt} declined ({code}).",
                         actor="stripe", at=payment.updated_at))


@dataclass(frozen=True)
class ApplyResult:
    payment_id: uuid.UUID | None
    payment_status: str | None
    order_status: str | None
    changed: bool


def _find_payment(session: Session, intent: IntentSnapshot) -> Payment | None:
    query = select(Payment).where(Payment.stripe_payment_intent_id == intent.id)
    payment = session.exec(query.with_for_update()).first()
    if payment is None and (payment_id := intent.metadata.get("payment_id")):
        # An event that overtook our own bookkeeping: attach the intent id now.
        try:
            payment = session.get(Payment, uuid.UUID(payment_id), with_for_update=True)
        except ValueError:
            return None
        if payment is not None and payment.stripe_payment_intent_id not in (None, intent.id):
            return None
        if payment is not None:
            payment.stripe_payment_intent_id = intent.id
    return payment


def apply_intent(
    *, uow: UnitOfWork, intent: IntentSnapshot, env: Environment, settings: Settings,
    source: str,
) -> ApplyResult:
    """Bring a payment, and its order, up to date with what Stripe says of its intent.

    Locks the payment and then its order. Idempotent: applying the same or an older snapshot
    again changes nothing. `source` names where the news came from, for the history.
    """
    session = uow.session
    payment = _find_payment(session, intent)
    if payment is None:
        return ApplyResult(None, None, None, changed=False)
    order = session.get(Order, payment.order_id, with_for_update=True)
    assert order is not None
    target = status_from_intent(intent.status)
    if target is None or target == payment.status or not payment_can_move(payment.status,
                                                                           target):
        return ApplyResult(payment.id, payment.status, order.status, changed=False)

    now = utcnow()
    payment.status = target
    payment.updated_at = now
    if intent.card_last4:
        payment.card_brand = intent.card_brand[:20]
        payment.card_last4 = intent.card_last4[:4]
        payment.card_fingerprint = intent.card_fingerprint[:64]
        payment.card_country = intent.card_country[:2]
        payment.cvc_check = intent.cvc_check[:20]
        payment.postal_check = intent.postal_check[:20]
    if intent.risk_level:
        payment.risk_level = intent.risk_level[:20]
    if intent.charge_id and not payment.stripe_charge_id:
        payment.stripe_charge_id = intent.charge_id[:64]
    if target == PaymentStatus.FAILED:
        payment.failure_code = (intent.failure_code or "declined")[:64]
        payment.failure_message = intent.failure_message[:300]
        session.add(note(order, f"Payment attempt {payment.attempt} failed "
                                f"({payment.failure_code}), reported by {source}.",
                         actor="stripe", at=now))
    elif target == PaymentStatus.CAPTURED:
        payment.captured_cents = intent.amount
        payment.captured_at = now

    if target in (PaymentStatus.AUTHORIZED, PaymentStatus.CAPTURED):
        pays_order = (order.status == OrderStatus.PENDING_PAYMENT
                      and payment.amount_cents == order.total_cents)
        if pays_order:
            _authorize_order(uow, order, payment, env=env, settings=settings, source=source)
        elif order.payment_id != payment.id:
            # Paid twice (two tabs, a late 3-D Secure), paid after expiry, or for an amount the
            # order no longer has: give the money back.
            session.add(note(order, f"Payment attempt {payment.attempt} was authorised while "
                                    f"the order was {order.status}; voiding it.",
                             actor="stripe", at=now))
            outbox.enqueue(uow, "void_payment", str(payment.id))
    session.flush()
    return ApplyResult(payment.id, payment.status, order.status, changed=True)


def _authorize_order(
    uow: UnitOfWork, order: Order, payment: Payment, *, env: Environment, settings: Settings,
    source: str,
) -> None:
    """The order is paid for (funds held): hand it to the middle office and tell the shopper."""
    now = utcnow()
    card = f" ({payment.card_brand} ending {payment.card_last4})" if payment.card_last4 else ""
    uow.session.add(transition(
        order, OrderStatus.AUTHORIZED, actor="stripe", at=now,
        reason=f"Payment of {format_money(payment.amount_cents, payment.currency)} "
               f"authorised{card}; confirmed by {source}.",
    ))
    order.payment_id = payment.id
    order.authorized_at = now
    order.expires_at = None
    if order.cart_id is not None:
        uow.session.execute(delete(CartLine).where(col(CartLine.cart_id) == order.cart_id))
    outbox.enqueue(uow, "screen_order", str(order.id))
    queue_order_confirmation(uow, env, settings, order)


def queue_order_confirmation(
    uow: UnitOfWork, env: Environment, settings: Settings, order: Order,
) -> None:
    lines = list(uow.session.exec(
        select(OrderLine).where(OrderLine.order_id == order.id).order_by(col(OrderLine.id))
    ))
    status_url = f"{settings.base_url.rstrip('/')}/orders/{order.status_token}"
    queue_email(uow, env, to=order.email, subject=f"Your order {order.number}",
                template="order_confirmation", order_id=order.id,
                context={"order": order, "lines": lines, "status_url": status_url})


# -- Stripe events ----------------------------------------------------------------------------


def store_event(*, uow: UnitOfWork, event: dict[str, Any]) -> bool:
    """Keep a verified event under its Stripe id and queue its processing; False if known.

    Concurrent deliveries of one event race on the primary key: one insert wins, the other
    sees it after the winner commits and does nothing.
    """
    session = uow.session
    if session.get(StripeEvent, event["id"]) is not None:
        return False
    data = (event.get("data") or {}).get("object") or {}
    session.add(StripeEvent(id=event["id"], type=str(event.get("type", ""))[:80],
                            object_id=str(data.get("id", ""))[:64], payload=event))
    session.flush()
    outbox.enqueue(uow, "process_stripe_event", event["id"])
    return True


def process_event(
    *, uow: UnitOfWork, event_id: str, env: Environment, settings: Settings,
) -> str:
    """Apply a stored event once; returns what it did. A second call is a no-op."""
    session = uow.session
    event = session.get(StripeEvent, event_id, with_for_update=True)
    if event is None:
        return "unknown event"
    if event.processed_at is not None:
        return event.outcome
    obj = (event.payload.get("data") or {}).get("object") or {}
    if event.type.startswith("payment_intent.") and obj.get("object") == "payment_intent":
        result = apply_intent(uow=uow, intent=IntentSnapshot.from_dict(obj), env=env,
                              settings=settings, source=f"Stripe event {event.type}")
        if result.payment_id is None:
            outcome = "no payment of ours has this intent"
        elif result.changed:
            outcome = f"payment {result.payment_status}, order {result.order_status}"
        else:
            outcome = "nothing to change"
    elif event.type.startswith("charge.dispute.") and obj.get("object") == "dispute":
        outcome = record_dispute(uow=uow, dispute=obj)
    else:
        outcome = "ignored"
    event.processed_at = utcnow()
    event.outcome = outcome[:200]
    return outcome


# -- Talking to Stripe outside transactions -------------------------------------------------


def void_payment(
    *, db: Database, gateway: StripeGateway, env: Environment, settings: Settings,
    payment_id: uuid.UUID,
) -> bool:
    """Cancel an authorisation (or an unfinished intent) at Stripe; True if it was voided now."""
    with db.read_session() as session:
        payment = session.get(Payment, payment_id)
        if payment is None or payment.stripe_payment_intent_id is None:
            return False
        if payment.status not in (PaymentStatus.AUTHORIZED, *UNSETTLED):
            return False
        intent_id = payment.stripe_payment_intent_id
        key = intent_idempotency_key(payment, "void")
    intent = gateway.retrieve_intent(intent_id)
    if intent.status in ("requires_capture", "requires_payment_method", "requires_action",
                         "requires_confirmation"):
        intent = gateway.cancel_intent(intent_id, idempotency_key=key)
    with db.unit_of_work() as uow:
        result = apply_intent(uow=uow, intent=intent, env=env, settings=settings,
                              source="void")
    return result.payment_status == PaymentStatus.CANCELED


def capture_order_payment(
    *, db: Database, gateway: StripeGateway, env: Environment, settings: Settings,
    order_id: uuid.UUID,
) -> str:
    """Capture an approved order's authorisation, then allocate its stock in the same
    transaction that records the capture: the order is then ready to pick.

    Safe to run twice or after a crash: the capture carries a key per payment, so Stripe
    answers a repeat with the first result; a capture Stripe refuses (captured already by a
    run that died before recording it, or an authorisation that is gone) is read back and
    recorded as it is. If the authorisation is gone (expired, voided), the order goes on hold
    for a person.
    """
    with db.unit_of_work() as uow:
        # Under the order's lock: the order may still be captured, and a cancellation that
        # comes now sees the capture under way (see fulfilment.cancellation).
        order = uow.session.get(Order, order_id, with_for_update=True)
        payment = (uow.session.get(Payment, order.payment_id, with_for_update=True)
                   if order and order.payment_id else None)
        if order is None or payment is None or payment.stripe_payment_intent_id is None:
            return "nothing to capture"
        if order.status != OrderStatus.APPROVED:  # allocated means captured already
            return f"order is {order.status}"
        if payment.status == PaymentStatus.AUTHORIZED:
            payment.capture_started_at = payment.capture_started_at or utcnow()
    intent_id = payment.stripe_payment_intent_id
    assert intent_id is not None
    try:
        intent = gateway.capture_intent(
            intent_id, idempotency_key=f"conveyor:payment:{payment.id}:capture")
    except PaymentProviderError:
        # Refused: captured already (an earlier run that died before recording it), or the
        # authorisation is gone. Or Stripe did not answer. Read what the intent says now.
        intent = gateway.retrieve_intent(intent_id)
        if intent.status == "requires_capture":
            raise  # Stripe did not answer: let the actor retry
    with db.unit_of_work() as uow:
        apply_intent(uow=uow, intent=intent, env=env, settings=settings, source="capture")
        order = uow.session.get(Order, order_id, with_for_update=True)
        assert order is not None
        captured = uow.session.get(Payment, payment.id)
        if captured is not None and captured.status == PaymentStatus.CAPTURED:
            issue_invoice(uow=uow, order_id=order.id)  # once: money taken, invoice issued
            allocate_order(uow=uow, order_id=order.id)  # nothing to do if allocated already
            return "captured"
        if order.status == OrderStatus.APPROVED:
            uow.session.add(transition(
                order, OrderStatus.ON_HOLD, actor="worker:capture", at=utcnow(), public=False,
                reason=f"The payment could not be captured (Stripe says {intent.status}); "
                       "a person must decide."))
        return f"not captured: {intent.status}"


def refresh_payment(
    *, db: Database, gateway: StripeGateway, env: Environment, settings: Settings,
    payment_id: uuid.UUID, source: str,
) -> ApplyResult | None:
    """Re-read a payment's intent from Stripe and apply it."""
    with db.read_session() as session:
        payment = session.get(Payment, payment_id)
        intent_id = payment.stripe_payment_intent_id if payment else None
    if intent_id is None:
        return None
    intent = gateway.retrieve_intent(intent_id)
    with db.unit_of_work() as uow:
        return apply_intent(uow=uow, intent=intent, env=env, settings=settings, source=source)


def unsettled_payments(session: Session, *, limit: int = 500) -> list[uuid.UUID]:
    """Payments of orders still waiting for payment whose intent may have moved at Stripe."""
    query = (
        select(Payment.id)
        .join(Order, col(Order.id) == Payment.order_id)
        .where(Order.status == OrderStatus.PENDING_PAYMENT)
        .where(col(Payment.status).in_(UNSETTLED))
        .where(col(Payment.stripe_payment_intent_id).is_not(None))
        .order_by(col(Payment.created_at))
        .limit(limit)
    )
    return list(session.exec(query))


@dataclass
class SyncReport:
    checked: int = 0
    changed: int = 0
    failed: int = 0


def sync_payments(
    *, db: Database, gateway: StripeGateway, env: Environment, settings: Settings,
) -> SyncReport:
    """Re-read from Stripe every unsettled payment of a pending order (events that never came)."""
    report = SyncReport()
    with db.read_session() as session:
        payment_ids = unsettled_payments(session)
    for payment_id in payment_ids:
        report.checked += 1
        try:
            result = refresh_payment(db=db, gateway=gateway, env=env, settings=settings,
                                     payment_id=payment_id, source="payment sync")
        except PaymentProviderError as exc:
            log.warning("could not re-read payment %s: %s", payment_id, exc)
            report.failed += 1
            continue
        if result is not None and result.changed:
            report.changed += 1
    return report
