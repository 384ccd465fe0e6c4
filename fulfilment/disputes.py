"""Disputes (chargebacks), from Stripe's charge.dispute.created/updated/closed events.

`record_dispute` keeps one `Dispute` row per Stripe dispute, with its amount, Stripe's fee and
status; while open, the payment counts as disputed and an order that has not shipped goes on
hold for a person. A closed dispute records the outcome: won gives the payment back its
captured state, lost leaves the money counted as taken back. Events may come twice or out of
order: a closed dispute is never reopened by a late `updated` event, and repeating an event
changes nothing.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from conveyor.db import UnitOfWork
from models.base import utcnow
from models.finance import Dispute
from models.orders import Order, OrderStatus, can_transition, note, transition
from models.payments import Payment, PaymentStatus

CLOSED = ("won", "lost", "warning_closed")
ACTOR = "stripe:dispute"


def _payment_for(session: Session, dispute: dict[str, Any]) -> Payment | None:
    charge = str(dispute.get("charge") or "")
    intent = str(dispute.get("payment_intent") or "")
    conditions = []
    if charge:
        conditions.append(col(Payment.stripe_charge_id) == charge)
    if intent:
        conditions.append(col(Payment.stripe_payment_intent_id) == intent)
    for condition in conditions:
        found = session.exec(select(Payment).where(condition).with_for_update()).first()
        if found is not None:
            return found
    return None


def record_dispute(*, uow: UnitOfWork, dispute: dict[str, Any]) -> str:
    """Apply one dispute object from an event; returns what it did."""
    session = uow.session
    payment = _payment_for(session, dispute)
    order = session.get(Order, payment.order_id, with_for_update=True) if payment else None
    status = str(dispute.get("status") or "")
    fee = sum(int(t.get("fee") or 0) for t in dispute.get("balance_transactions") or []
              if isinstance(t, dict))
    row = session.get(Dispute, str(dispute["id"]), with_for_update=True)
    now = utcnow()
    if row is None:
        row = Dispute(id=str(dispute["id"]), charge_id=str(dispute.get("charge") or ""),
                      amount_cents=int(dispute.get("amount") or 0), status=status,
                      currency=str(dispute.get("currency") or "eur").upper(),
                      payment_id=payment.id if payment else None,
                      order_id=order.id if order else None)
        session.add(row)
    elif row.outcome and status not in CLOSED:
        return "late event for a closed dispute: ignored"
    row.status = status
    row.reason = str(dispute.get("reason") or "")[:60]
    row.amount_cents = int(dispute.get("amount") or row.amount_cents)
    row.fee_cents = max(row.fee_cents, fee)
    row.updated_at = now
    if payment is None or order is None:
        return "dispute kept; no payment of ours has this charge"

    if status in CLOSED:
        row.outcome = "won" if status in ("won", "warning_closed") else "lost"
        if row.outcome == "won":
            payment.disputed_cents = 0
            if payment.status == PaymentStatus.DISPUTED:
                payment.status = (PaymentStatus.PARTIALLY_REFUNDED if payment.refunded_cents
                                  else PaymentStatus.CAPTURED)
        session.add(note(order, f"Dispute {row.id} closed: {row.outcome} "
                                f"({row.amount_cents} cents, fee {row.fee_cents}).",
                         actor=ACTOR, at=now))
        return f"dispute {row.outcome}"

    payment.disputed_cents = row.amount_cents
    if payment.status in (PaymentStatus.CAPTURED, PaymentStatus.PARTIALLY_REFUNDED,
                          PaymentStatus.AUTHORIZED):
        payment.status = PaymentStatus.DISPUTED
    payment.updated_at = now
    if order.status != OrderStatus.ON_HOLD and can_transition(order.status,
                                                              OrderStatus.ON_HOLD):
        why = row.reason or "no reason given"
        session.add(transition(order, OrderStatus.ON_HOLD, actor=ACTOR, at=now, public=False,
                               reason=f"The customer disputed the payment ({why}); held "
                                      "until finance decides."))
        return "order held"
    session.add(note(order, f"Dispute {row.id} is {status}.", actor=ACTOR, at=now))
    return "dispute recorded"
