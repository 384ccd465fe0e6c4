"""Returns: a customer sends shipped items back; stock staff receive them; finance refunds them.

The life of a return (`models.after_sales.ReturnStatus`):

- `request_return` (the customer, from the order's status page): some or all of the units that
  left in shipped parcels, less those already returned or refunded, while the return window
  (RETURN_WINDOW_DAYS after the last parcel carrying that item left) is open. It gets a number
  (R-...), a public entry in the order's history, and an email with the number and where to
  send the parcel.
- `receive_return` (stock staff): per line, how many units arrived and their condition;
  sellable units go back into a bin through `fulfilment.inventory.adjust_bin` (movement kind
  `return`, the return's number as document), so the ledger stays whole.
- `refund_return` (finance): a refund of the received units through
  `fulfilment.refunds.request_refund`, without a second restock (the units went back at
  receipt). Above REFUND_APPROVAL_CENTS it waits for a second finance user; the return stays
  `received` meanwhile. When `process_refund` records the refund as made, the return becomes
  `refunded` (completed) in the same transaction (see `fulfilment.refunds.record_refund`).
- `reject_return` (staff): refused with a reason the customer sees.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from jinja2 import Environment
from sqlmodel import Session, col, select

from conveyor.db import UnitOfWork
from conveyor.errors import DomainError, NotFound
from conveyor.mail import queue_email
from conveyor.settings import Settings
from fulfilment import refunds
from fulfilment.inventory import adjust_bin
from models.after_sales import ItemCondition, ReturnLine, ReturnRequest, ReturnStatus
from models.base import utcnow
from models.finance import Refund, RefundStatus
from models.inventory import BinStock, Location, LocationKind, MovementKind
from models.orders import Order, OrderLine, note
from models.warehouse import Parcel, ParcelItem

NUMBER_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read over the phone
MIN_REASON, MAX_REASON = 3, 500
# Returns that still count against what may be returned (rejected and cancelled ones do not).
LIVE_STATUSES = (ReturnStatus.REQUESTED, ReturnStatus.RECEIVED, ReturnStatus.REFUNDED)
# A refund in one of these states blocks another refund of the same return.
REFUND_BLOCKING = (RefundStatus.PENDING_APPROVAL, RefundStatus.PROCESSING,
                   RefundStatus.SUCCEEDED)


class ReturnRefused(DomainError):
    code = "return_refused"


@dataclass(frozen=True)
class Returnable:
    """What of one order line can still be sent back, and until when."""

    variant_id: int
    sku: str
    name: str
    shipped: int
    returned: int
    refunded: int
    window_ends_at: datetime

    def left(self, now: datetime) -> int:
        if now > self.window_ends_at:
            return 0
        return max(self.shipped - self.returned - self.refunded, 0)


@dataclass(frozen=True)
class ReturnLineRequest:
    variant_id: int
    quantity: int


@dataclass(frozen=True)
class ReceivedLine:
    """What arrived of one return line: units, condition, and (sellable only) the bin to put
    them in; without a bin, the variant's first bin in pick sequence."""

    variant_id: int
    received: int
    condition: ItemCondition
    location_id: int | None = None


def returned_quantities(session: Session, order_id: uuid.UUID) -> dict[int, int]:
    """Units per variant in this order's returns that still count: asked for while requested,
    what arrived once received."""
    counted: dict[int, int] = {}
    rows = session.exec(select(ReturnRequest.status, ReturnLine).join(
        ReturnLine, col(ReturnLine.return_id) == ReturnRequest.id).where(
        ReturnRequest.order_id == order_id, col(ReturnRequest.status).in_(LIVE_STATUSES)))
    for status, line in rows:
        units = line.quantity if status == ReturnStatus.REQUESTED else line.received_quantity
        counted[line.variant_id] = counted.get(line.variant_id, 0) + units
    return counted


def _refunded_outside_returns(session: Session, order_id: uuid.UUID) -> dict[int, int]:
    """Units per variant refunded (or being refunded) by refunds not made for a return: a
    returned unit must not be counted twice."""
    for_returns = set(session.exec(select(ReturnRequest.refund_id).where(
        ReturnRequest.order_id == order_id, col(ReturnRequest.refund_id).is_not(None))))
    done: dict[int, int] = {}
    for refund in session.exec(select(Refund).where(
            Refund.order_id == order_id, col(Refund.status).in_(REFUND_BLOCKING))):
        if refund.id in for_returns:
            continue
        for line in refund.lines:
            variant_id = int(line["variant_id"])
            done[variant_id] = done.get(variant_id, 0) + int(line["quantity"])
    return done


def returnable_lines(session: Session, order: Order, settings: Settings) -> list[Returnable]:
    """Per order line that has shipped units: shipped, returned, refunded, window's end."""
    window = timedelta(days=settings.return_window_days)
    shipped: dict[int, int] = {}
    last_left: dict[int, datetime] = {}
    for parcel, item in session.exec(select(Parcel, ParcelItem).join(
            ParcelItem, col(ParcelItem.parcel_id) == Parcel.id).where(
            Parcel.order_id == order.id, col(Parcel.shipped_at).is_not(None))):
        assert parcel.shipped_at is not None
        shipped[item.variant_id] = shipped.get(item.variant_id, 0) + item.quantity
        last_left[item.variant_id] = max(last_left.get(item.variant_id, parcel.shipped_at),
                                         parcel.shipped_at)
    if not shipped:
        return []
    returned = returned_quantities(session, order.id)
    refunded = _refunded_outside_returns(session, order.id)
    lines = session.exec(select(OrderLine).where(OrderLine.order_id == order.id)
                         .order_by(col(OrderLine.id)))
    return [Returnable(line.variant_id, line.sku, f"{line.product_name} ({line.variant_name})",
                       shipped[line.variant_id], returned.get(line.variant_id, 0),
                       refunded.get(line.variant_id, 0), last_left[line.variant_id] + window)
            for line in lines if line.variant_id in shipped]


def _new_number(session: Session) -> str:
    while True:
        number = "R-" + "".join(secrets.choice(NUMBER_ALPHABET) for _ in range(8))
        if session.exec(select(ReturnRequest.id).where(ReturnRequest.number == number)
                        ).first() is None:
            return number


def _describe(lines: list[ReturnLine]) -> str:
    return ", ".join(f"{line.quantity} x {line.sku}" for line in lines)


def request_return(
    *, uow: UnitOfWork, order_id: uuid.UUID, lines: list[ReturnLineRequest], reason: str,
    env: Environment, settings: Settings, now: datetime | None = None,
) -> ReturnRequest:
    """Record a customer's return of shipped units. Locks the order, so two requests for the
    same units cannot both pass. Raises ReturnRefused, changing nothing, for units not
    shipped, already returned or refunded, or past the window; queues the email with the
    return's number and instructions and writes a public history entry."""
    session = uow.session
    now = now or utcnow()
    order = session.get(Order, order_id, with_for_update=True)
    if order is None:
        raise NotFound("No such order.")
    reason = reason.strip()
    if not MIN_REASON <= len(reason) <= MAX_REASON:
        raise ReturnRefused(f"Tell us in {MIN_REASON} to {MAX_REASON} characters why you "
                            "are sending it back.", details={"field": "reason"})
    wanted: dict[int, int] = {}
    for line in lines:
        if line.quantity < 0:
            raise ReturnRefused("Quantities cannot be negative.", details={"field": "lines"})
        if line.quantity:
            wanted[line.variant_id] = wanted.get(line.variant_id, 0) + line.quantity
    if not wanted:
        raise ReturnRefused("Choose at least one item to send back.",
                            details={"field": "lines"})
    returnable = {r.variant_id: r for r in returnable_lines(session, order, settings)}
    if not returnable:
        raise ReturnRefused("Only items that have been shipped can be returned.",
                            details={"field": "lines"})
    for variant_id, quantity in wanted.items():
        found = returnable.get(variant_id)
        if found is None:
            raise ReturnRefused("That item has not been shipped in this order.",
                                details={"field": "lines", "variant_id": variant_id})
        if now > found.window_ends_at:
            raise ReturnRefused(
                f"The return period for {found.name} ended on "
                f"{found.window_ends_at:%d %B %Y} ({settings.return_window_days} days after "
                "it was shipped).", details={"field": "lines", "sku": found.sku,
                                             "window_ends_at": found.window_ends_at.isoformat()})
        if quantity > found.left(now):
            raise ReturnRefused(f"At most {found.left(now)} of {found.name} can still be "
                                "returned.", details={"field": "lines", "sku": found.sku,
                                                      "returnable": found.left(now)})
    request = ReturnRequest(number=_new_number(session), order_id=order.id, reason=reason,
                            created_at=now, updated_at=now)
    session.add(request)
    session.flush()
    made = [ReturnLine(return_id=request.id, variant_id=variant_id,
                       sku=returnable[variant_id].sku, quantity=quantity)
            for variant_id, quantity in sorted(wanted.items())]
    session.add_all(made)
    session.add(note(order, f"Return {request.number} requested: {_describe(made)}. Reason: "
                            f"{reason}", actor="customer", at=now, public=True))
    status_url = f"{settings.base_url.rstrip('/')}/orders/{order.status_token}"
    queue_email(uow, env, to=order.email,
                subject=f"Your return {request.number} for order {order.number}",
                template="return_requested", order_id=order.id,
                context={"order": order, "request": request, "lines": made,
                         "names": {r.variant_id: r.name for r in returnable.values()},
                         "return_address": settings.return_address,
                         "status_url": status_url})
    session.flush()
    return request


def return_by_number(session: Session, number: str, *, lock: bool = False) -> ReturnRequest:
    query = select(ReturnRequest).where(ReturnRequest.number == number.strip().upper())
    found = session.exec(query.with_for_update() if lock else query).first()
    if found is None:
        raise NotFound(f"No return {number}.")
    return found


def lines_of(session: Session, return_id: uuid.UUID) -> list[ReturnLine]:
    return list(session.exec(select(ReturnLine).where(ReturnLine.return_id == return_id)
                             .order_by(col(ReturnLine.id))))


def first_bin(session: Session, variant_id: int) -> int | None:
    """The bin a variant is kept in (first in pick sequence), if it has one."""
    return session.exec(
        select(Location.id).join(BinStock, col(BinStock.location_id) == Location.id)
        .where(BinStock.variant_id == variant_id, Location.kind == LocationKind.BIN)
        .order_by(col(Location.pick_sequence), col(Location.id))).first()


def receive_return(
    *, uow: UnitOfWork, return_id: uuid.UUID, lines: list[ReceivedLine], received_by: str,
    note_text: str = "",
) -> ReturnRequest:
    """Record what arrived of a requested return, line by line (every line of the return must
    be named). Sellable units go back into stock (ledger rows of kind `return`), damaged ones
    do not, missing ones arrived as 0. Locks the return; raises ReturnRefused, changing
    nothing, for a return not waiting for its parcel or counts that do not fit."""
    session = uow.session
    request = session.get(ReturnRequest, return_id, with_for_update=True)
    if request is None:
        raise NotFound("No such return.")
    if request.status != ReturnStatus.REQUESTED:
        raise ReturnRefused(f"Return {request.number} is {request.status}: only a requested "
                            "return can be received.", details={"status": request.status})
    own = {line.variant_id: line for line in lines_of(session, request.id)}
    given = {line.variant_id: line for line in lines}
    if len(given) != len(lines) or set(given) != set(own):
        raise ReturnRefused("Name each line of the return once: "
                            + ", ".join(sorted(line.sku for line in own.values())) + ".",
                            details={"skus": sorted(line.sku for line in own.values())})
    order = session.get(Order, request.order_id)
    assert order is not None
    plan: list[tuple[ReturnLine, ReceivedLine, int | None]] = []
    for variant_id, line in sorted(own.items()):
        arrived = given[variant_id]
        if arrived.condition == ItemCondition.MISSING and arrived.received:
            raise ReturnRefused(f"{line.sku}: units marked missing did not arrive (0).",
                                details={"sku": line.sku})
        if not 0 <= arrived.received <= line.quantity:
            raise ReturnRefused(f"{line.sku}: between 0 and {line.quantity} unit(s) can have "
                                "arrived.", details={"sku": line.sku, "quantity": line.quantity})
        location_id = None
        if arrived.condition == ItemCondition.SELLABLE and arrived.received:
            location_id = arrived.location_id or first_bin(session, variant_id)
            if location_id is None:
                raise ReturnRefused(f"{line.sku} has no bin yet: say which bin the units go "
                                    "into.", details={"sku": line.sku})
            location = session.get(Location, location_id)
            if location is None or location.kind != LocationKind.BIN:
                raise ReturnRefused("Units go back into a bin, not a packing location.",
                                    details={"sku": line.sku})
        plan.append((line, arrived, location_id))
    now = utcnow()
    for line, arrived, location_id in plan:
        line.received_quantity = arrived.received
        line.condition = arrived.condition
        if location_id is not None:
            adjust_bin(uow=uow, variant_id=line.variant_id, location_id=location_id,
                       delta=arrived.received, kind=MovementKind.RETURN,
                       reason=f"return {request.number}", actor=received_by,
                       document_type="return", document_id=request.number)
            line.restocked_quantity = arrived.received
        session.add(line)
    request.status = ReturnStatus.RECEIVED
    request.received_at, request.received_by, request.updated_at = now, received_by, now
    request.staff_note = note_text.strip()[:1000]
    arrived_text = ", ".join(
        f"{arrived.received} x {line.sku} ({arrived.condition})" for line, arrived, _ in plan)
    session.add(note(order, f"Return {request.number} arrived: {arrived_text}. Its refund "
                            "follows.", actor=received_by, at=now, public=True))
    session.flush()
    return request


def refund_of(session: Session, request: ReturnRequest) -> Refund | None:
    return session.get(Refund, request.refund_id) if request.refund_id else None


def refund_return(
    *, uow: UnitOfWork, return_id: uuid.UUID, requested_by: str, settings: Settings,
) -> Refund:
    """Refund the units of a received return (VAT included, at the prices paid), through
    `fulfilment.refunds.request_refund`, without restocking them again. Links the refund to
    the return; the return is completed when the refund is made. Locks the return (then the
    order and payment, in request_refund). Refused for a return not received, already being
    refunded or refunded, or where nothing arrived."""
    session = uow.session
    request = session.get(ReturnRequest, return_id, with_for_update=True)
    if request is None:
        raise NotFound("No such return.")
    if request.status != ReturnStatus.RECEIVED:
        raise ReturnRefused(f"Return {request.number} is {request.status}: only a received "
                            "return can be refunded.", details={"status": request.status})
    current = refund_of(session, request)
    if current is not None and current.status in REFUND_BLOCKING:
        raise ReturnRefused(f"Return {request.number} has a refund that is {current.status}.",
                            details={"refund_id": str(current.id), "status": current.status})
    arrived = [refunds.RefundLine(line.variant_id, line.received_quantity)
               for line in lines_of(session, request.id) if line.received_quantity]
    if not arrived:
        raise ReturnRefused(f"Nothing of return {request.number} arrived: there is nothing to "
                            "refund (reject it instead).")
    refund = refunds.request_refund(uow=uow, order_id=request.order_id, amount_cents=None,
                                    lines=arrived, reason=f"Return {request.number}",
                                    requested_by=requested_by, settings=settings)
    request.refund_id = refund.id
    request.updated_at = utcnow()
    order = session.get(Order, request.order_id)
    assert order is not None
    waiting = " (waiting for a second person's approval)" if (
        refund.status == RefundStatus.PENDING_APPROVAL) else ""
    session.add(note(order, f"Refund of return {request.number} asked for: "
                            f"{refund.amount_cents} cents{waiting}.", actor=requested_by,
                     at=request.updated_at))
    session.flush()
    return refund


def reject_return(
    *, uow: UnitOfWork, return_id: uuid.UUID, reason: str, rejected_by: str,
    env: Environment, settings: Settings,
) -> ReturnRequest:
    """Refuse a return (requested, or received and not being refunded) with a reason the
    customer reads on the order page and in an email. Units already put back into stock at
    receipt stay there. Locks the return."""
    session = uow.session
    request = session.get(ReturnRequest, return_id, with_for_update=True)
    if request is None:
        raise NotFound("No such return.")
    reason = reason.strip()
    if not MIN_REASON <= len(reason) <= MAX_REASON:
        raise ReturnRefused(f"Give the customer a reason of {MIN_REASON} to {MAX_REASON} "
                            "characters.")
    if request.status not in (ReturnStatus.REQUESTED, ReturnStatus.RECEIVED):
        raise ReturnRefused(f"Return {request.number} is {request.status} and cannot be "
                            "rejected.", details={"status": request.status})
    current = refund_of(session, request)
    if current is not None and current.status in REFUND_BLOCKING:
        raise ReturnRefused(f"Return {request.number} has a refund that is {current.status}; "
                            "it cannot be rejected now.",
                            details={"refund_id": str(current.id), "status": current.status})
    order = session.get(Order, request.order_id)
    assert order is not None
    now = utcnow()
    request.status = ReturnStatus.REJECTED
    request.rejection_reason = reason
    request.updated_at = now
    session.add(note(order, f"Return {request.number} was not accepted: {reason}",
                     actor=rejected_by, at=now, public=True))
    queue_email(uow, env, to=order.email,
                subject=f"Your return {request.number} for order {order.number}",
                template="return_rejected", order_id=order.id,
                context={"order": order, "request": request, "reason": reason,
                         "status_url": f"{settings.base_url.rstrip('/')}/orders/"
                                       f"{order.status_token}"})
    session.flush()
    return request


def withdraw_return(*, uow: UnitOfWork, order_id: uuid.UUID, number: str) -> ReturnRequest:
    """The customer takes back a return they asked for, before it arrives: its units can be
    asked for again. Locks the order (as `request_return` does), then the return; raises
    ReturnRefused once the parcel was received or the return was decided."""
    session = uow.session
    order = session.get(Order, order_id, with_for_update=True)
    request = session.exec(select(ReturnRequest).where(
        ReturnRequest.number == number.strip().upper(), ReturnRequest.order_id == order_id,
    ).with_for_update()).first()
    if order is None or request is None:
        raise NotFound("No such return on this order.")
    if request.status != ReturnStatus.REQUESTED:
        raise ReturnRefused(f"Return {request.number} is {request.status} and can no longer be "
                            "withdrawn. Write to us below if something is wrong.",
                            details={"status": request.status})
    now = utcnow()
    request.status = ReturnStatus.CANCELLED
    request.updated_at = now
    session.add(note(order, f"Return {request.number} was withdrawn by the customer.",
                     actor="customer", at=now, public=True))
    session.flush()
    return request


def complete_refunded_returns(session: Session, refund: Refund, at: datetime) -> list[str]:
    """The returns this refund was made for become refunded (completed); their numbers.
    Called by `fulfilment.refunds.record_refund` in the refund's own transaction."""
    done = []
    for request in session.exec(select(ReturnRequest).where(
            ReturnRequest.refund_id == refund.id).with_for_update()):
        if request.status == ReturnStatus.RECEIVED:
            request.status = ReturnStatus.REFUNDED
            request.completed_at = request.updated_at = at
            done.append(request.number)
    return done
