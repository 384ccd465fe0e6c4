"""Finance reports: what the shop earned after costs (margins), and each day's close.

Money is counted net of VAT (VAT is owed to the state, not earned): revenue is what captured
orders' goods cost at their regular prices, plus shipping; discounts are what sale prices and
discount codes took off that; refunds are what was given back (their VAT taken
out); Stripe's fees come from the synced balance transactions of the orders' charges; the cost
of goods is each line's unit cost when it was allocated (weighted average from receiving)
times its quantity; gross margin = revenue - discounts - refunds - fees - cost of goods.
Per product, an order's shipping, refunds and fees are shared among its lines by value.
Days are UTC days of capture. Everything is read with a handful of grouped queries.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, time, timedelta
from html import escape

from sqlalchemy import func
from sqlmodel import Session, col, select

from fulfilment.reconciliation import day_check
from models.finance import (
    Dispute,
    ReconciliationItem,
    Refund,
    RefundStatus,
    StripeBalanceTransaction,
    StripePayout,
)
from models.orders import Order, OrderLine
from models.payments import Payment


@dataclass
class Margin:
    key: str
    orders: int = 0
    units: int = 0
    revenue_cents: int = 0
    discounts_cents: int = 0
    refunds_cents: int = 0
    fees_cents: int = 0
    cost_of_goods_cents: int = 0

    @property
    def gross_margin_cents(self) -> int:
        return (self.revenue_cents - self.discounts_cents - self.refunds_cents
                - self.fees_cents - self.cost_of_goods_cents)

    def as_row(self) -> dict[str, int | str]:
        row: dict[str, int | str] = {f.name: getattr(self, f.name) for f in fields(self)}
        row["gross_margin_cents"] = self.gross_margin_cents
        return row


def _bounds(start: date, end: date) -> tuple[datetime, datetime]:
    return (datetime.combine(start, time.min, UTC),
            datetime.combine(end + timedelta(days=1), time.min, UTC))


def _net(gross: int, rate_bps: int) -> int:
    return round(gross * 10_000 / (10_000 + rate_bps))


@dataclass
class _OrderFigures:
    order: Order
    day: date
    lines: list[OrderLine] = field(default_factory=list)
    refunds_gross: int = 0
    fees: int = 0


def _captured_orders(session: Session, start: date, end: date) -> list[_OrderFigures]:
    since, until = _bounds(start, end)
    rows = session.exec(
        select(Order, Payment.captured_at, Payment.stripe_charge_id)
        .join(Payment, col(Payment.id) == Order.payment_id)
        .where(col(Payment.captured_at) >= since, col(Payment.captured_at) < until))
    figures: dict[object, _OrderFigures] = {}
    charges: dict[str, object] = {}
    for order, captured_at, charge_id in rows:
        assert captured_at is not None  # the filter above
        figures[order.id] = _OrderFigures(order, captured_at.astimezone(UTC).date())
        if charge_id:
            charges[charge_id] = order.id
    if not figures:
        return []
    ids = list(figures)
    for line in session.exec(select(OrderLine).where(col(OrderLine.order_id).in_(ids))):
        figures[line.order_id].lines.append(line)
    for order_id, amount in session.exec(
            select(Refund.order_id, func.sum(Refund.amount_cents))
            .where(col(Refund.order_id).in_(ids), Refund.status == RefundStatus.SUCCEEDED)
            .group_by(col(Refund.order_id))):
        figures[order_id].refunds_gross = int(amount or 0)
    if charges:
        for source, fee in session.exec(
                select(StripeBalanceTransaction.source,
                       func.sum(StripeBalanceTransaction.fee_cents))
                .where(col(StripeBalanceTransaction.source).in_(list(charges)))
                .group_by(col(StripeBalanceTransaction.source))):
            figures[charges[source]].fees = int(fee or 0)
    return list(figures.values())


def _regular(line: OrderLine) -> int:
    return (line.regular_price_cents or line.unit_price_cents) * line.quantity


def _given(line: OrderLine) -> int:
    """What the line gave away: the sale's reduction plus its share of a discount code."""
    return _regular(line) - line.line_total_cents + line.discount_cents


def margins(session: Session, start: date, end: date, by: str) -> list[Margin]:
    """Margins per `day`, `product` or `order` over the days `start`..`end`."""
    table: dict[str, Margin] = {}
    for f in _captured_orders(session, start, end):
        order = f.order
        refunds_net = _net(f.refunds_gross, order.tax_rate_bps)
        if by in ("day", "order"):
            key = f.day.isoformat() if by == "day" else order.number
            row = table.setdefault(key, Margin(key))
            row.orders += 1
            row.units += sum(line.quantity for line in f.lines)
            row.revenue_cents += sum(_regular(line) for line in f.lines) + order.shipping_cents
            row.discounts_cents += sum(_given(line) for line in f.lines)
            row.refunds_cents += refunds_net
            row.fees_cents += f.fees
            row.cost_of_goods_cents += sum((line.unit_cost_cents or 0) * line.quantity
                                           for line in f.lines)
            continue
        total = sum(line.line_total_cents for line in f.lines) or 1
        for name in {line.product_name for line in f.lines}:
            table.setdefault(name, Margin(name)).orders += 1
        for line in f.lines:
            share = line.line_total_cents / total
            row = table[line.product_name]
            row.units += line.quantity
            row.revenue_cents += _regular(line) + round(order.shipping_cents * share)
            row.discounts_cents += _given(line)
            row.refunds_cents += round(refunds_net * share)
            row.fees_cents += round(f.fees * share)
            row.cost_of_goods_cents += (line.unit_cost_cents or 0) * line.quantity
    return sorted(table.values(), key=lambda m: m.key)


def total(rows: Iterable[Margin]) -> Margin:
    """The sum of rows (each order must appear in one row only: per day or per order)."""
    result = Margin("total")
    for row in rows:
        for f in fields(Margin):
            if f.name != "key":
                setattr(result, f.name, getattr(result, f.name) + getattr(row, f.name))
    return result


def daily_margins(session: Session, end: date, days: int = 30) -> list[Margin]:
    """The last `days` days up to `end`, every day present (zeros where nothing happened)."""
    start = end - timedelta(days=days - 1)
    found = {m.key: m for m in margins(session, start, end, "day")}
    return [found.get((start + timedelta(days=n)).isoformat(),
                      Margin((start + timedelta(days=n)).isoformat())) for n in range(days)]


def margin_chart_svg(rows: list[Margin], *, width: int = 900, height: int = 320) -> str:
    """Revenue (bars) and gross margin (line) per day, as an SVG picture."""
    pad, top = 48, 24
    plot_w, plot_h = width - 2 * pad, height - top - 56
    peak = max([1, *(m.revenue_cents for m in rows), *(abs(m.gross_margin_cents) for m in rows)])
    step = plot_w / max(len(rows), 1)

    def y(cents: int) -> float:
        return top + plot_h - (cents / peak) * plot_h

    bars, points, labels = [], [], []
    for n, m in enumerate(rows):
        x = pad + n * step
        bars.append(f'<rect x="{x + step * 0.15:.1f}" y="{y(m.revenue_cents):.1f}" '
                    f'width="{step * 0.7:.1f}" height="{top + plot_h - y(m.revenue_cents):.1f}" '
                    f'fill="#9bb8ec"><title>{escape(m.key)}: revenue '
                    f'{m.revenue_cents / 100:.2f}, margin {m.gross_margin_cents / 100:.2f}'
                    '</title></rect>')
        points.append(f"{x + step / 2:.1f},{y(m.gross_margin_cents):.1f}")
        if n % max(1, len(rows) // 10) == 0:
            labels.append(f'<text x="{x + step / 2:.1f}" y="{height - 30}" font-size="11" '
                          f'text-anchor="middle">{escape(m.key[5:])}</text>')
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">'
        f'<title>Revenue and gross margin, last {len(rows)} days (EUR, net of VAT)</title>'
        f'<line x1="{pad}" y1="{top + plot_h}" x2="{width - pad}" y2="{top + plot_h}" '
        'stroke="#888"/>'
        f'{"".join(bars)}<polyline points="{" ".join(points)}" fill="none" stroke="#1d7a3d" '
        f'stroke-width="2"/>{"".join(labels)}'
        f'<text x="{pad}" y="16" font-size="12">max {peak / 100:,.2f} EUR</text>'
        f'<text x="{width - pad}" y="{height - 10}" font-size="11" text-anchor="end">'
        'bars: revenue; line: gross margin</text></svg>')


@dataclass
class DailyClose:
    day: date
    orders_placed: int
    sold_cents: int
    captured_count: int
    captured_cents: int
    refunded_count: int
    refunded_cents: int
    disputed_count: int
    disputed_cents: int
    paid_out_count: int
    paid_out_cents: int
    reconciled: bool
    unresolved_differences: list[dict[str, object]]  # the newest run's, dated that day


def daily_close(session: Session, day: date) -> DailyClose:
    since, until = _bounds(day, day)
    placed = session.exec(select(func.count(), func.coalesce(func.sum(Order.total_cents), 0))
                          .where(col(Order.authorized_at) >= since,
                                 col(Order.authorized_at) < until)).one()
    captured = session.exec(select(func.count(),
                                   func.coalesce(func.sum(Payment.captured_cents), 0))
                            .where(col(Payment.captured_at) >= since,
                                   col(Payment.captured_at) < until)).one()
    refunded = session.exec(select(func.count(), func.coalesce(func.sum(Refund.amount_cents), 0))
                            .where(Refund.status == RefundStatus.SUCCEEDED,
                                   col(Refund.processed_at) >= since,
                                   col(Refund.processed_at) < until)).one()
    disputed = session.exec(select(func.count(), func.coalesce(func.sum(Dispute.amount_cents), 0))
                            .where(col(Dispute.created_at) >= since,
                                   col(Dispute.created_at) < until)).one()
    paid_out = session.exec(select(func.count(),
                                   func.coalesce(func.sum(StripePayout.amount_cents), 0))
                            .where(col(StripePayout.created) >= since,
                                   col(StripePayout.created) < until)).one()
    run_id, item_ids = day_check(session, day)  # the newest run's open items of that day
    unresolved: list[dict[str, object]] = [
        {"id": item.id, "difference": item.difference, "detail": item.detail,
         "balance_transaction_id": item.balance_transaction_id, "payout_id": item.payout_id,
         "order_number": item.order_number, "expected_cents": item.expected_cents,
         "actual_cents": item.actual_cents}
        for item in session.exec(select(ReconciliationItem).where(
            col(ReconciliationItem.id).in_(item_ids)).order_by(col(ReconciliationItem.id)))
    ] if item_ids else []
    return DailyClose(day, int(placed[0]), int(placed[1]), int(captured[0]), int(captured[1]),
                      int(refunded[0]), int(refunded[1]), int(disputed[0]), int(disputed[1]),
                      int(paid_out[0]), int(paid_out[1]), run_id is not None, unresolved)


def as_csv_rows(rows: Iterable[Margin]) -> Iterator[list[object]]:
    names = [f.name for f in fields(Margin)] + ["gross_margin_cents"]
    yield list[object](names)
    for row in rows:
        values = row.as_row()
        yield [values[name] for name in names]
