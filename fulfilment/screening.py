"""The middle office: every authorised order is screened, explained and decided.

`screen_order` gathers facts about the order (counts look back from its authorisation, and
only at other orders), lets the rule set in force turn them into signals and a score, runs
the quality checks, stores one `Screening` per order, and acts on the decision:
approve -> the order is approved and its payment is queued for capture; review -> on hold for
a reviewer; reject -> cancelled as rejected (authorisation voided, stock released, email).
It locks the order and is idempotent: a second run finds the screening and does nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from jinja2 import Environment
from sqlalchemy import false, func, or_
from sqlmodel import Session, col, select

from conveyor import outbox
from conveyor.db import UnitOfWork
from conveyor.errors import DomainError, NotFound
from conveyor.settings import Settings
from fulfilment.cancellation import cancel_order
from models.base import utcnow
from models.catalog import Product, Variant
from models.contact import (
    InvalidField,
    normalise_email,
    normalise_phone,
    normalise_postal_code,
)
from models.orders import Order, OrderLine, OrderStatus, note, transition
from models.payments import Payment, PaymentStatus
from models.pricing import order_totals
from models.screening import (
    DISPOSABLE_DOMAINS,
    Decision,
    Facts,
    RuleSet,
    RuleSetBody,
    Screening,
    Signal,
    decide,
    evaluate,
    forwarder_in,
    score,
)
from models.shipping import shipping_method

ACTOR = "worker:screening"
DUPLICATE_WINDOW = timedelta(minutes=10)
SHOP_MEDIAN_SAMPLE = 500
# Orders that count as placed for velocity and history: paid, whatever happened next.
PLACED = tuple(s for s in OrderStatus if s not in (
    OrderStatus.PENDING_PAYMENT, OrderStatus.EXPIRED, OrderStatus.PAYMENT_FAILED))


def rules_in_force(session: Session) -> RuleSet:
    rule_set = session.exec(select(RuleSet).order_by(col(RuleSet.version).desc())).first()
    if rule_set is None:
        raise RuntimeError("no screening rule set; run the migrations")
    return rule_set


def _velocities(session: Session, order: Order, rules: RuleSetBody,
                as_of: datetime) -> tuple[int, int, int]:
    """Other placed orders from the same email, IP and device within each signal's window,
    counted in one pass over the longest window."""
    r = rules.signals
    hours = {code: r[code].window_hours or 0.0
             for code in ("email_velocity", "ip_velocity", "device_velocity")}
    since = {code: as_of - timedelta(hours=h) for code, h in hours.items()}
    email, ip, device = order.email.lower(), order.client_ip, order.device_id
    same_email = func.lower(col(Order.email)) == email
    same_ip = col(Order.client_ip) == ip if ip else false()
    same_device = col(Order.device_id) == device if device else false()
    when = col(Order.authorized_at)
    row = session.exec(
        select(func.count().filter(same_email, when >= since["email_velocity"]),
               func.count().filter(same_ip, when >= since["ip_velocity"]),
               func.count().filter(same_device, when >= since["device_velocity"]))
        .where(col(Order.id) != order.id, col(Order.status).in_(PLACED),
               when >= min(since.values()), when < as_of, or_(same_email, same_ip, same_device))
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


def _history(session: Session, order: Order, as_of: datetime) -> tuple[int, int, bool]:
    """The customer's earlier orders (count, average total) and whether any earlier order came
    from the same email domain, in one query."""
    email = order.email.lower()
    domain = email.rsplit("@", 1)[-1]
    same_email = func.lower(col(Order.email)) == email
    same_domain = col(Order.email_domain) == domain
    count, average, domain_orders = session.exec(
        select(func.count().filter(same_email), func.avg(Order.total_cents).filter(same_email),
               func.count().filter(same_domain))
        .where(col(Order.id) != order.id, col(Order.status).in_(PLACED),
               col(Order.authorized_at) < as_of, or_(same_email, same_domain))
    ).one()
    return int(count), int(average or 0), int(domain_orders) > 0


def _shop_median(session: Session, order: Order, as_of: datetime) -> tuple[int, int]:
    """(how many, median total) of the shop's latest SHOP_MEDIAN_SAMPLE placed orders."""
    latest = (select(Order.total_cents)
              .where(col(Order.id) != order.id, col(Order.status).in_(PLACED),
                     col(Order.authorized_at) < as_of)
              .order_by(col(Order.authorized_at).desc()).limit(SHOP_MEDIAN_SAMPLE).subquery())
    ranked = select(latest.c.total_cents,
                    func.row_number().over(order_by=latest.c.total_cents).label("rank"),
                    func.count().over().label("size")).subquery()
    row = session.exec(select(ranked.c.size, ranked.c.total_cents)
                       .where(ranked.c.rank == (ranked.c.size + 1) / 2)).first()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def gather_facts(session: Session, order: Order, payment: Payment | None,
                 rules: RuleSetBody, as_of: datetime,
                 lines: list[OrderLine] | None = None) -> Facts:
    """Everything the signals need, as of `as_of` (the order's authorisation), in six queries."""
    r = rules.signals
    card_orders = 0
    if payment is not None and payment.card_fingerprint and r["card_velocity"].weight > 0:
        # Other placed orders paid by the same card, whatever became of their payment since
        # (a rejected order's authorisation is voided, but it still counts, as in the other
        # velocity signals, so that a replay finds what the screening found).
        hours = r["card_velocity"].window_hours or 0
        card_orders = int(session.exec(
            select(func.count()).select_from(Payment)
            .join(Order, col(Order.id) == Payment.order_id)
            .where(Payment.card_fingerprint == payment.card_fingerprint,
                   col(Order.payment_id) == Payment.id,  # the attempt that paid the order
                   col(Order.id) != order.id, col(Order.status).in_(PLACED),
                   col(Order.authorized_at) >= as_of - timedelta(hours=hours),
                   col(Order.authorized_at) < as_of)).one())
    failed = int(session.exec(select(func.count()).select_from(Payment).where(
        Payment.order_id == order.id, Payment.status == PaymentStatus.FAILED)).one())
    domain = order.email.rsplit("@", 1)[-1].lower()
    email_orders, ip_orders, device_orders = _velocities(session, order, rules, as_of)
    customer_orders, customer_average, seen_domain = _history(session, order, as_of)
    shop_orders, shop_median = _shop_median(session, order, as_of)
    if lines is None:
        lines = order_lines(session, order)
    biggest = max(lines, key=lambda line: line.quantity, default=None)
    return Facts(
        email=order.email,
        email_orders=email_orders,
        ip=order.client_ip,
        ip_orders=ip_orders,
        card_fingerprint=payment.card_fingerprint if payment else "",
        card_orders=card_orders,
        device_id=order.device_id,
        device_orders=device_orders,
        failed_attempts=failed,
        shipping_country=order.country,
        card_country=payment.card_country if payment else "",
        shipping_name=order.full_name,
        cardholder_name="",
        forwarder_match=forwarder_in(f"{order.full_name} {order.address} {order.city}"),
        email_domain=domain,
        disposable_domain=domain in DISPOSABLE_DOMAINS,
        domain_seen_before=seen_domain,
        total_cents=order.total_cents,
        customer_orders=customer_orders,
        customer_average_cents=customer_average,
        shop_orders=shop_orders,
        shop_median_cents=shop_median,
        max_units_of_one_sku=biggest.quantity if biggest else 0,
        sku_of_max_units=biggest.sku if biggest else "",
        cvc_check=payment.cvc_check if payment else "",
        postal_check=payment.postal_check if payment else "",
        risk_level=payment.risk_level if payment else "",
    )


def _issue(code: str, reason: str, **facts: Any) -> dict[str, Any]:
    return {"code": code, "reason": reason, "facts": facts}


def order_lines(session: Session, order: Order) -> list[OrderLine]:
    return list(session.exec(select(OrderLine).where(OrderLine.order_id == order.id)
                             .order_by(col(OrderLine.id))))


def quality_issues(session: Session, order: Order, payment: Payment | None,
                   as_of: datetime, lines: list[OrderLine] | None = None,
                   ) -> list[dict[str, Any]]:
    """What is wrong with the order itself, whoever placed it (two queries)."""
    issues: list[dict[str, Any]] = []
    checks: list[tuple[str, Callable[[], str]]] = [
        ("email", lambda: normalise_email(order.email)),
        ("phone", lambda: normalise_phone(order.phone, order.country)),
        ("postal_code", lambda: normalise_postal_code(order.postal_code, order.country)),
    ]
    for name, check in checks:
        try:
            if check() != getattr(order, name):
                issues.append(_issue("not_normalised", f"The {name} is not in its normal "
                                     "form.", field=name, value=getattr(order, name)))
        except InvalidField as exc:
            issues.append(_issue("invalid_contact", str(exc), field=name))
    for name in ("full_name", "address", "city"):
        if not getattr(order, name).strip():
            issues.append(_issue("incomplete_address", f"The {name} is missing.", field=name))

    if lines is None:
        lines = order_lines(session, order)
    subtotal = sum(line.unit_price_cents * line.quantity for line in lines)
    discount = sum(line.discount_cents for line in lines)  # the code's shares, per line
    method = shipping_method(order.shipping_method)
    expected = order_totals(subtotal, method, order.country, discount) if (
        method and 0 <= discount <= subtotal) else None
    if expected is None or (expected.subtotal_cents, expected.discount_cents,
                            expected.shipping_cents, expected.tax_cents,
                            expected.total_cents) != (
            order.subtotal_cents, order.discount_cents, order.shipping_cents, order.tax_cents,
            order.total_cents):
        issues.append(_issue("totals_mismatch", "The totals do not add up from the lines, "
                             "shipping and tax.", stored_total_cents=order.total_cents,
                             computed_total_cents=expected.total_cents if expected else None))
    if payment is None or payment.amount_cents != order.total_cents:
        issues.append(_issue("amount_mismatch", "The authorised amount is not the order total.",
                             authorised_cents=payment.amount_cents if payment else None,
                             total_cents=order.total_cents))

    variant_ids = [line.variant_id for line in lines]
    sellable = set(session.exec(
        select(Variant.id).join(Product, col(Product.id) == Variant.product_id)
        .where(col(Variant.id).in_(variant_ids), col(Variant.active).is_(True),
               col(Product.active).is_(True))))
    for line in lines:
        if line.variant_id not in sellable:
            issues.append(_issue("not_sellable", f"{line.sku} is no longer sold.",
                                 sku=line.sku))

    mine = sorted((line.variant_id, line.quantity) for line in lines)
    recent: dict[str, list[tuple[int, int]]] = {}
    for number, variant_id, quantity in session.exec(
        select(Order.number, OrderLine.variant_id, OrderLine.quantity)
        .join(OrderLine, col(OrderLine.order_id) == Order.id)
        .where(col(Order.id) != order.id, col(Order.status).in_(PLACED),
               func.lower(col(Order.email)) == order.email.lower(),
               col(Order.authorized_at) >= as_of - DUPLICATE_WINDOW,
               col(Order.authorized_at) <= as_of)
        .order_by(col(Order.authorized_at))
    ):
        recent.setdefault(number, []).append((variant_id, quantity))
    duplicate = next((number for number, theirs in recent.items() if sorted(theirs) == mine),
                     None)
    if duplicate is not None:
        issues.append(_issue("duplicate_order", "The same items were ordered by the same "
                             f"customer minutes before ({duplicate}).", other_order=duplicate))
    return issues


@dataclass(frozen=True)
class Assessment:
    signals: list[Signal]
    score: int
    quality_issues: list[dict[str, Any]]
    decision: Decision


def assess(session: Session, order: Order, rules: RuleSetBody, as_of: datetime | None = None,
           known_issues: list[dict[str, Any]] | None = None) -> Assessment:
    """Signals, score and decision under `rules`; the quality checks run unless their
    findings are given (`known_issues`, as a replay takes them from the screening)."""
    as_of = as_of or order.authorized_at or utcnow()
    payment = session.get(Payment, order.payment_id) if order.payment_id else None
    lines = order_lines(session, order)
    signals = evaluate(gather_facts(session, order, payment, rules, as_of, lines), rules)
    issues = (quality_issues(session, order, payment, as_of, lines) if known_issues is None
              else known_issues)
    points = score(signals)
    return Assessment(signals, points, issues, decide(points, issues, rules.thresholds))


def _explain(assessment: Assessment) -> str:
    parts = [f"{s.code} (+{s.weight})" for s in assessment.signals]
    parts += [i["code"] for i in assessment.quality_issues]
    return ", ".join(parts) if parts else "no signals"


def screen_order(*, uow: UnitOfWork, order_id: uuid.UUID, env: Environment,
                 settings: Settings) -> Screening | None:
    """Screen an authorised order once and act on the decision (see the module docstring)."""
    session = uow.session
    order = session.get(Order, order_id, with_for_update=True)
    if order is None:
        return None
    existing = session.exec(select(Screening).where(Screening.order_id == order_id)).first()
    if existing is not None or order.status != OrderStatus.AUTHORIZED:
        return existing
    rule_set = rules_in_force(session)
    assessment = assess(session, order, rule_set.rules())
    screening = Screening(order_id=order.id, rule_set_version=rule_set.version,
                          score=assessment.score, decision=assessment.decision,
                          signals=[s.as_dict() for s in assessment.signals],
                          quality_issues=assessment.quality_issues)
    session.add(screening)
    session.flush()
    now = utcnow()
    why = (f"Screening (rules v{rule_set.version}): score {assessment.score}, "
           f"{assessment.decision}; {_explain(assessment)}.")
    if assessment.decision == Decision.APPROVE:
        session.add(transition(order, OrderStatus.APPROVED, actor=ACTOR, reason=why, at=now,
                               public=False))
        outbox.enqueue(uow, "capture_payment", str(order.id))
    elif assessment.decision == Decision.REVIEW:
        session.add(transition(order, OrderStatus.ON_HOLD, actor=ACTOR, reason=why, at=now,
                               public=False))
    else:
        session.add(note(order, why, actor=ACTOR, at=now))
        cancel_order(uow=uow, order_id=order.id, actor=ACTOR, env=env, settings=settings,
                     target=OrderStatus.REJECTED,
                     reason="We could not accept this order after our checks.")
    return screening


class NotOnHold(DomainError):
    code = "illegal_transition"


def decide_review(*, uow: UnitOfWork, order_id: uuid.UUID, approve: bool, reason: str,
                  reviewer: str, env: Environment, settings: Settings) -> Order:
    """A reviewer's decision on an order on hold: approve (capture follows) or reject.
    Locks the order; a second decision finds it no longer on hold and is refused."""
    session = uow.session
    order = session.get(Order, order_id, with_for_update=True)
    if order is None:
        raise NotFound("No such order.")
    if order.status != OrderStatus.ON_HOLD:
        raise NotOnHold(f"Only an order on hold can be decided; this one is "
                        f"{order.status.replace('_', ' ')}.", details={"status": order.status})
    screening = session.exec(select(Screening).where(Screening.order_id == order_id)).first()
    if screening is not None:
        screening.decided_by = reviewer
        screening.decided_at = utcnow()
        screening.decision_reason = reason[:1000]
    if approve:
        session.add(transition(order, OrderStatus.APPROVED, actor=reviewer, at=utcnow(),
                               reason=f"Approved after review: {reason}", public=False))
        outbox.enqueue(uow, "capture_payment", str(order.id))
    else:
        session.add(note(order, f"Rejected after review: {reason}", actor=reviewer,
                         at=utcnow()))
        cancel_order(uow=uow, order_id=order.id, actor=reviewer, env=env, settings=settings,
                     target=OrderStatus.REJECTED,
                     reason="We could not accept this order after our checks.")
    return order


# -- Back-testing a candidate rule set ---------------------------------------------------------


@dataclass(frozen=True)
class ChangedDecision:
    number: str
    before: str
    after: str
    score_before: int
    score_after: int
    signals_after: list[str]


@dataclass
class BacktestReport:
    orders: int = 0
    changed: list[ChangedDecision] = field(default_factory=list)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)


def backtest(session: Session, candidate: RuleSetBody, *,
             since: datetime | None = None) -> BacktestReport:
    """Replay `candidate` over every screened order (as of each order's authorisation) and
    compare with the decision the rules of the day made. Reads only; changes nothing.

    The quality issues are those the screening found: they are no part of a rule set, and
    checked again today they would reflect today's catalogue, not the order's."""
    report = BacktestReport()
    query = (select(Order, Screening).join(Screening, col(Screening.order_id) == Order.id)
             .order_by(col(Screening.screened_at), col(Order.id)))
    if since is not None:
        query = query.where(col(Screening.screened_at) >= since)
    for order, screening in session.exec(query):
        report.orders += 1
        assessment = assess(session, order, candidate, known_issues=screening.quality_issues)
        key = (screening.decision, str(assessment.decision))
        report.counts[key] = report.counts.get(key, 0) + 1
        if assessment.decision != screening.decision:
            report.changed.append(ChangedDecision(
                order.number, screening.decision, assessment.decision, screening.score,
                assessment.score, [s.code for s in assessment.signals]))
    return report
