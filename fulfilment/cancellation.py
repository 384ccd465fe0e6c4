"""Ending an order before it ships: staff cancellation now, a reviewer's rejection later.

`cancel_order` moves the order (state machine), gives its stock back, queues the void of any
authorisation still held at Stripe (the `void_payment` actor calls Stripe after commit) and a
polite email to the customer. A captured payment is not touched here: giving money back is a
refund, which is finance's.

`request_cancellation` is the customer's own button on the order page: before picking starts
the order is cancelled at once through `cancel_order`, and a payment already captured is
refunded in full through `fulfilment.refunds`; later it is refused. Either way the request is
recorded (`cancellation_request`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from jinja2 import Environment
from sqlmodel import col, select

from conveyor import outbox
from conveyor.db import UnitOfWork
from conveyor.errors import DomainError, NotFound
from conveyor.mail import queue_email
from conveyor.settings import Settings
from fulfilment.inventory import release_allocations, release_reservations
from fulfilment.payments import UNSETTLED
from fulfilment.refunds import refundable_cents, request_refund
from models.after_sales import CancellationRequest, CancellationStatus
from models.base import utcnow
from models.money import format_money
from models.orders import Order, OrderStatus, can_transition, transition
from models.payments import HOLDS_FUNDS, Payment, PaymentStatus


class CannotCancel(DomainError):
    code = "illegal_transition"


class CaptureInProgress(DomainError):
    code = "capture_in_progress"


# A capture that started longer ago than this is taken to have died with its worker.
CAPTURE_GRACE = timedelta(minutes=10)


@dataclass(frozen=True)
class Cancellation:
    order_id: uuid.UUID
    previous_status: str
    units_released: int
    voids_queued: int
    refund_required: bool


def cancel_order(
    *, uow: UnitOfWork, order_id: uuid.UUID, reason: str, actor: str, env: Environment,
    settings: Settings, target: OrderStatus = OrderStatus.CANCELLED,
) -> Cancellation:
    """Cancel (or reject) an order not yet shipped. Locks the order, then its payments."""
    session = uow.session
    order = session.get(Order, order_id, with_for_update=True)  # fresh: see ConveyorSession
    if order is None:
        raise NotFound("No such order.")
    if not can_transition(order.status, target):
        raise CannotCancel(f"An order that is {order.status.replace('_', ' ')} cannot be "
                           f"{target.replace('_', ' ')}.", details={"status": order.status})
    payments = list(session.exec(select(Payment).where(Payment.order_id == order.id)
                                 .order_by(col(Payment.attempt)).with_for_update()))
    capturing = [p for p in payments if p.status == PaymentStatus.AUTHORIZED
                 and p.capture_started_at and utcnow() - p.capture_started_at < CAPTURE_GRACE]
    if capturing:
        raise CaptureInProgress("The payment is being captured at this moment; try again in a "
                                "minute (the order will then need a refund).")
    previous = order.status
    session.add(transition(order, target, actor=actor, reason=reason, at=utcnow()))
    units = (release_reservations(uow=uow, order_id=order.id, reason=reason, actor=actor)
             + release_allocations(uow=uow, order_id=order.id, reason=reason, actor=actor))
    to_void = [p for p in payments
               if p.status == PaymentStatus.AUTHORIZED or p.status in UNSETTLED]
    for payment in to_void:
        outbox.enqueue(uow, "void_payment", str(payment.id))
    refund_required = any(p.status in HOLDS_FUNDS and p.status != PaymentStatus.AUTHORIZED
                          for p in payments)
    if previous != OrderStatus.PENDING_PAYMENT:
        status_url = f"{settings.base_url.rstrip('/')}/orders/{order.status_token}"
        queue_email(uow, env, to=order.email, subject=f"Your order {order.number} is cancelled",
                    template="order_cancelled", order_id=order.id,
                    context={"order": order, "status_url": status_url,
                             "refund_required": refund_required,
                             "authorisation_voided": bool(to_void)})
    session.flush()
    return Cancellation(order.id, previous, units, len(to_void), refund_required)


# The states a customer may still cancel from: nobody has started picking the order.
CUSTOMER_CANCELLABLE = frozenset({OrderStatus.AUTHORIZED, OrderStatus.ON_HOLD,
                                  OrderStatus.APPROVED, OrderStatus.ALLOCATED})
CUSTOMER = "customer"


def request_cancellation(
    *, uow: UnitOfWork, order_id: uuid.UUID, reason: str, env: Environment, settings: Settings,
) -> CancellationRequest:
    """The customer asks to cancel. Locks the order. Not yet picked (CUSTOMER_CANCELLABLE):
    cancelled at once (`cancel_order`: stock released, authorisation voided) and, when the
    payment was captured, a refund of everything still refundable is requested (held for a
    second finance user above REFUND_APPROVAL_CENTS, like any refund). Too late, or while a
    capture is under way: refused with the reason in `outcome`. The request is recorded
    either way and returned; nothing is raised for a refusal, so it commits."""
    session = uow.session
    order = session.get(Order, order_id, with_for_update=True)
    if order is None:
        raise NotFound("No such order.")
    now = utcnow()
    request = CancellationRequest(order_id=order.id, reason=reason.strip()[:500],
                                  created_at=now, decided_at=now)
    session.add(request)
    if order.status not in CUSTOMER_CANCELLABLE:
        request.status = CancellationStatus.REFUSED
        request.outcome = _too_late(order.status)
        session.flush()
        return request
    try:
        result = cancel_order(uow=uow, order_id=order.id, actor=CUSTOMER, env=env,
                              settings=settings, reason="Cancelled at the customer's request"
                              + (f": {request.reason}" if request.reason else "."))
    except CaptureInProgress:
        request.status = CancellationStatus.REFUSED
        request.outcome = ("Your payment is being taken at this very moment; please try "
                           "again in a minute.")
        session.flush()
        return request
    request.status = CancellationStatus.CANCELLED
    request.outcome = "Cancelled; the amount held on your card is released."
    payment = session.get(Payment, order.payment_id) if order.payment_id else None
    if result.refund_required and payment is not None and refundable_cents(session, payment):
        refund = request_refund(uow=uow, order_id=order.id, amount_cents=None, lines=[],
                                reason="Cancelled at the customer's request",
                                requested_by=CUSTOMER, settings=settings)
        request.outcome = (f"Cancelled; your payment of "
                           f"{format_money(refund.amount_cents, refund.currency)} is being "
                           "refunded.")
    session.flush()
    return request


def _too_late(status: str) -> str:
    if status in (OrderStatus.PICKING, OrderStatus.PACKED):
        return ("Your order is already being packed and can no longer be cancelled. Once it "
                "arrives you can send it back from this page.")
    if status == OrderStatus.SHIPPED:
        return ("Your order has already been shipped. You can send it back from this page "
                "once it arrives.")
    if status in (OrderStatus.CANCELLED, OrderStatus.REJECTED):
        return "This order is already cancelled."
    return "This order cannot be cancelled now."
