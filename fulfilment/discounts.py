"""Discount codes: claiming one for an order at checkout, and the admin desk's services
(create, edit, pause or resume, list, usage report).

Which uses count against a code's limits: every redemption whose order has not ended unpaid.
An order frees its use when it is `expired` or `payment_failed`, or `cancelled` or `rejected`
while its payment was never captured (no payment of the order reached captured, partially
refunded, refunded or disputed). An order waiting for payment (`pending_payment`) holds its use
until it is paid or expires; an order cancelled or refunded after capture keeps it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, exists, not_, or_
from sqlalchemy import select as sa_select
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, delete, func, select

from conveyor import audit
from conveyor.db import UnitOfWork
from conveyor.errors import Conflict, DomainError, NotFound
from models.base import utcnow
from models.catalog import Category, Product
from models.discounts import (
    DiscountCode,
    DiscountKind,
    DiscountLine,
    DiscountRedemption,
    Verdict,
    customer_key,
    evaluate,
    normalise_code,
    snapshot,
)
from models.orders import Order, OrderStatus
from models.payments import Payment, PaymentStatus

CAPTURED_STATES = (PaymentStatus.CAPTURED, PaymentStatus.PARTIALLY_REFUNDED,
                   PaymentStatus.REFUNDED, PaymentStatus.DISPUTED)
ENDED_UNPAID = (OrderStatus.EXPIRED, OrderStatus.PAYMENT_FAILED)
ENDED_BEFORE_CAPTURE = (OrderStatus.CANCELLED, OrderStatus.REJECTED)


class DiscountRefused(DomainError):
    """The code cannot be used for this cart; `details["reason"]` is a `Refusal`."""

    code = "discount_refused"


class InvalidDiscount(DomainError):
    code = "invalid_discount"


def still_counts() -> ColumnElement[bool]:
    """SQL: the redemption's order (joined as Order) still uses up the code."""
    captured = exists().where(col(Payment.order_id) == col(Order.id),
                              col(Payment.status).in_(CAPTURED_STATES))
    return not_(or_(col(Order.status).in_(ENDED_UNPAID),
                    and_(col(Order.status).in_(ENDED_BEFORE_CAPTURE), not_(captured))))


def count_uses(session: Session, code_id: int, email: str,
               exclude_order_id: uuid.UUID | None = None) -> tuple[int, int]:
    """(uses in all, uses by this email) that still count, leaving out one order's own use
    (the pending order being placed again, so a retry never counts itself)."""
    query = (select(func.count(), func.count().filter(
        col(DiscountRedemption.email) == customer_key(email)))
        .select_from(DiscountRedemption)
        .join(Order, col(Order.id) == col(DiscountRedemption.order_id))
        .where(col(DiscountRedemption.code_id) == code_id, still_counts()))
    if exclude_order_id is not None:
        query = query.where(col(DiscountRedemption.order_id) != exclude_order_id)
    total, mine = session.exec(query).one()
    return int(total), int(mine)


def find_code(session: Session, typed: str, *, lock: bool = False) -> DiscountCode | None:
    query = select(DiscountCode).where(DiscountCode.code == normalise_code(typed))
    if lock:
        query = query.with_for_update()
    return session.exec(query).first()


def quote(session: Session, *, typed: str, lines: Sequence[DiscountLine], email: str,
          now: datetime, exclude_order_id: uuid.UUID | None = None) -> Verdict:
    """What the code would give this cart now, without locking or recording anything (for
    the checkout page); `place_order` decides again under a lock through `claim_code`."""
    code = find_code(session, typed)
    uses = count_uses(session, code.id, email, exclude_order_id) if (
        code is not None and code.id is not None) else (0, 0)
    return evaluate(code, lines, now=now, uses=uses[0], uses_by_customer=uses[1],
                    typed=normalise_code(typed))


@dataclass(frozen=True)
class Claim:
    code: DiscountCode
    verdict: Verdict


def claim_code(*, uow: UnitOfWork, typed: str, lines: Sequence[DiscountLine], email: str,
               now: datetime, order_id: uuid.UUID | None) -> Claim:
    """Decide the code for an order being placed, holding the code's row lock (SELECT ... FOR
    UPDATE) until the transaction ends, so concurrent checkouts with one code count each
    other's uses one after another and no limit is ever exceeded. `order_id` is the pending
    order placed again, whose earlier use does not count. Raises DiscountRefused (reason in
    details) and changes nothing; call `record_redemption` in the same transaction."""
    code = find_code(uow.session, typed, lock=True)
    uses = count_uses(uow.session, code.id, email, order_id) if (
        code is not None and code.id is not None) else (0, 0)
    verdict = evaluate(code, lines, now=now, uses=uses[0], uses_by_customer=uses[1],
                       typed=normalise_code(typed))
    if code is None or not verdict.ok:
        raise DiscountRefused(verdict.message, details={"reason": str(verdict.refusal)})
    return Claim(code, verdict)


def record_redemption(*, uow: UnitOfWork, order_id: uuid.UUID, claim: Claim | None,
                      email: str, now: datetime) -> None:
    """The order's one redemption: replaces any earlier one of this order (an order placed
    again while waiting for payment), or removes it when no code is used any more."""
    session = uow.session
    session.execute(delete(DiscountRedemption)
                    .where(col(DiscountRedemption.order_id) == order_id))
    if claim is None:
        return
    assert claim.code.id is not None
    session.add(DiscountRedemption(code_id=claim.code.id, order_id=order_id,
                                   email=customer_key(email),
                                   amount_cents=claim.verdict.discount_cents, created_at=now))
    session.flush()


# -- The admin desk -----------------------------------------------------------------------------


@dataclass
class DiscountFields:
    """A code's settings as staff give them (None: no limit / no date)."""

    kind: str
    value: int
    description: str = ""
    min_spend_cents: int = 0
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    usage_limit: int | None = None
    per_customer_limit: int | None = None
    product_ids: list[int] | None = None
    category_ids: list[int] | None = None


EDITABLE = ("kind", "value", "description", "min_spend_cents", "starts_at", "ends_at",
            "usage_limit", "per_customer_limit", "product_ids", "category_ids")


def _check(session: Session, code: DiscountCode) -> None:
    """Times kept in UTC; the settings must fit together (InvalidDiscount otherwise)."""
    for name in ("starts_at", "ends_at"):
        moment = getattr(code, name)
        if moment is not None:
            setattr(code, name, moment.astimezone(UTC))
    problems: dict[str, str] = {}
    if code.kind not in tuple(DiscountKind):
        problems["kind"] = "percent or fixed"
    if code.value <= 0 or (code.kind == DiscountKind.PERCENT and code.value > 10_000):
        problems["value"] = ("basis points from 1 to 10000" if code.kind == DiscountKind.PERCENT
                             else "a positive number of cents")
    if code.starts_at is not None and code.ends_at is not None and (
            code.ends_at <= code.starts_at):
        problems["ends_at"] = "must be after starts_at"
    for name, table in (("product_ids", Product), ("category_ids", Category)):
        wanted = sorted(set(getattr(code, name)))
        if wanted:
            found = set(session.exec(select(table.id).where(col(table.id).in_(wanted))))
            missing = [i for i in wanted if i not in found]
            if missing:
                problems[name] = f"unknown ids: {missing}"
    if problems:
        raise InvalidDiscount("This discount code's settings do not fit together: "
                              + "; ".join(f"{k}: {v}" for k, v in problems.items()),
                              details={"fields": problems})


def get_code(session: Session, typed: str, *, lock: bool = False) -> DiscountCode:
    code = find_code(session, typed, lock=lock)
    if code is None:
        raise NotFound("No such discount code.", details={"discount_code": normalise_code(typed)})
    return code


def create_code(*, uow: UnitOfWork, actor: audit.Actor, code: str,
                fields: DiscountFields) -> DiscountCode:
    """A new code, stored upper-case; Conflict if it exists in any case; InvalidDiscount for
    settings that do not fit together (or unknown product and category ids); audited."""
    session = uow.session
    name = normalise_code(code)
    if find_code(session, name) is not None:
        raise Conflict(f"The discount code {name} exists already.",
                       details={"discount_code": name})
    now = utcnow()
    values: dict[str, Any] = {k: v for k, v in vars(fields).items() if v is not None}
    values["product_ids"] = sorted(set(fields.product_ids or []))
    values["category_ids"] = sorted(set(fields.category_ids or []))
    found = DiscountCode(code=name, created_by=actor.email, created_at=now, updated_at=now,
                         **values)
    _check(session, found)
    session.add(found)
    session.flush()
    audit.record(session, actor, "discount.create", target_type="discount_code",
                 target_id=name, after=snapshot(found))
    return found


def update_code(*, uow: UnitOfWork, actor: audit.Actor, code: str,
                changes: dict[str, Any]) -> DiscountCode:
    """Change some settings of a code (not the code itself: orders name it). Locks the row,
    so a change and a checkout using the code happen one after the other. Orders already
    placed keep the discount they got. Audited with the settings before and after."""
    session = uow.session
    found = get_code(session, code, lock=True)
    before = snapshot(found)
    for name, value in changes.items():
        if name not in EDITABLE:
            raise InvalidDiscount(f"{name} cannot be changed.", details={"field": name})
        if name in ("product_ids", "category_ids"):
            value = sorted(set(value or []))
        setattr(found, name, value)
    _check(session, found)
    found.updated_at = utcnow()
    session.add(found)
    session.flush()
    audit.record(session, actor, "discount.update", target_type="discount_code",
                 target_id=found.code, before=before, after=snapshot(found))
    return found


def set_paused(*, uow: UnitOfWork, actor: audit.Actor, code: str,
               paused: bool) -> DiscountCode:
    """Pause a code (checkouts refuse it until resumed) or resume it; audited, even when it
    was already in that state (the entry then says so)."""
    session = uow.session
    found = get_code(session, code, lock=True)
    was = found.paused
    found.paused = paused
    found.updated_at = utcnow()
    session.add(found)
    session.flush()
    audit.record(session, actor, "discount.pause" if paused else "discount.resume",
                 target_type="discount_code", target_id=found.code,
                 before={"paused": was}, after={"paused": paused})
    return found


@dataclass(frozen=True)
class Usage:
    uses: int  # that still count against the limits
    awaiting_payment: int  # of those, orders still waiting for payment
    released: int  # uses freed by orders that ended unpaid
    customers: int  # distinct emails among the uses that count
    discount_cents: int  # given on the orders that count
    revenue_cents: int  # those orders' totals (VAT included, after the discount)


def usage_of(session: Session, code_ids: Sequence[int]) -> dict[int, Usage]:
    """Usage per code id, in two queries' worth of one grouped query."""
    if not code_ids:
        return {}
    counts = still_counts()
    pending = col(Order.status) == OrderStatus.PENDING_PAYMENT
    rows = session.execute(
        sa_select(col(DiscountRedemption.code_id),
               func.count().filter(counts),
               func.count().filter(and_(counts, pending)),
               func.count().filter(not_(counts)),
               func.count(func.distinct(DiscountRedemption.email)).filter(counts),
               func.coalesce(func.sum(DiscountRedemption.amount_cents).filter(counts), 0),
               func.coalesce(func.sum(Order.total_cents).filter(counts), 0))
        .join(Order, col(Order.id) == col(DiscountRedemption.order_id))
        .where(col(DiscountRedemption.code_id).in_(list(code_ids)))
        .group_by(col(DiscountRedemption.code_id))).all()
    result = {code_id: Usage(0, 0, 0, 0, 0, 0) for code_id in code_ids}
    for code_id, uses, waiting, released, customers, discount, revenue in rows:
        result[code_id] = Usage(int(uses), int(waiting), int(released), int(customers),
                                int(discount), int(revenue))
    return result


def list_codes(session: Session, *, search: str | None = None, paused: bool | None = None,
               limit: int = 50, offset: int = 0) -> list[tuple[DiscountCode, Usage]]:
    """Codes by code, with their usage; `search` matches part of the code."""
    query = select(DiscountCode)
    if search:
        query = query.where(col(DiscountCode.code).contains(normalise_code(search),
                                                            autoescape=True))
    if paused is not None:
        query = query.where(col(DiscountCode.paused).is_(paused))
    codes = list(session.exec(query.order_by(col(DiscountCode.code)).offset(offset)
                              .limit(limit)))
    usage = usage_of(session, [c.id for c in codes if c.id is not None])
    return [(c, usage[c.id]) for c in codes if c.id is not None]
