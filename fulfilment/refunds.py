"""Refunds: all, part, or per line, optionally putting the items back into stock.

The life of a refund: `request_refund` checks it against what can still be given back (what
was captured, less what was refunded or is being refunded: Stripe's test double lets more
through, so this side refuses) and either queues it for processing or, above
REFUND_APPROVAL_CENTS, waits for a second finance user (`approve_refund`, never the
requester). `process_refund` (the `process_refund` actor) calls Stripe outside any transaction
with a key per refund, looks for a refund it already made first (localstripe ignores keys), and
records the result: payment amounts and status, items back into stock through
`fulfilment.inventory`, the credit note, the return it was made for completed
(`fulfilment.returns`), and an email to the customer.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date

from jinja2 import Environment
from sqlalchemy import func
from sqlmodel import Session, col, select

from conveyor import outbox
from conveyor.db import Database, UnitOfWork
from conveyor.errors import DomainError, NotFound
from conveyor.mail import queue_email
from conveyor.settings import Settings
from conveyor.stripe_gateway import PaymentProviderError, StripeGateway
from fulfilment.inventory import adjust_bin
from fulfilment.invoicing import issue_credit_note
from models.base import utcnow
from models.finance import ClosedPeriod, Refund, RefundStatus
from models.inventory import MovementKind
from models.orders import Order, OrderLine, note
from models.payments import Payment, PaymentStatus

OPEN_STATUSES = (RefundStatus.PENDING_APPROVAL, RefundStatus.PROCESSING)


class RefundRefused(DomainError):
    code = "refund_refused"


class PeriodClosed(DomainError):
    code = "period_closed"


@dataclass(frozen=True)
class RefundLine:
    variant_id: int
    quantity: int
    restock_location_id: int | None = None


def ensure_open(session: Session, day: date) -> None:
    """Refuse a change that would alter the figures of a closed day."""
    if session.get(ClosedPeriod, day) is not None:
        raise PeriodClosed(f"{day.isoformat()} is closed: nothing may change its figures.",
                           details={"day": day.isoformat()})


def refundable_cents(session: Session, payment: Payment) -> int:
    """What can still be given back: captured, less refunded and less refunds under way."""
    open_refunds = session.exec(select(func.coalesce(func.sum(Refund.amount_cents), 0)).where(
        Refund.payment_id == payment.id, col(Refund.status).in_(OPEN_STATUSES))).one()
    return payment.captured_cents - payment.refunded_cents - int(open_refunds)


def refunded_quantities(session: Session, order_id: uuid.UUID) -> dict[int, int]:
    refunds = session.exec(select(Refund).where(
        Refund.order_id == order_id,
        col(Refund.status).in_((*OPEN_STATUSES, RefundStatus.SUCCEEDED))))
    done: dict[int, int] = {}
    for refund in refunds:
        for line in refund.lines:
            done[int(line["variant_id"])] = done.get(int(line["variant_id"]), 0) + int(
                line["quantity"])
    return done


def _line_gross(order: Order, line: OrderLine, units: int) -> int:
    """What the first `units` units of a line cost the customer, VAT included, to the cent:
    their price less their part of the line's discount-code share."""
    net = line.unit_price_cents * units - line.discount_cents * units // line.quantity
    return net + round(net * order.tax_rate_bps / 10_000)


def _line_amount(order: Order, line: OrderLine, quantity: int, already: int = 0) -> int:
    """What `quantity` more units of a line give back when `already` were refunded before.
    Taken as a difference of running totals, so refunding every unit, in any steps, gives
    back exactly the line's gross: rounding never adds a cent per step."""
    return _line_gross(order, line, already + quantity) - _line_gross(order, line, already)


def request_refund(
    *, uow: UnitOfWork, order_id: uuid.UUID, amount_cents: int | None,
    lines: list[RefundLine], reason: str, requested_by: str, settings: Settings,
) -> Refund:
    """Record a refund: per line (amount from the lines' prices with VAT), an amount, or,
    given neither, everything still refundable. Locks the order and its payment. Raises
    RefundRefused, changing nothing, beyond what was captured or per-line quantities."""
    session = uow.session
    ensure_open(session, utcnow().date())
    order = session.get(Order, order_id, with_for_update=True)
    if order is None:
        raise NotFound("No such order.")
    payment = session.get(Payment, order.payment_id, with_for_update=True) if (
        order.payment_id) else None
    if payment is None or payment.status not in (PaymentStatus.CAPTURED,
                                                 PaymentStatus.PARTIALLY_REFUNDED):
        raise RefundRefused("Only a captured payment can be refunded; an authorisation that "
                            "was not captured is voided by cancelling the order.")
    available = refundable_cents(session, payment)
    stored_lines: list[dict[str, object]] = []
    if lines:
        order_lines = {line.variant_id: line for line in session.exec(
            select(OrderLine).where(OrderLine.order_id == order_id))}
        done = refunded_quantities(session, order_id)
        total = 0
        for wanted in lines:
            line = order_lines.get(wanted.variant_id)
            if line is None:
                raise RefundRefused("That item is not in this order.",
                                    details={"variant_id": wanted.variant_id})
            left = line.quantity - done.get(wanted.variant_id, 0)
            if not 0 < wanted.quantity <= left:
                raise RefundRefused(f"At most {left} of {line.sku} can still be refunded.",
                                    details={"sku": line.sku, "refundable_quantity": left})
            total += _line_amount(order, line, wanted.quantity,
                                  done.get(wanted.variant_id, 0))
            stored_lines.append({"variant_id": line.variant_id, "sku": line.sku,
                                 "quantity": wanted.quantity,
                                 "restock_location_id": wanted.restock_location_id})
        amount = amount_cents if amount_cents is not None else total
        if amount_cents is None and available < amount <= available + len(order_lines):
            # VAT rounded per line may sum to a cent per line more than the order's VAT,
            # rounded once: the last units then give back what is left.
            amount = available
    else:
        amount = amount_cents if amount_cents is not None else available
    if amount <= 0 or amount > available:
        raise RefundRefused(f"At most {available} cents can still be refunded on this order.",
                            details={"refundable_cents": available, "asked_cents": amount})
    needs_approval = amount > settings.refund_approval_cents
    refund = Refund(order_id=order.id, payment_id=payment.id, amount_cents=amount,
                    currency=payment.currency, reason=reason, lines=stored_lines,
                    requested_by=requested_by,
                    status=RefundStatus.PENDING_APPROVAL if needs_approval
                    else RefundStatus.PROCESSING)
    session.add(refund)
    session.flush()
    if not needs_approval:
        outbox.enqueue(uow, "process_refund", str(refund.id))
    return refund


def decide_refund(*, uow: UnitOfWork, refund_id: uuid.UUID, approve: bool,
                  decided_by: str) -> Refund:
    """A second finance user approves (processing follows) or rejects a large refund."""
    session = uow.session
    refund = session.get(Refund, refund_id, with_for_update=True)
    if refund is None:
        raise NotFound("No such refund.")
    if refund.status != RefundStatus.PENDING_APPROVAL:
        raise RefundRefused(f"This refund is {refund.status}, not waiting for approval.")
    if decided_by == refund.requested_by:
        raise RefundRefused("A refund this large needs a second person: someone other than "
                            "who asked for it must approve it.")
    refund.approved_by = decided_by
    refund.decided_at = utcnow()
    if approve:
        refund.status = RefundStatus.PROCESSING
        outbox.enqueue(uow, "process_refund", str(refund.id))
    else:
        refund.status = RefundStatus.REJECTED
    return refund


def process_refund(*, db: Database, gateway: StripeGateway, env: Environment,
                   settings: Settings, refund_id: uuid.UUID) -> str:
    """Send a processing refund to Stripe and record the outcome (see the module docstring).
    Safe to run twice: a refund recorded as done is left alone."""
    with db.read_session() as session:
        refund = session.get(Refund, refund_id)
        payment = session.get(Payment, refund.payment_id) if refund else None
    if refund is None or payment is None or refund.status != RefundStatus.PROCESSING:
        return "nothing to do"
    if payment.stripe_payment_intent_id is None:
        return "no Stripe payment"
    try:
        stripe_refund = gateway.find_refund(intent_id=payment.stripe_payment_intent_id,
                                            refund_id=str(refund.id)) or gateway.create_refund(
            intent_id=payment.stripe_payment_intent_id, amount=refund.amount_cents,
            metadata={"refund_id": str(refund.id)},
            idempotency_key=f"conveyor:refund:{refund.id}")
    except PaymentProviderError as exc:
        if "declin" in str(exc).lower() or "invalid" in str(exc).lower():
            with db.unit_of_work() as uow:
                failed = uow.session.get(Refund, refund_id, with_for_update=True)
                if failed is not None and failed.status == RefundStatus.PROCESSING:
                    failed.status = RefundStatus.FAILED
                    failed.failure = str(exc)[:300]
            return "failed"
        raise  # Stripe did not answer: the actor retries
    with db.unit_of_work() as uow:
        return record_refund(uow=uow, refund_id=refund_id, stripe_refund_id=stripe_refund["id"],
                             env=env, settings=settings)


def record_refund(*, uow: UnitOfWork, refund_id: uuid.UUID, stripe_refund_id: str,
                  env: Environment, settings: Settings) -> str:
    """What follows a refund Stripe made: amounts, stock, credit note, email (once)."""
    session = uow.session
    refund = session.get(Refund, refund_id, with_for_update=True)
    if refund is None or refund.status != RefundStatus.PROCESSING:
        return "already recorded"
    payment = session.get(Payment, refund.payment_id, with_for_update=True)
    order = session.get(Order, refund.order_id)
    assert payment is not None and order is not None
    now = utcnow()
    refund.status = RefundStatus.SUCCEEDED
    refund.stripe_refund_id = stripe_refund_id
    refund.processed_at = now
    payment.refunded_cents += refund.amount_cents
    payment.status = (PaymentStatus.REFUNDED if payment.refunded_cents >= payment.captured_cents
                      else PaymentStatus.PARTIALLY_REFUNDED)
    payment.updated_at = now
    for line in refund.lines:
        location = line.get("restock_location_id")
        if location:
            adjust_bin(uow=uow, variant_id=int(line["variant_id"]), location_id=int(location),
                       delta=int(line["quantity"]), kind=MovementKind.RETURN,
                       reason=f"refund {refund.id}", actor=refund.approved_by
                       or refund.requested_by, document_type="refund",
                       document_id=str(refund.id))
    credit_note = issue_credit_note(uow=uow, refund_id=refund.id)
    # Imported here: returns asks for refunds through this module.
    from fulfilment.returns import complete_refunded_returns
    complete_refunded_returns(session, refund, now)
    session.add(note(order, f"Refunded {refund.amount_cents} cents ({refund.reason}); credit "
                            f"note {credit_note.number}.", actor=refund.requested_by, at=now,
                     public=True))
    link = (f"{settings.base_url.rstrip('/')}/documents/{credit_note.access_token}")
    queue_email(uow, env, to=order.email, subject=f"Your refund for order {order.number}",
                template="refund_issued", order_id=order.id,
                context={"order": order, "refund": refund, "credit_note": credit_note,
                         "document_url": link})
    return "succeeded"
