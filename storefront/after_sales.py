"""What the order status page shows and offers after the sale: returns with their progress,
what can still be sent back, whether the order can still be cancelled, and the conversation
with the shop. Read in the page's own session; the writes are `fulfilment` services."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from conveyor.settings import Settings
from fulfilment.cancellation import CUSTOMER_CANCELLABLE
from fulfilment.returns import Returnable, returnable_lines
from fulfilment.support import MAX_BODY, MAX_SUBJECT, messages_of, threads_of
from models.after_sales import ReturnLine, ReturnRequest, ReturnStatus
from models.base import utcnow
from models.orders import Order, OrderLine

# Where a return stands, in the customer's words, and how far along its steps it is.
PROGRESS: dict[str, tuple[str, int]] = {
    ReturnStatus.REQUESTED: ("Requested: we are waiting for your parcel", 1),
    ReturnStatus.RECEIVED: ("Received: your refund is on its way", 2),
    ReturnStatus.REFUNDED: ("Refunded: this return is complete", 3),
    ReturnStatus.REJECTED: ("Not accepted", 0),
    ReturnStatus.CANCELLED: ("Withdrawn", 0),
}
STEPS = ("Requested", "Received", "Refunded")


@dataclass(frozen=True)
class ReturnView:
    number: str
    status: str
    label: str
    step: int
    reason: str
    rejection_reason: str
    created_at: datetime
    lines: list[tuple[str, int]]  # (name, units)


@dataclass(frozen=True)
class MessageView:
    from_customer: bool
    body: str
    created_at: datetime


@dataclass
class FormState:
    """What the customer typed into one of the page's forms, and what was wrong with it."""

    values: dict[str, str] = field(default_factory=dict)
    error: str = ""


def page_context(session: Session, order: Order, settings: Settings) -> dict[str, Any]:
    names = {line.variant_id: f"{line.product_name} ({line.variant_name})"
             for line in session.exec(select(OrderLine).where(OrderLine.order_id == order.id))}
    requests = list(session.exec(select(ReturnRequest).where(ReturnRequest.order_id == order.id)
                                 .order_by(col(ReturnRequest.created_at))))
    lines: dict[Any, list[ReturnLine]] = {}
    if requests:
        for line in session.exec(select(ReturnLine).where(
                col(ReturnLine.return_id).in_([r.id for r in requests]))
                .order_by(col(ReturnLine.id))):
            lines.setdefault(line.return_id, []).append(line)
    now = utcnow()
    returnable: list[Returnable] = returnable_lines(session, order, settings)
    threads = threads_of(session, order.id)
    messages = [MessageView(m.from_customer, m.body, m.created_at)
                for m in messages_of(session, [t.id for t in threads])]
    return {
        "returns": [ReturnView(
            r.number, r.status, *PROGRESS.get(r.status, (r.status, 0)), reason=r.reason,
            rejection_reason=r.rejection_reason, created_at=r.created_at,
            lines=[(names.get(line.variant_id, line.sku), line.quantity)
                   for line in lines.get(r.id, [])]) for r in requests],
        "return_steps": STEPS,
        "returnable": [r for r in returnable if r.left(now)],
        "returnable_left": {r.variant_id: r.left(now) for r in returnable},
        "return_note": _return_note(returnable, now),
        "return_address": settings.return_address,
        "can_cancel": order.status in CUSTOMER_CANCELLABLE,
        "messages": messages,
        "max_subject": MAX_SUBJECT,
        "max_body": MAX_BODY,
        "return_form": FormState(),
        "cancel_form": FormState(),
        "message_form": FormState(),
    }


def _return_note(returnable: list[Returnable], now: datetime) -> str:
    """Why nothing can be sent back although something was shipped ('' otherwise)."""
    if not returnable or any(r.left(now) for r in returnable):
        return ""
    last = max(r.window_ends_at for r in returnable)
    if now > last:
        return f"The return period for this order ended on {last:%d %B %Y}."
    return "Everything shipped is already being returned or was refunded."
