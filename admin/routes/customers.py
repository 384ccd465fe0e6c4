"""Customer files: search, one customer's file, staff notes; and the segments report.

A file is addressed by its `ref` (an account id, or an opaque HMAC reference for guests: see
`admin/customers.py`), never by an email. Reading needs CUSTOMERS_READ, notes CUSTOMERS_NOTE;
a note's audit entry names the file by its ref and the note by its id, never its text.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response, StreamingResponse

from admin import customers as files
from admin.api import Api, Context, Schema
from admin.csv_export import stream_csv
from admin.routes.reports import PeriodQuery
from conveyor import audit
from models.staff import Permission

api = Api()
TAGS = ["customers"]
Ref = Annotated[str, Field(pattern=files.REF_PATTERN)]


# -- Search ---------------------------------------------------------------------------------------


class CustomerQuery(Schema):
    q: str | None = Field(default=None, min_length=1, max_length=254,
                          description="Part of an email address or a name (any case).")
    sort: Literal["-last_order", "last_order", "-lifetime_value", "lifetime_value"] = \
        "-last_order"
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=400)


class CustomerSummary(BaseModel):
    ref: str = Field(description="The file's reference: the account id for account holders, "
                                 "else an opaque reference (`g` + 32 hex digits).")
    email: str = Field(description="Lower-cased.")
    name: str
    account_id: uuid.UUID | None
    orders: int = Field(description="Orders paid for (authorised).")
    lifetime_value_cents: int = Field(description="Captured less refunded.")
    last_order_at: datetime | None


class CustomerPage(BaseModel):
    items: list[CustomerSummary]
    next_cursor: str | None


@api.route("GET", "/api/customers", access=Permission.CUSTOMERS_READ, query=CustomerQuery,
           response=CustomerPage, tags=TAGS,
           summary="Customers (guests and account holders) by email or name, with orders, "
           "lifetime value and last order, sorted, a page at a time")
def search_customers(ctx: Context, query: CustomerQuery) -> CustomerPage:
    secret = ctx.settings.session_secret
    with ctx.unit_of_work() as uow:
        rows, cursor = files.search_customers(uow.session, secret=secret, query=query.q,
                                              sort=query.sort, limit=query.limit,
                                              cursor=query.cursor)
        files.remember_refs(uow=uow, refs={r.ref: r.email for r in rows if r.account_id is None})
    return CustomerPage(items=[CustomerSummary.model_validate(r, from_attributes=True)
                               for r in rows], next_cursor=cursor)


# -- The file -------------------------------------------------------------------------------------


class Account(BaseModel):
    id: uuid.UUID
    created_at: datetime
    email_verified: bool
    email_verified_at: datetime | None
    marketing_emails: bool
    last_sign_in_at: datetime | None


class FileOrderOut(BaseModel):
    number: str
    created_at: datetime
    status: str
    total_cents: int
    currency: str
    payment_status: str | None = Field(description="The paying payment's state; null: unpaid.")
    captured_cents: int
    refunded_cents: int


class Figures(BaseModel):
    orders: int = Field(description="Orders paid for (authorised).")
    lifetime_value_cents: int = Field(description="Captured less refunded, all orders.")
    average_order_cents: int | None = Field(
        description="Lifetime value over the orders with a capture; null: none captured.")
    units_shipped: int
    units_returned: int = Field(description="On returns neither rejected nor cancelled.")
    returns_rate: float | None = Field(
        description="Units returned over units shipped; null: nothing shipped yet.")
    returns: int
    refunds: int = Field(description="Refunds that succeeded.")
    refunded_cents: int


class SignalOut(BaseModel):
    code: str
    weight: int
    reason: str


class ScreeningEntry(BaseModel):
    order_number: str
    screened_at: datetime
    decision: str
    score: int
    rule_set_version: int
    signals: list[SignalOut]
    quality_issues: list[str] = Field(description="Codes of the quality issues found.")
    decided_by: str
    decision_reason: str


class NoteOut(BaseModel):
    id: int
    author: str
    text: str
    created_at: datetime


class CustomerFileOut(BaseModel):
    ref: str
    email: str
    name: str
    account: Account | None = Field(description="The live account of this email; null: guest.")
    figures: Figures
    orders: list[FileOrderOut] = Field(description=f"Newest first, at most "
                                                   f"{files.FILE_ORDERS_LIMIT}.")
    orders_total: int = Field(description="Every order of the file, paid or not.")
    screenings: list[ScreeningEntry] = Field(description="Oldest first.")
    support_threads: int
    open_support_threads: int
    notes: list[NoteOut] = Field(description="Newest first.")


def _signal(raw: dict[str, Any]) -> SignalOut:
    return SignalOut(code=str(raw.get("code", "")), weight=int(raw.get("weight", 0)),
                     reason=str(raw.get("reason", "")))


def _note(note: Any) -> NoteOut:
    return NoteOut(id=note.id, author=note.author, text=note.body, created_at=note.created_at)


@api.route("GET", "/api/customers/{ref}", access=Permission.CUSTOMERS_READ,
           response=CustomerFileOut, tags=TAGS,
           summary="One customer's file: orders, lifetime value, average order, returns rate, "
           "screening decisions and signals over time, support threads, staff notes")
def customer_file(ctx: Context, ref: Ref) -> CustomerFileOut:
    with ctx.db.read_session() as session:
        identity = files.resolve_ref(session, ref, ctx.settings.session_secret)
        f = files.customer_file(session, identity)
    account = identity.account
    return CustomerFileOut(
        ref=identity.ref, email=identity.email, name=f.name,
        account=Account(id=account.id, created_at=account.created_at,
                        email_verified=account.email_verified_at is not None,
                        email_verified_at=account.email_verified_at,
                        marketing_emails=account.marketing_emails,
                        last_sign_in_at=account.last_sign_in_at) if account else None,
        figures=Figures(orders=f.placed_orders, lifetime_value_cents=f.lifetime_value_cents,
                        average_order_cents=f.average_order_cents,
                        units_shipped=f.units_shipped, units_returned=f.units_returned,
                        returns_rate=f.returns_rate, returns=f.returns_count,
                        refunds=f.refunds_count, refunded_cents=f.refunded_cents),
        orders=[FileOrderOut(
            number=o.order.number, created_at=o.order.created_at, status=o.order.status,
            total_cents=o.order.total_cents, currency=o.order.currency,
            payment_status=o.payment.status if o.payment else None,
            captured_cents=o.payment.captured_cents if o.payment else 0,
            refunded_cents=o.payment.refunded_cents if o.payment else 0) for o in f.orders],
        orders_total=f.orders_total,
        screenings=[ScreeningEntry(
            order_number=number, screened_at=s.screened_at, decision=s.decision,
            score=s.score, rule_set_version=s.rule_set_version,
            signals=[_signal(raw) for raw in s.signals],
            quality_issues=[str(issue.get("code", "")) for issue in s.quality_issues],
            decided_by=s.decided_by, decision_reason=s.decision_reason)
            for number, s in f.screenings],
        support_threads=f.support_threads, open_support_threads=f.open_support_threads,
        notes=[_note(n) for n in f.notes])


class NoteRequest(Schema):
    model_config = ConfigDict(str_strip_whitespace=True)  # a blank note is no note

    text: str = Field(min_length=1, max_length=4000)


@api.route("POST", "/api/customers/{ref}/notes", access=Permission.CUSTOMERS_NOTE,
           body=NoteRequest, response=NoteOut, status_code=201, tags=TAGS,
           summary="Add a staff note to a customer's file (audited by ref and note id)")
def add_note(ctx: Context, ref: Ref, body: NoteRequest) -> NoteOut:
    with ctx.unit_of_work() as uow:
        identity = files.resolve_ref(uow.session, ref, ctx.settings.session_secret)
        note = files.add_customer_note(uow=uow, identity=identity, author=ctx.staff.email,
                                       body=body.text)
        audit.record(uow.session, ctx.actor, "customer.note", target_type="customer",
                     target_id=identity.ref, after={"note_id": note.id})
    return _note(note)


# -- Segments -------------------------------------------------------------------------------------


class SegmentQuery(PeriodQuery):
    """The period whose captured sales are split into segments."""


class SegmentOut(BaseModel):
    segment: str
    customers: int
    orders: int
    revenue_cents: int = Field(description="Captured (VAT and shipping included); per "
                                           "category: the goods' line totals.")
    units: int | None = Field(default=None, description="Units sold (categories only).")


class SegmentReport(BaseModel):
    start: date
    end: date
    currency: str = "EUR"
    total: SegmentOut
    new_vs_returning: list[SegmentOut] = Field(
        description="new: no sale captured before the period; returning: at least one.")
    by_country: list[SegmentOut] = Field(description="Shipping country, by revenue.")
    by_value_band: list[SegmentOut] = Field(
        description="Order total in EUR: under 25, 25-50, 50-100, 100-250, 250+ "
                    "(each band from its lower bound up to below the next).")
    by_category: list[SegmentOut] = Field(description="Category of the products sold.")
    category_mix: list[SegmentOut] = Field(
        description="Customers who bought from one category in the period vs several.")


def _out(row: files.SegmentRow) -> SegmentOut:
    return SegmentOut(segment=row.segment, customers=row.customers, orders=row.orders,
                      revenue_cents=row.revenue_cents, units=row.units)


CSV_HEADER = ("section", "segment", "customers", "orders", "units", "revenue_cents")


@api.route("GET", "/api/reports/segments", access=Permission.CUSTOMERS_READ,
           query=SegmentQuery, response=SegmentReport, csv=True, tags=["reports", *TAGS],
           summary="Customers and revenue of the sales captured in a period: new vs "
           "returning, by country, order-value band and category mix (CSV with format=csv "
           "or Accept: text/csv)")
def segment_report(ctx: Context, query: SegmentQuery) -> SegmentReport | Response:
    assert query.start is not None and query.end is not None
    with ctx.db.read_session() as session:
        report = files.segments(session, query.start, query.end)
    if query.format == "csv" or "text/csv" in ctx.request.headers.get("accept", ""):
        name = f"segments-{query.start}-{query.end}.csv"
        return StreamingResponse(_csv(report), media_type="text/csv; charset=utf-8",
                                 headers={"content-disposition": f'attachment; filename="{name}"'})
    return SegmentReport(
        start=report.start, end=report.end, total=_out(report.total),
        new_vs_returning=[_out(r) for r in report.new_vs_returning],
        by_country=[_out(r) for r in report.by_country],
        by_value_band=[_out(r) for r in report.by_value_band],
        by_category=[_out(r) for r in report.by_category],
        category_mix=[_out(r) for r in report.category_mix])


def _csv(report: files.Segments) -> Iterator[str]:
    table = [[section, row.segment, row.customers, row.orders,
              "" if row.units is None else row.units, row.revenue_cents]
             for section, rows in report.sections() for row in rows]
    return stream_csv(CSV_HEADER, lambda _cursor: (table, None))
