"""Reconciliation: does every cent Stripe moved in a period belong to an order, a refund, a
dispute or a fee, and is every payment and refund of ours in Stripe?

`reconcile` matches the synced balance transactions of the period (by their `source`: a
charge, a refund, a dispute) to our payments, refunds and disputes, and stores one item per
difference: missing in the shop, missing in Stripe (past a grace period), amount mismatch,
currency mismatch, duplicate; one item per day and currency for the fees Stripe took (for the
books); and, for each payout of the period, whether its transactions' net adds up to it.

It is set-based: a handful of SELECTs over the whole period, each a join or an aggregate that
returns only the differences (PostgreSQL may run them in parallel, which an INSERT ... SELECT
would forbid), then one insert of the items, all in one transaction, so a run is complete or
absent. It only reads the shop's records; items are resolved later, with a note.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast

from sqlalchemy import Date, Table, and_, case, func, insert, select, text
from sqlalchemy import cast as sql_cast
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, SQLModel

from conveyor.db import UnitOfWork
from conveyor.errors import Conflict, NotFound
from models.base import utcnow
from models.finance import (
    ClosedPeriod,
    DifferenceClass,
    Dispute,
    ReconciliationItem,
    ReconciliationRun,
    Refund,
    RefundStatus,
    StripeBalanceTransaction,
    StripePayout,
)
from models.orders import Order
from models.payments import Payment


def _table(model: type[SQLModel]) -> Table:
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


# Core tables: the queries here are set-based SQL, not object loading.
TRANSACTIONS, PAYMENTS, REFUNDS = (_table(StripeBalanceTransaction), _table(Payment),
                                   _table(Refund))
DISPUTES, ORDERS, PAYOUTS = _table(Dispute), _table(Order), _table(StripePayout)
BT, PAY, REF, DISP, ORD, OUT = (TRANSACTIONS.c, PAYMENTS.c, REFUNDS.c, DISPUTES.c, ORDERS.c,
                                PAYOUTS.c)
ITEMS = _table(ReconciliationItem)
CHARGE_TYPES = ("charge", "payment")
MATCHED_TYPES = (*CHARGE_TYPES, "refund", "adjustment")  # what our records should explain
C = DifferenceClass


def _bounds(start: date, end: date) -> tuple[datetime, datetime]:
    return (datetime.combine(start, time.min, UTC),
            datetime.combine(end + timedelta(days=1), time.min, UTC))


def reconcile(*, uow: UnitOfWork, start: date, end: date, created_by: str,
              grace: timedelta = timedelta(days=2), now: datetime | None = None,
              ) -> ReconciliationRun:
    """Reconcile the days `start`..`end` (inclusive) and store the run with its items."""
    session = uow.session
    if session.get_bind().dialect.name == "postgresql":
        # A batch job over a month of rows: room to hash in memory, and days in UTC.
        session.execute(text("SET LOCAL work_mem = '64MB'"))
        session.execute(text("SET LOCAL TIME ZONE 'UTC'"))
    since, until = _bounds(start, end)
    now = now or datetime.now(UTC)
    in_period = and_(BT.created >= since, BT.created < until)
    items: list[dict[str, Any]] = []
    items += _stripe_side(session, in_period)
    items += _shop_side(session, since, until, now - grace)
    items += _duplicates(session, in_period)
    fees, examined = _fees(session, in_period)
    items += fees
    items += _payouts(session, since, until)
    _order_numbers(session, items)

    run = ReconciliationRun(period_start=start, period_end=end, created_by=created_by)
    session.add(run)
    session.flush()
    if items:
        session.execute(insert(ITEMS), [_item_row(run.id, item) for item in items])
    unmatched = sum(1 for item in items if item["difference"] in (C.MISSING_IN_SHOP, C.DUPLICATE)
                    and item.get("bt_type") in (*CHARGE_TYPES, "refund"))
    run.matched = examined - unmatched
    run.totals = {}
    for item in items:
        total = run.totals.setdefault(item["difference"], {"items": 0, "cents": 0})
        total["items"] += 1
        cents = item.get("actual_cents")
        total["cents"] += cents if cents is not None else item.get("expected_cents") or 0
    session.flush()
    return run


ITEM_FIELDS = ("difference", "balance_transaction_id", "payout_id", "payment_id", "refund_id",
               "dispute_id", "expected_cents", "actual_cents")


def _item_row(run_id: int | None, item: dict[str, Any]) -> dict[str, Any]:
    row = {name: item.get(name) for name in ITEM_FIELDS}
    row.update(run_id=run_id, order_number=item.get("order_number", ""),
               currency=(item.get("currency") or "").upper(), detail=item["detail"][:500],
               resolved_by="", resolution_note="")
    return row


def _stripe_side(session: Any, in_period: Any) -> list[dict[str, Any]]:
    """Stripe's transactions of the period that nothing of ours explains, or that move
    another amount or currency than the payment or refund they belong to."""
    ours_currency = func.coalesce(PAY.currency, REF.currency)
    expected = case((PAY.id.is_not(None), PAY.captured_cents),
                    (REF.id.is_not(None), -REF.amount_cents))
    difference = case(
        (and_(PAY.id.is_(None), REF.id.is_(None), DISP.id.is_(None)), C.MISSING_IN_SHOP),
        (func.upper(BT.currency) != func.upper(ours_currency), C.CURRENCY_MISMATCH),
        (BT.amount_cents != expected, C.AMOUNT_MISMATCH))
    matched = (
        select(BT.id.label("balance_transaction_id"), BT.type.label("bt_type"),
               BT.source, BT.amount_cents.label("actual_cents"), BT.currency,
               PAY.id.label("payment_id"), REF.id.label("refund_id"),
               DISP.id.label("dispute_id"), ours_currency.label("our_currency"),
               expected.label("expected_cents"),
               func.coalesce(PAY.order_id, REF.order_id, DISP.order_id).label("order_id"),
               difference.label("difference"))
        .select_from(TRANSACTIONS)
        .outerjoin(PAYMENTS, PAY.stripe_charge_id == BT.source)
        .outerjoin(REFUNDS, REF.stripe_refund_id == BT.source)
        .outerjoin(DISPUTES, DISP.id == BT.source)
        .where(in_period, BT.type.in_(MATCHED_TYPES)).subquery())
    found = []
    for row in session.execute(select(matched).where(matched.c.difference.is_not(None))):
        item = dict(row._mapping)
        if item["difference"] == C.MISSING_IN_SHOP:
            item["expected_cents"] = None
            item["detail"] = f"no order, refund or dispute has {item['source']}"
        elif item["difference"] == C.CURRENCY_MISMATCH:
            item["detail"] = f"Stripe {item['currency']}, ours {item['our_currency']}"
        else:
            item["detail"] = "Stripe moved another amount"
        found.append(item)
    return found


def _shop_side(session: Any, since: datetime, until: datetime,
               settled_before: datetime) -> list[dict[str, Any]]:
    """Payments captured and refunds made here in the period (past the grace) that have no
    balance transaction at Stripe."""
    has_charge = select(BT.id).where(BT.source == PAY.stripe_charge_id,
                                     BT.type.in_(CHARGE_TYPES)).exists()
    has_refund = select(BT.id).where(BT.source == REF.stripe_refund_id,
                                     BT.type == "refund").exists()
    payments = select(PAY.id.label("payment_id"), PAY.order_id,
                      PAY.captured_cents.label("expected_cents"), PAY.currency).where(
        PAY.captured_at >= since, PAY.captured_at < until, PAY.captured_at < settled_before,
        PAY.captured_cents > 0, ~has_charge)
    refunds = select(REF.id.label("refund_id"), REF.order_id,
                     (-REF.amount_cents).label("expected_cents"), REF.currency).where(
        REF.status == RefundStatus.SUCCEEDED, REF.processed_at >= since,
        REF.processed_at < until, REF.processed_at < settled_before, ~has_refund)
    found = [dict(row._mapping, difference=C.MISSING_IN_STRIPE,
                  detail="captured here, no balance transaction at Stripe")
             for row in session.execute(payments)]
    found += [dict(row._mapping, difference=C.MISSING_IN_STRIPE,
                   detail="refunded here, no balance transaction at Stripe")
              for row in session.execute(refunds)]
    return found


def _duplicates(session: Any, in_period: Any) -> list[dict[str, Any]]:
    """A second (third ...) transaction of the period for the same charge or refund."""
    twice = (select(BT.source, func.min(BT.id).label("first_id"))
             .where(in_period, BT.type.in_((*CHARGE_TYPES, "refund")))
             .group_by(BT.source).having(func.count() > 1).subquery())
    rows = session.execute(
        select(BT.id.label("balance_transaction_id"), BT.type.label("bt_type"),
               BT.amount_cents.label("actual_cents"), BT.currency, BT.source,
               func.coalesce(PAY.order_id, REF.order_id).label("order_id"),
               PAY.id.label("payment_id"), REF.id.label("refund_id"))
        .join(twice, and_(twice.c.source == BT.source, BT.id != twice.c.first_id))
        .outerjoin(PAYMENTS, PAY.stripe_charge_id == BT.source)
        .outerjoin(REFUNDS, REF.stripe_refund_id == BT.source)
        .where(in_period))
    return [dict(row._mapping, difference=C.DUPLICATE,
                 detail=f"a second balance transaction for {row.source}") for row in rows]


def _fees(session: Any, in_period: Any) -> tuple[list[dict[str, Any]], int]:
    """What Stripe kept, per day and currency (a line for the books, not a difference); and
    how many charge and refund transactions the period holds."""
    postgres = session.get_bind().dialect.name == "postgresql"
    day = sql_cast(BT.created, Date) if postgres else func.date(BT.created)  # both in UTC
    rows = session.execute(
        select(day.label("day"), BT.currency, BT.type, func.sum(BT.fee_cents).label("fees"),
               func.count().label("transactions"))
        .where(in_period).group_by(day, BT.currency, BT.type))
    fees: dict[tuple[date, str], list[int]] = {}
    examined = 0
    for row in rows:
        if row.type in (*CHARGE_TYPES, "refund"):
            examined += row.transactions
        if row.fees:
            found = fees.setdefault((row.day, row.currency), [0, 0])
            found[0] += int(row.fees)
            found[1] += row.transactions
    return [{"difference": C.FEE_RECORDED, "actual_cents": cents, "currency": currency,
             "detail": f"Stripe's fees on {count} transaction{'s' * (count != 1)} on {day}"}
            for (day, currency), (cents, count) in sorted(fees.items())], examined


def _payouts(session: Any, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """Payouts of the period whose transactions' net does not add up to them."""
    of_period = select(OUT.id).where(OUT.created >= since, OUT.created < until)
    net = (select(BT.payout_id, func.sum(BT.net_cents).label("net"))
           .where(BT.payout_id.in_(of_period)).group_by(BT.payout_id).subquery())
    rows = session.execute(
        select(OUT.id.label("payout_id"), OUT.amount_cents.label("expected_cents"),
               func.coalesce(net.c.net, 0).label("actual_cents"), OUT.currency)
        .outerjoin(net, net.c.payout_id == OUT.id)
        .where(OUT.created >= since, OUT.created < until,
               func.coalesce(net.c.net, 0) != OUT.amount_cents))
    return [dict(row._mapping, difference=C.PAYOUT_MISMATCH,
                 detail="the payout's transactions do not add up to it") for row in rows]


def _order_numbers(session: Any, items: list[dict[str, Any]]) -> None:
    ids = {item["order_id"] for item in items if item.get("order_id")}
    numbers = dict(session.execute(select(ORD.id, ORD.number).where(ORD.id.in_(ids)))
                   .all()) if ids else {}
    for item in items:
        item["order_number"] = numbers.get(item.get("order_id"), "")


def differences(run: ReconciliationRun) -> int:
    """Items that are differences proper (fees are for the books, not a difference)."""
    return sum(v["items"] for k, v in run.totals.items() if k != DifferenceClass.FEE_RECORDED)


def resolve_item(*, uow: UnitOfWork, item_id: int, note: str, resolved_by: str
                 ) -> ReconciliationItem:
    """Mark one reconciliation item resolved, with what was found and done. Locks the item;
    an item is resolved once (Conflict after that, changing nothing)."""
    item = uow.session.get(ReconciliationItem, item_id, with_for_update=True)
    if item is None:
        raise NotFound("No such reconciliation item.")
    if item.resolved_at is not None:
        raise Conflict(f"This item was resolved by {item.resolved_by} on "
                       f"{item.resolved_at:%Y-%m-%d %H:%M} UTC.",
                       details={"resolved_by": item.resolved_by,
                                "resolution_note": item.resolution_note})
    item.resolved_by, item.resolved_at, item.resolution_note = resolved_by, utcnow(), note
    return item


def day_check(session: Session, day: date) -> tuple[int | None, list[int]]:
    """The newest reconciliation run covering `day`, and its unresolved items other than fees
    whose money moved that day (by the Stripe transaction, else the capture, the refund or
    the payout)."""
    run = _table(ReconciliationRun).c
    run_id = session.execute(select(run.id).where(run.period_start <= day,
                                                  run.period_end >= day)
                             .order_by(run.id.desc())).scalars().first()
    if run_id is None:
        return None, []
    since = datetime.combine(day, time.min, UTC)
    item = ITEMS.c
    when: ColumnElement[Any] = func.coalesce(BT.created, PAY.captured_at, REF.processed_at,
                                             OUT.created)
    statement = (
        select(item.id).select_from(ITEMS)
        .outerjoin(TRANSACTIONS, BT.id == item.balance_transaction_id)
        .outerjoin(PAYMENTS, PAY.id == item.payment_id)
        .outerjoin(REFUNDS, REF.id == item.refund_id)
        .outerjoin(PAYOUTS, OUT.id == item.payout_id)
        .where(item.run_id == run_id, item.difference != DifferenceClass.FEE_RECORDED,
               item.resolved_at.is_(None),
               and_(when >= since, when < since + timedelta(days=1)))
        .order_by(item.id))
    return run_id, [int(i) for i in session.execute(statement).scalars()]


def close_day(*, uow: UnitOfWork, day: date, note: str, closed_by: str
              ) -> tuple[ClosedPeriod, int | None, list[int]]:
    """Close a day that is over (UTC): from then on `fulfilment.refunds.ensure_open` refuses
    what would change its figures. A day is closed once (Conflict after that; two closing
    at the same moment: the database's key refuses the second). Closing with unresolved
    differences is allowed; they are returned so the caller can say so."""
    session = uow.session
    if day >= utcnow().date():
        raise Conflict(f"{day.isoformat()} has not ended yet (UTC); a day can be closed once "
                       "it is over.", details={"day": day.isoformat()})
    existing = session.get(ClosedPeriod, day)
    if existing is not None:
        raise Conflict(f"{day.isoformat()} was already closed by {existing.closed_by}.",
                       details={"day": day.isoformat(), "closed_by": existing.closed_by})
    period = ClosedPeriod(day=day, closed_by=closed_by, note=note)
    session.add(period)
    session.flush()
    run_id, unresolved = day_check(session, day)
    return period, run_id, unresolved
