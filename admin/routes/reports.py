"""Finance reports: margins (JSON, CSV, a 30-day chart) and the daily close."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from starlette.responses import Response, StreamingResponse

from admin import reports
from admin.api import Api, Context, Schema
from admin.csv_export import stream_csv
from admin.errors import ApiError
from models.staff import Permission

api = Api()
TAGS = ["reports"]
MAX_DAYS = 366


def _today() -> date:
    return datetime.now(UTC).date()


class PeriodQuery(Schema):
    """A report's period: by default the 30 days to today, at most MAX_DAYS; JSON or CSV."""

    start: date | None = Field(default=None,
                               description="First UTC day (default: 29 days before `end`).")
    end: date | None = Field(default=None, description="Last UTC day (default: today).")
    format: Literal["json", "csv"] = "json"

    @model_validator(mode="after")
    def _span(self) -> PeriodQuery:
        end = self.end or _today()
        start = self.start or end - timedelta(days=29)
        if start > end:
            raise ValueError("`start` must not be after `end`")
        if (end - start).days >= MAX_DAYS:
            raise ValueError(f"a report covers at most {MAX_DAYS} days")
        self.start, self.end = start, end
        return self


class MarginQuery(PeriodQuery):
    by: Literal["day", "product", "order"] = "day"


class MarginRow(BaseModel):
    key: str = Field(description="The UTC day, product name or order number.")
    orders: int
    units: int
    revenue_cents: int = Field(description="Goods at regular prices plus shipping, net of VAT.")
    discounts_cents: int = Field(description="What sale prices took off the regular prices.")
    refunds_cents: int = Field(description="Refunded, net of VAT.")
    fees_cents: int = Field(description="Stripe's fees on the orders' charges (synced).")
    cost_of_goods_cents: int = Field(description="Unit cost at allocation times quantity.")
    gross_margin_cents: int


class MarginReport(BaseModel):
    by: str
    start: date
    end: date
    currency: str = "EUR"
    rows: list[MarginRow]
    totals: MarginRow


@api.route("GET", "/api/reports/margins", access=Permission.PAYMENTS_READ, query=MarginQuery,
           response=MarginReport, csv=True, tags=TAGS,
           summary="Revenue, discounts, refunds, fees, cost of goods and gross margin per day, "
           "product or order (CSV with format=csv or Accept: text/csv)")
def margin_report(ctx: Context, query: MarginQuery) -> MarginReport | Response:
    assert query.start is not None and query.end is not None
    with ctx.db.read_session() as session:
        rows = reports.margins(session, query.start, query.end, query.by)
        # Totals from the per-day view: there every order counts once, shares unrounded.
        days = rows if query.by == "day" else reports.margins(session, query.start, query.end,
                                                              "day")
    if query.format == "csv" or "text/csv" in ctx.request.headers.get("accept", ""):
        name = f"margins-{query.by}-{query.start}-{query.end}.csv"
        return StreamingResponse(_csv(rows), media_type="text/csv; charset=utf-8",
                                 headers={"content-disposition": f'attachment; filename="{name}"'})
    return MarginReport(by=query.by, start=query.start, end=query.end,
                        rows=[MarginRow.model_validate(r.as_row()) for r in rows],
                        totals=MarginRow.model_validate(reports.total(days).as_row()))


def _csv(rows: list[reports.Margin]) -> Iterator[str]:
    header, *table = reports.as_csv_rows(rows)
    return stream_csv([str(name) for name in header], lambda _cursor: (table, None))


class ChartQuery(Schema):
    to: date | None = Field(default=None, description="Last UTC day shown (today).")


@api.route("GET", "/api/reports/margins/chart.svg", access=Permission.PAYMENTS_READ,
           query=ChartQuery, tags=TAGS,
           summary="Revenue and gross margin of the last 30 days as an SVG chart")
def margin_chart(ctx: Context, query: ChartQuery) -> Response:
    with ctx.db.read_session() as session:
        rows = reports.daily_margins(session, query.to or _today(), days=30)
    return Response(reports.margin_chart_svg(rows), media_type="image/svg+xml")


class CloseQuery(Schema):
    day: date | None = Field(default=None, description="The UTC day (yesterday).")


class UnresolvedItem(BaseModel):
    id: int
    difference: str
    detail: str
    balance_transaction_id: str | None
    payout_id: str | None
    order_number: str
    expected_cents: int | None
    actual_cents: int | None


class DailyCloseOut(BaseModel):
    day: date
    orders_placed: int = Field(description="Orders authorised that day.")
    sold_cents: int = Field(description="Their totals, VAT included.")
    captured_count: int
    captured_cents: int
    refunded_count: int
    refunded_cents: int
    disputed_count: int
    disputed_cents: int
    paid_out_count: int
    paid_out_cents: int
    reconciled: bool = Field(description="A reconciliation run covers the day.")
    unresolved_differences: list[UnresolvedItem]


@api.route("GET", "/api/reports/daily-close", access=Permission.PAYMENTS_READ, query=CloseQuery,
           response=DailyCloseOut, tags=TAGS,
           summary="What one day sold, captured, refunded, disputed and paid out, and any "
           "unresolved reconciliation differences")
def daily_close(ctx: Context, query: CloseQuery) -> DailyCloseOut:
    day = query.day or _today() - timedelta(days=1)
    if day > _today():
        raise ApiError(422, "invalid_input", "That day has not happened yet.",
                       {"day": day.isoformat()})
    with ctx.db.read_session() as session:
        close = reports.daily_close(session, day)
    return DailyCloseOut(
        day=close.day, orders_placed=close.orders_placed, sold_cents=close.sold_cents,
        captured_count=close.captured_count, captured_cents=close.captured_cents,
        refunded_count=close.refunded_count, refunded_cents=close.refunded_cents,
        disputed_count=close.disputed_count, disputed_cents=close.disputed_cents,
        paid_out_count=close.paid_out_count, paid_out_cents=close.paid_out_cents,
        reconciled=close.reconciled,
        unresolved_differences=[UnresolvedItem.model_validate(item)
                                for item in close.unresolved_differences])
