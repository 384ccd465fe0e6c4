"""Ending an order before it ships: staff cancellation now, a reviewer's rejection later.

`cancel_order` moves the order (state machine), gives its stock back, queues the void of any
authorisation still held at Stripe (the `void_payment` actor calls Stripe after commit) and a
polite email to the customer. A captured payment is not touched here: giving money back is a
refund, which is finance's.
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
from models.base import utcnow
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
