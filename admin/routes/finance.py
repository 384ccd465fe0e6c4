"""The finance desk: the payments ledger, refunds (with a second person above a limit),
disputes, reconciliation runs and their items, closed days, and invoices and credit notes.

Endpoints are thin: they check input, call one service of `fulfilment` (refunds,
reconciliation, finance_documents) or of this desk (`resolve_item`, `close_day`) or read, and
write every privileged action to the audit trail, refusals included. Lists are newest first,
a page at a time, cut with keyset pagination on (time, id) behind an opaque cursor, so rows
arriving meanwhile neither repeat nor skip. The payments ledger also streams as CSV, a batch
at a time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import tuple_
from sqlmodel import Session, col, func, select
from starlette.responses import Response, StreamingResponse

from admin import cursors
from admin import orders as desk
from admin.api import MAX_CENTS, Api, Context, DbId, Schema, UtcTime
from admin.csv_export import stream_csv
from admin.errors import ApiError
from conveyor import audit
from conveyor.db import Database
from conveyor.errors import DomainError, NotFound
from fulfilment import refunds as refund_service
from fulfilment.finance_documents import filename_of, render_finance_document, seller_name
from fulfilment.receiving import find_bin, find_warehouse
from fulfilment.reconciliation import close_day, differences, reconcile, resolve_item
from models.base import utcnow
from models.finance import (
    ClosedPeriod,
    DifferenceClass,
    Dispute,
    DocumentKind,
    FinanceDocument,
    ReconciliationItem,
    ReconciliationRun,
    Refund,
    RefundStatus,
)
from models.inventory import Location, LocationKind, Warehouse
from models.orders import Order, OrderLine
from models.payments import Payment, PaymentStatus
from models.staff import Permission

api = Api()
PAYMENT_TAGS, REFUND_TAGS, RECON_TAGS, DOC_TAGS = (["payments"], ["refunds"],
                                                   ["reconciliation"], ["documents"])
NUMBER = r"^[A-Za-z0-9-]{1,20}$"
SKU = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
WAREHOUSE_CODE = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,19}$"
BIN_CODE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$"
CSV_BATCH = 500
MAX_RUN_DAYS = 366
# A payment in one of these states has (or had) the amount authorised at the card issuer.
AUTHORISED_STATES = frozenset({PaymentStatus.AUTHORIZED, PaymentStatus.CAPTURED,
                               PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED,
                               PaymentStatus.DISPUTED})
REFUNDABLE_STATES = (PaymentStatus.CAPTURED, PaymentStatus.PARTIALLY_REFUNDED)


# -- Shared output models -------------------------------------------------------------------------


class BinRef(Schema):
    """A bin, by the warehouse's and the bin's codes."""

    warehouse: str = Field(pattern=WAREHOUSE_CODE)
    bin: str = Field(pattern=BIN_CODE)


class RefundLineOut(BaseModel):
    sku: str
    variant_id: int
    quantity: int
    restock_bin: BinRef | None = Field(description="Where the units went back; null: not "
                                                   "put back into stock.")


class RefundOut(BaseModel):
    id: uuid.UUID
    order_number: str
    payment_id: uuid.UUID
    amount_cents: int
    currency: str
    reason: str
    status: RefundStatus
    lines: list[RefundLineOut]
    requested_by: str
    requested_at: datetime
    decided_by: str = Field(description="Who approved or rejected it (refunds above "
                                        "REFUND_APPROVAL_CENTS); empty otherwise.")
    decided_at: datetime | None
    processed_at: datetime | None
    stripe_refund_id: str | None
    failure: str
    credit_note_id: uuid.UUID | None
    credit_note_number: str | None


class DisputeOut(BaseModel):
    id: str
    order_number: str | None
    payment_id: uuid.UUID | None
    charge_id: str
    amount_cents: int
    fee_cents: int
    currency: str
    status: str
    reason: str
    outcome: str = Field(description="won, lost, or empty while open")
    created_at: datetime
    updated_at: datetime


class DocumentOut(BaseModel):
    id: uuid.UUID
    kind: DocumentKind
    number: str
    order_number: str
    refund_id: uuid.UUID | None
    amount_cents: int
    tax_cents: int
    currency: str
    issued_at: datetime
    pdf_path: str = Field(description="The PDF on this API.")
    customer_url: str = Field(description="The customer's own link to the PDF.")


def _document_out(document: FinanceDocument, order_number: str, base_url: str) -> DocumentOut:
    return DocumentOut(
        id=document.id, kind=DocumentKind(document.kind), number=document.number,
        order_number=order_number, refund_id=document.refund_id,
        amount_cents=document.amount_cents, tax_cents=document.tax_cents,
        currency=document.currency, issued_at=document.issued_at,
        pdf_path=f"/api/documents/{document.id}.pdf",
        customer_url=f"{base_url.rstrip('/')}/documents/{document.access_token}")


def _dispute_out(dispute: Dispute, order_number: str | None) -> DisputeOut:
    return DisputeOut(order_number=order_number,
                      **dispute.model_dump(exclude={"order_id"}))


def _refund_outs(session: Session, refunds: Sequence[Refund],
                 numbers: dict[uuid.UUID, str]) -> list[RefundOut]:
    """Refunds as the API shows them: bins by their codes, with their credit notes."""
    location_ids = {int(line["restock_location_id"]) for refund in refunds
                    for line in refund.lines if line.get("restock_location_id")}
    bins: dict[int, BinRef] = {}
    if location_ids:
        for location, warehouse in session.exec(
                select(Location, Warehouse).join(Warehouse, col(Warehouse.id)
                                                 == Location.warehouse_id)
                .where(col(Location.id).in_(location_ids))):
            assert location.id is not None
            bins[location.id] = BinRef(warehouse=warehouse.code, bin=location.code)
    notes: dict[uuid.UUID, FinanceDocument] = {}
    if refunds:
        notes = {d.refund_id: d for d in session.exec(select(FinanceDocument).where(
            col(FinanceDocument.refund_id).in_([r.id for r in refunds]))) if d.refund_id}
    out = []
    for refund in refunds:
        note = notes.get(refund.id)
        lines = [RefundLineOut(
            sku=str(line.get("sku", "")), variant_id=int(line["variant_id"]),
            quantity=int(line["quantity"]),
            restock_bin=bins.get(int(line["restock_location_id"]))
            if line.get("restock_location_id") else None) for line in refund.lines]
        out.append(RefundOut(
            id=refund.id, order_number=numbers.get(refund.order_id, ""),
            payment_id=refund.payment_id, amount_cents=refund.amount_cents,
            currency=refund.currency, reason=refund.reason, status=RefundStatus(refund.status),
            lines=lines, requested_by=refund.requested_by, requested_at=refund.requested_at,
            decided_by=refund.approved_by, decided_at=refund.decided_at,
            processed_at=refund.processed_at, stripe_refund_id=refund.stripe_refund_id,
            failure=refund.failure, credit_note_id=note.id if note else None,
            credit_note_number=note.number if note else None))
    return out


def _order_numbers(session: Session, order_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    if not order_ids:
        return {}
    return {order_id: number for order_id, number in session.exec(
        select(Order.id, Order.number).where(col(Order.id).in_(order_ids)))}


# -- Payments ledger ----------------------------------------------------------------------------


class PaymentQuery(Schema):
    status: list[PaymentStatus] | None = Field(default=None, description="Any of these.")
    order: str | None = Field(default=None, pattern=NUMBER, description="Order number.")
    email: str | None = Field(default=None, max_length=254)
    created_from: UtcTime | None = None
    created_to: UtcTime | None = Field(default=None, description="Exclusive.")
    captured_from: UtcTime | None = None
    captured_to: UtcTime | None = Field(default=None, description="Exclusive.")
    has_refunds: bool | None = Field(default=None, description="With (or without) any refund.")
    has_disputes: bool | None = Field(default=None, description="With (or without) a dispute.")
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=400)
    format: Literal["json", "csv"] = "json"


class PaymentRow(BaseModel):
    payment_id: uuid.UUID
    order_number: str
    attempt: int
    pays_order: bool = Field(description="The attempt that paid the order.")
    status: PaymentStatus
    email: str
    currency: str
    authorized_cents: int = Field(description="The amount while authorised at the card issuer "
                                              "or after; 0 for attempts that never were.")
    captured_cents: int
    refunded_cents: int
    disputed_cents: int
    stripe_payment_intent_id: str | None
    stripe_charge_id: str | None
    refund_ids: list[uuid.UUID]
    dispute_ids: list[str]
    created_at: datetime
    captured_at: datetime | None


class PaymentPage(BaseModel):
    items: list[PaymentRow]
    next_cursor: str | None


CSV_COLUMNS = tuple(PaymentRow.model_fields)


def _payments_query(query: PaymentQuery) -> Any:
    statement = select(Payment, Order.number, Order.email, Order.payment_id).join(
        Order, col(Order.id) == Payment.order_id)
    if query.status:
        statement = statement.where(col(Payment.status).in_([s.value for s in query.status]))
    if query.order:
        statement = statement.where(Order.number == query.order.strip().upper())
    if query.email:
        statement = statement.where(func.lower(col(Order.email)) == query.email.strip().lower())
    for column, start, end in ((Payment.created_at, query.created_from, query.created_to),
                               (Payment.captured_at, query.captured_from, query.captured_to)):
        if start is not None:
            statement = statement.where(col(column) >= start)
        if end is not None:
            statement = statement.where(col(column) < end)
    for wanted, model in ((query.has_refunds, Refund), (query.has_disputes, Dispute)):
        if wanted is not None:
            exists = select(model.id).where(
                model.payment_id == Payment.id).exists()
            statement = statement.where(exists if wanted else ~exists)
    return statement


def _payment_rows(session: Session, rows: Sequence[tuple[Payment, str, str, uuid.UUID | None]]
                  ) -> list[PaymentRow]:
    ids = [payment.id for payment, *_ in rows]
    refund_ids: dict[uuid.UUID, list[uuid.UUID]] = {}
    dispute_ids: dict[uuid.UUID, list[str]] = {}
    if ids:
        for payment_id, refund_id in session.exec(
                select(Refund.payment_id, Refund.id).where(col(Refund.payment_id).in_(ids))
                .order_by(col(Refund.requested_at), col(Refund.id))):
            refund_ids.setdefault(payment_id, []).append(refund_id)
        for dispute_payment, dispute_id in session.exec(
                select(Dispute.payment_id, Dispute.id).where(col(Dispute.payment_id).in_(ids))
                .order_by(col(Dispute.created_at), col(Dispute.id))):
            if dispute_payment is not None:
                dispute_ids.setdefault(dispute_payment, []).append(dispute_id)
    return [PaymentRow(
        payment_id=p.id, order_number=number, attempt=p.attempt, pays_order=p.id == paying,
        status=PaymentStatus(p.status), email=email, currency=p.currency,
        authorized_cents=p.amount_cents if p.status in AUTHORISED_STATES else 0,
        captured_cents=p.captured_cents, refunded_cents=p.refunded_cents,
        disputed_cents=p.disputed_cents, stripe_payment_intent_id=p.stripe_payment_intent_id,
        stripe_charge_id=p.stripe_charge_id, refund_ids=refund_ids.get(p.id, []),
        dispute_ids=dispute_ids.get(p.id, []), created_at=p.created_at,
        captured_at=p.captured_at) for p, number, email, paying in rows]


def _payments_page(session: Session, query: PaymentQuery, *, limit: int,
                   cursor: str | None) -> tuple[list[PaymentRow], str | None]:
    statement = _payments_query(query)
    if cursor:
        moment, key = cursors.time_cursor(cursor)
        statement = statement.where(tuple_(col(Payment.created_at), col(Payment.id))
                                    < tuple_(moment, cursors.uuid_key(key)))
    rows = list(session.exec(statement.order_by(col(Payment.created_at).desc(),
                                                col(Payment.id).desc()).limit(limit + 1)))
    more = len(rows) > limit
    page = _payment_rows(session, rows[:limit])
    last = page[-1] if page else None
    return page, (cursors.encode_cursor(last.created_at, str(last.payment_id))
                  if more and last else None)


def _payments_csv(db: Database, query: PaymentQuery) -> Iterator[str]:
    """Every matching payment as CSV, read a batch at a time: memory stays flat."""

    def read_page(cursor: str | None) -> tuple[list[list[Any]], str | None]:
        with db.read_session() as session:
            rows, cursor = _payments_page(session, query, limit=CSV_BATCH, cursor=cursor)
        table = []
        for row in rows:
            values = row.model_dump()
            values["refund_ids"] = " ".join(str(i) for i in row.refund_ids)
            values["dispute_ids"] = " ".join(row.dispute_ids)
            table.append([values[name] for name in CSV_COLUMNS])
        return table, cursor

    return stream_csv(CSV_COLUMNS, read_page)


@api.route("GET", "/api/payments", access=Permission.PAYMENTS_READ, query=PaymentQuery,
           response=PaymentPage, csv=True, tags=PAYMENT_TAGS,
           summary="The payments ledger: every payment attempt with what was authorised, "
           "captured, refunded and disputed, its Stripe ids, refunds and disputes, newest "
           "first (CSV with Accept: text/csv or format=csv)")
def payments_ledger(ctx: Context, query: PaymentQuery) -> PaymentPage | Response:
    if query.format == "csv" or "text/csv" in ctx.request.headers.get("accept", ""):
        if query.cursor:
            cursors.time_cursor(query.cursor)  # a bad cursor is refused before the stream starts
        with ctx.unit_of_work() as uow:
            audit.record(uow.session, ctx.actor, "payments.export", target_type="payments",
                         after={"filter": query.model_dump(mode="json",
                                                           exclude={"cursor", "limit"})})
        stamp = utcnow().strftime("%Y%m%d-%H%M%S")
        return StreamingResponse(
            _payments_csv(ctx.db, query), media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="payments-{stamp}.csv"'})
    with ctx.db.read_session() as session:
        rows, cursor = _payments_page(session, query, limit=query.limit, cursor=query.cursor)
    return PaymentPage(items=rows, next_cursor=cursor)


class OrderLedger(BaseModel):
    number: str
    order_status: str
    currency: str
    total_cents: int
    captured_cents: int
    refunded_cents: int
    disputed_cents: int
    refundable_cents: int = Field(description="What can still be refunded: captured, less "
                                              "refunded and less refunds under way.")
    payments: list[PaymentRow]
    refunds: list[RefundOut]
    disputes: list[DisputeOut]
    documents: list[DocumentOut]


@api.route("GET", "/api/orders/{number}/ledger", access=Permission.PAYMENTS_READ,
           response=OrderLedger, tags=PAYMENT_TAGS,
           summary="One order's money: its payments, every refund and dispute, and its "
           "invoice and credit notes")
def order_ledger(ctx: Context, number: str) -> OrderLedger:
    with ctx.db.read_session() as session:
        order = desk.order_by_number(session, number)
        payments = list(session.exec(select(Payment).where(Payment.order_id == order.id)
                                     .order_by(col(Payment.attempt))))
        rows = _payment_rows(session, [(p, order.number, order.email, order.payment_id)
                                       for p in payments])
        refunds = list(session.exec(select(Refund).where(Refund.order_id == order.id)
                                    .order_by(col(Refund.requested_at), col(Refund.id))))
        disputes = list(session.exec(select(Dispute).where(Dispute.order_id == order.id)
                                     .order_by(col(Dispute.created_at), col(Dispute.id))))
        documents = list(session.exec(select(FinanceDocument).where(
            FinanceDocument.order_id == order.id).order_by(col(FinanceDocument.issued_at),
                                                           col(FinanceDocument.id))))
        paying = next((p for p in payments if p.id == order.payment_id), None)
        refundable = (refund_service.refundable_cents(session, paying)
                      if paying is not None and paying.status in REFUNDABLE_STATES else 0)
        refund_outs = _refund_outs(session, refunds, {order.id: order.number})
    return OrderLedger(
        number=order.number, order_status=order.status, currency=order.currency,
        total_cents=order.total_cents,
        captured_cents=sum(p.captured_cents for p in payments),
        refunded_cents=sum(p.refunded_cents for p in payments),
        disputed_cents=sum(p.disputed_cents for p in payments),
        refundable_cents=max(refundable, 0), payments=rows, refunds=refund_outs,
        disputes=[_dispute_out(d, order.number) for d in disputes],
        documents=[_document_out(d, order.number, ctx.settings.base_url) for d in documents])


# -- Refunds ------------------------------------------------------------------------------------


class RefundLineIn(Schema):
    model_config = ConfigDict(str_strip_whitespace=True)

    sku: str = Field(pattern=SKU)
    quantity: int = Field(ge=1, le=10_000)
    restock_bin: BinRef | None = Field(default=None, description="Put the units back into "
                                                                 "this bin; omit for units "
                                                                 "not coming back.")


class RefundRequest(Schema):
    model_config = ConfigDict(str_strip_whitespace=True)  # blanks are no reason

    amount_cents: int | None = Field(default=None, ge=1, le=MAX_CENTS, description=(
        "Omitted: the lines' value (VAT included), or without lines all that is left."))
    lines: list[RefundLineIn] = Field(default_factory=list, max_length=200)
    reason: str = Field(min_length=3, max_length=500)

    @model_validator(mode="after")
    def _each_sku_once(self) -> RefundRequest:
        skus = [line.sku.upper() for line in self.lines]
        if len(skus) != len(set(skus)):
            raise ValueError("name each SKU once (with its whole quantity)")
        return self


class RefundQuery(Schema):
    status: list[RefundStatus] | None = None
    order: str | None = Field(default=None, pattern=NUMBER)
    requested_from: UtcTime | None = None
    requested_to: UtcTime | None = Field(default=None, description="Exclusive.")
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=400)


class RefundPage(BaseModel):
    items: list[RefundOut]
    next_cursor: str | None


class RejectRequest(Schema):
    model_config = ConfigDict(str_strip_whitespace=True)

    reason: str = Field(min_length=3, max_length=500)


def _field_error(loc: list[str | int], message: str, kind: str) -> dict[str, Any]:
    return {"loc": [str(part) for part in loc], "message": message, "type": kind}


def _refund_lines(session: Session, order: Order, wanted: list[RefundLineIn]
                  ) -> list[refund_service.RefundLine]:
    """The request's lines by variant and bin; 422 naming each SKU or bin that is not there."""
    in_order = {line.sku.upper(): line for line in session.exec(
        select(OrderLine).where(OrderLine.order_id == order.id))}
    problems: list[dict[str, Any]] = []
    lines = []
    for index, line in enumerate(wanted):
        ordered = in_order.get(line.sku.upper())
        if ordered is None:
            problems.append(_field_error(["body", "lines", index, "sku"],
                                         f"{line.sku} is not in order {order.number}",
                                         "not_in_order"))
            continue
        location_id = None
        if line.restock_bin is not None:
            warehouse = find_warehouse(session, line.restock_bin.warehouse)
            location = (find_bin(session, warehouse.id, line.restock_bin.bin)
                        if warehouse is not None and warehouse.id is not None else None)
            if location is None or location.kind != LocationKind.BIN:
                problems.append(_field_error(
                    ["body", "lines", index, "restock_bin"],
                    f"no bin {line.restock_bin.bin} in warehouse {line.restock_bin.warehouse}",
                    "no_such_bin"))
                continue
            location_id = location.id
        lines.append(refund_service.RefundLine(ordered.variant_id, line.quantity, location_id))
    if problems:
        raise ApiError(422, "invalid_input", "Some fields are not valid.", {"fields": problems})
    return lines


def _audit_refusal(ctx: Context, action: str, target_type: str, target_id: str,
                   exc: DomainError, outcome: str = "refused") -> None:
    with ctx.unit_of_work() as uow:
        audit.record(uow.session, ctx.actor, action, outcome=outcome, target_type=target_type,
                     target_id=target_id, after={"error": exc.code, "message": exc.message})


@api.route("POST", "/api/orders/{number}/refunds", access=Permission.PAYMENTS_REFUND,
           body=RefundRequest, response=RefundOut, status_code=202, tags=REFUND_TAGS,
           errors=(409,),
           summary="Refund an order: an amount, or lines (optionally back into a bin), or all "
           "that is left. Queued for Stripe at once, or above REFUND_APPROVAL_CENTS waiting "
           "for a second finance user")
def request_refund(ctx: Context, number: str, body: RefundRequest) -> RefundOut:
    try:
        with ctx.unit_of_work() as uow:
            order = desk.order_by_number(uow.session, number)
            lines = _refund_lines(uow.session, order, body.lines)
            refund = refund_service.request_refund(
                uow=uow, order_id=order.id, amount_cents=body.amount_cents, lines=lines,
                reason=body.reason, requested_by=ctx.staff.email, settings=ctx.settings)
            [out] = _refund_outs(uow.session, [refund], {order.id: order.number})
            audit.record(uow.session, ctx.actor, "refund.request", target_type="refund",
                         target_id=str(refund.id),
                         after={"order": order.number, "amount_cents": refund.amount_cents,
                                "status": refund.status, "reason": refund.reason,
                                "lines": [line.model_dump(mode="json") for line in out.lines]})
    except (refund_service.RefundRefused, refund_service.PeriodClosed) as exc:
        _audit_refusal(ctx, "refund.request", "order", number.strip().upper(), exc)
        raise
    return out


def _refunds_statement(query: RefundQuery) -> Any:
    statement = select(Refund)
    if query.status:
        statement = statement.where(col(Refund.status).in_([s.value for s in query.status]))
    if query.order:
        statement = statement.join(Order, col(Order.id) == Refund.order_id).where(
            Order.number == query.order.strip().upper())
    if query.requested_from is not None:
        statement = statement.where(col(Refund.requested_at) >= query.requested_from)
    if query.requested_to is not None:
        statement = statement.where(col(Refund.requested_at) < query.requested_to)
    if query.cursor:
        moment, key = cursors.time_cursor(query.cursor)
        statement = statement.where(tuple_(col(Refund.requested_at), col(Refund.id))
                                    < tuple_(moment, cursors.uuid_key(key)))
    return statement.order_by(col(Refund.requested_at).desc(), col(Refund.id).desc())


@api.route("GET", "/api/refunds", access=Permission.PAYMENTS_READ, query=RefundQuery,
           response=RefundPage, tags=REFUND_TAGS,
           summary="Refunds, newest first, by status (e.g. pending_approval), order and time")
def list_refunds(ctx: Context, query: RefundQuery) -> RefundPage:
    with ctx.db.read_session() as session:
        refunds = list(session.exec(_refunds_statement(query).limit(query.limit + 1)))
        more = len(refunds) > query.limit
        refunds = refunds[:query.limit]
        items = _refund_outs(session, refunds, _order_numbers(
            session, {r.order_id for r in refunds}))
    last = refunds[-1] if refunds else None
    return RefundPage(items=items, next_cursor=cursors.encode_cursor(last.requested_at, last.id)
                      if more and last else None)


@api.route("GET", "/api/refunds/{refund_id}", access=Permission.PAYMENTS_READ,
           response=RefundOut, tags=REFUND_TAGS, summary="One refund")
def get_refund(ctx: Context, refund_id: uuid.UUID) -> RefundOut:
    with ctx.db.read_session() as session:
        refund = session.get(Refund, refund_id)
        if refund is None:
            raise NotFound("No such refund.")
        [out] = _refund_outs(session, [refund], _order_numbers(session, {refund.order_id}))
    return out


def _decide_refund(ctx: Context, refund_id: uuid.UUID, *, approve: bool,
                   reason: str = "") -> RefundOut:
    action = "refund.approve" if approve else "refund.reject"
    try:
        with ctx.unit_of_work() as uow:
            refund = refund_service.decide_refund(uow=uow, refund_id=refund_id,
                                                  approve=approve, decided_by=ctx.staff.email)
            [out] = _refund_outs(uow.session, [refund],
                                 _order_numbers(uow.session, {refund.order_id}))
            audit.record(uow.session, ctx.actor, action, target_type="refund",
                         target_id=str(refund.id),
                         before={"status": RefundStatus.PENDING_APPROVAL},
                         after={"status": refund.status, "amount_cents": refund.amount_cents,
                                "order": out.order_number, "requested_by": refund.requested_by,
                                "reason": reason})
    except refund_service.RefundRefused as exc:
        with ctx.db.read_session() as session:
            asked = session.get(Refund, refund_id)
        own = asked is not None and asked.requested_by == ctx.staff.email
        _audit_refusal(ctx, action, "refund", str(refund_id), exc,
                       outcome="denied" if own else "refused")
        raise
    return out


@api.route("POST", "/api/refunds/{refund_id}/approve", access=Permission.PAYMENTS_REFUND,
           response=RefundOut, tags=REFUND_TAGS, errors=(409,),
           summary="Approve a refund waiting for a second person (never by who asked for it); "
           "it is then sent to Stripe")
def approve_refund(ctx: Context, refund_id: uuid.UUID) -> RefundOut:
    return _decide_refund(ctx, refund_id, approve=True)


@api.route("POST", "/api/refunds/{refund_id}/reject", access=Permission.PAYMENTS_REFUND,
           body=RejectRequest, response=RefundOut, tags=REFUND_TAGS, errors=(409,),
           summary="Reject a refund waiting for a second person (never by who asked for it)")
def reject_refund(ctx: Context, refund_id: uuid.UUID, body: RejectRequest) -> RefundOut:
    return _decide_refund(ctx, refund_id, approve=False, reason=body.reason)


# -- Disputes -----------------------------------------------------------------------------------


class DisputeQuery(Schema):
    status: list[Annotated[str, Field(pattern=r"^[a-z_]{1,40}$")]] | None = Field(
        default=None, description="Stripe's statuses, e.g. needs_response, under_review, won.")
    open: bool | None = Field(default=None, description="Without (true) or with an outcome.")
    order: str | None = Field(default=None, pattern=NUMBER)
    created_from: UtcTime | None = None
    created_to: UtcTime | None = Field(default=None, description="Exclusive.")
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=400)


class DisputePage(BaseModel):
    items: list[DisputeOut]
    next_cursor: str | None


@api.route("GET", "/api/disputes", access=Permission.PAYMENTS_READ, query=DisputeQuery,
           response=DisputePage, tags=PAYMENT_TAGS,
           summary="Disputes (chargebacks), newest first, by status, outcome, order and time")
def list_disputes(ctx: Context, query: DisputeQuery) -> DisputePage:
    statement = select(Dispute, Order.number).outerjoin(Order, col(Order.id)
                                                        == Dispute.order_id)
    if query.status:
        statement = statement.where(col(Dispute.status).in_(query.status))
    if query.open is not None:
        statement = statement.where((Dispute.outcome == "") if query.open
                                    else (Dispute.outcome != ""))
    if query.order:
        statement = statement.where(Order.number == query.order.strip().upper())
    if query.created_from is not None:
        statement = statement.where(col(Dispute.created_at) >= query.created_from)
    if query.created_to is not None:
        statement = statement.where(col(Dispute.created_at) < query.created_to)
    if query.cursor:
        moment, key = cursors.time_cursor(query.cursor)
        statement = statement.where(tuple_(col(Dispute.created_at), col(Dispute.id))
                                    < tuple_(moment, key))
    with ctx.db.read_session() as session:
        rows = list(session.exec(statement.order_by(col(Dispute.created_at).desc(),
                                                    col(Dispute.id).desc())
                                 .limit(query.limit + 1)))
    more = len(rows) > query.limit
    rows = rows[:query.limit]
    last = rows[-1][0] if rows else None
    return DisputePage(items=[_dispute_out(d, number) for d, number in rows],
                       next_cursor=cursors.encode_cursor(last.created_at, last.id)
                       if more and last else None)


# -- Reconciliation -----------------------------------------------------------------------------


class RunRequest(Schema):
    start: date = Field(description="First day (UTC).")
    end: date = Field(description="Last day (UTC), inclusive.")

    @model_validator(mode="after")
    def _a_sane_period(self) -> RunRequest:
        if self.end < self.start:
            raise ValueError("end must not be before start")
        if self.end >= date.max:
            raise ValueError("end must be before 9999-12-31")
        if (self.end - self.start).days >= MAX_RUN_DAYS:
            raise ValueError(f"a run covers at most {MAX_RUN_DAYS} days")
        return self


class ClassTotal(BaseModel):
    items: int
    cents: int


class RunSummary(BaseModel):
    id: int
    period_start: date
    period_end: date
    created_by: str
    created_at: datetime
    matched: int = Field(description="Stripe transactions matched to a payment or refund.")
    totals: dict[str, ClassTotal] = Field(description="Items and cents per difference class.")
    differences: int = Field(description="Items other than fee_recorded (fees are for the "
                                         "books, not differences).")
    unresolved_differences: int


class RunPage(BaseModel):
    items: list[RunSummary]
    next_cursor: str | None


class ItemOut(BaseModel):
    id: int
    run_id: int
    difference: DifferenceClass
    balance_transaction_id: str | None
    payout_id: str | None
    payment_id: uuid.UUID | None
    refund_id: uuid.UUID | None
    dispute_id: str | None
    order_number: str
    expected_cents: int | None
    actual_cents: int | None
    currency: str
    detail: str
    resolved_by: str
    resolved_at: datetime | None
    resolution_note: str


class RunDetail(RunSummary):
    items: list[ItemOut] = Field(description="A page of the run's items, oldest first.")
    next_cursor: str | None


class RunQuery(Schema):
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=400)


class RunItemsQuery(Schema):
    difference: list[DifferenceClass] | None = Field(default=None, description="Any of these.")
    resolved: bool | None = None
    limit: int = Field(default=100, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=400)


class ResolveRequest(Schema):
    model_config = ConfigDict(str_strip_whitespace=True)

    note: str = Field(min_length=3, max_length=1000, description="What was found and done.")


def _unresolved_counts(session: Session, run_ids: list[int]) -> dict[int, int]:
    if not run_ids:
        return {}
    return {run_id: int(count) for run_id, count in session.exec(
        select(ReconciliationItem.run_id, func.count()).where(
            col(ReconciliationItem.run_id).in_(run_ids),
            ReconciliationItem.difference != DifferenceClass.FEE_RECORDED,
            col(ReconciliationItem.resolved_at).is_(None))
        .group_by(col(ReconciliationItem.run_id)))}


def _run_summary(run: ReconciliationRun, unresolved: int) -> dict[str, Any]:
    assert run.id is not None
    totals = {kind.value: ClassTotal(items=0, cents=0) for kind in DifferenceClass}
    for kind, value in (run.totals or {}).items():
        totals[str(kind)] = ClassTotal(items=int(value.get("items", 0)),
                                       cents=int(value.get("cents", 0)))
    return {"id": run.id, "period_start": run.period_start, "period_end": run.period_end,
            "created_by": run.created_by, "created_at": run.created_at, "matched": run.matched,
            "totals": totals, "differences": differences(run),
            "unresolved_differences": unresolved}


@api.route("POST", "/api/reconciliation/runs", access=Permission.FINANCE_MANAGE,
           body=RunRequest, response=RunSummary, status_code=201, tags=RECON_TAGS,
           summary="Reconcile the days start..end (inclusive) against what `conveyor stripe "
           "sync` copied from Stripe; the run and its items are stored")
def start_reconciliation(ctx: Context, body: RunRequest) -> RunSummary:
    with ctx.unit_of_work() as uow:
        run = reconcile(uow=uow, start=body.start, end=body.end, created_by=ctx.staff.email)
        summary = RunSummary(**_run_summary(run, differences(run)))
        audit.record(uow.session, ctx.actor, "reconciliation.run",
                     target_type="reconciliation_run", target_id=str(run.id),
                     after={"start": body.start, "end": body.end, "matched": run.matched,
                            "totals": run.totals})
    return summary


@api.route("GET", "/api/reconciliation/runs", access=Permission.FINANCE_MANAGE,
           query=RunQuery, response=RunPage, tags=RECON_TAGS,
           summary="Reconciliation runs, newest first, with totals per difference class")
def list_reconciliation_runs(ctx: Context, query: RunQuery) -> RunPage:
    statement = select(ReconciliationRun)
    if query.cursor:
        statement = statement.where(col(ReconciliationRun.id) < cursors.int_cursor(query.cursor))
    with ctx.db.read_session() as session:
        runs = list(session.exec(statement.order_by(col(ReconciliationRun.id).desc())
                                 .limit(query.limit + 1)))
        more = len(runs) > query.limit
        runs = runs[:query.limit]
        unresolved = _unresolved_counts(session, [r.id for r in runs if r.id is not None])
    items = [RunSummary(**_run_summary(r, unresolved.get(r.id or 0, 0))) for r in runs]
    return RunPage(items=items, next_cursor=cursors.encode_cursor(items[-1].id, "run")
                   if more and items else None)


@api.route("GET", "/api/reconciliation/runs/{run_id}", access=Permission.FINANCE_MANAGE,
           query=RunItemsQuery, response=RunDetail, tags=RECON_TAGS,
           summary="One run: totals per class and its items a page at a time, by difference "
           "class and resolved or not")
def get_reconciliation_run(ctx: Context, run_id: DbId, query: RunItemsQuery) -> RunDetail:
    statement = select(ReconciliationItem).where(ReconciliationItem.run_id == run_id)
    if query.difference:
        statement = statement.where(col(ReconciliationItem.difference).in_(
            [d.value for d in query.difference]))
    if query.resolved is not None:
        resolved_at = col(ReconciliationItem.resolved_at)
        statement = statement.where(resolved_at.is_not(None) if query.resolved
                                    else resolved_at.is_(None))
    if query.cursor:
        statement = statement.where(col(ReconciliationItem.id) > cursors.int_cursor(query.cursor))
    with ctx.db.read_session() as session:
        run = session.get(ReconciliationRun, run_id)
        if run is None:
            raise NotFound("No such reconciliation run.")
        items = list(session.exec(statement.order_by(col(ReconciliationItem.id))
                                  .limit(query.limit + 1)))
        unresolved = _unresolved_counts(session, [run_id]).get(run_id, 0)
    more = len(items) > query.limit
    items = items[:query.limit]
    last_id = items[-1].id if items else None
    return RunDetail(**_run_summary(run, unresolved),
                     items=[ItemOut.model_validate(i, from_attributes=True) for i in items],
                     next_cursor=cursors.encode_cursor(last_id, "item")
                     if more and last_id is not None else None)


@api.route("POST", "/api/reconciliation/items/{item_id}/resolve",
           access=Permission.FINANCE_MANAGE, body=ResolveRequest, response=ItemOut,
           tags=RECON_TAGS, errors=(409,),
           summary="Resolve a reconciliation item with a note saying what was found and done")
def resolve_reconciliation_item(ctx: Context, item_id: DbId, body: ResolveRequest) -> ItemOut:
    with ctx.unit_of_work() as uow:
        item = resolve_item(uow=uow, item_id=item_id, note=body.note,
                            resolved_by=ctx.staff.email)
        out = ItemOut.model_validate(item, from_attributes=True)
        audit.record(uow.session, ctx.actor, "reconciliation.resolve",
                     target_type="reconciliation_item", target_id=str(item_id),
                     before={"resolved": False},
                     after={"run_id": item.run_id, "difference": item.difference,
                            "note": body.note})
    return out


# -- Closed periods -----------------------------------------------------------------------------


class CloseRequest(Schema):
    model_config = ConfigDict(str_strip_whitespace=True)

    note: str = Field(default="", max_length=500)


class PeriodOut(BaseModel):
    day: date
    closed_by: str
    closed_at: datetime
    note: str


class PeriodCloseResult(PeriodOut):
    reconciliation_run_id: int | None = Field(description="The newest run covering the day.")
    unresolved_differences: int = Field(description="Unresolved items of that run (fees "
                                                    "aside) dated on this day.")
    unresolved_item_ids: list[int] = Field(description="The first 100 of them.")
    warning: str | None = Field(description="Why the books of this day may not be right.")


class PeriodQuery(Schema):
    day_from: date | None = None
    day_to: date | None = Field(default=None, description="Inclusive.")
    limit: int = Field(default=100, ge=1, le=366)
    cursor: str | None = Field(default=None, max_length=400)


class PeriodPage(BaseModel):
    items: list[PeriodOut]
    next_cursor: str | None


@api.route("POST", "/api/periods/{day}/close", access=Permission.FINANCE_MANAGE,
           body=CloseRequest, response=PeriodCloseResult, status_code=201, tags=RECON_TAGS,
           errors=(409,),
           summary="Close a day (UTC) that is over: nothing that changes its figures may be "
           "recorded afterwards. Allowed with unresolved differences, which the answer names")
def close_period(ctx: Context, day: date, body: CloseRequest) -> PeriodCloseResult:
    with ctx.unit_of_work() as uow:
        period, run_id, unresolved = close_day(uow=uow, day=day, note=body.note,
                                               closed_by=ctx.staff.email)
        if run_id is None:
            warning: str | None = ("No reconciliation run covers this day: it was closed "
                                   "without being reconciled.")
        elif unresolved:
            warning = (f"{len(unresolved)} unresolved difference(s) of reconciliation run "
                       f"{run_id} fall on this day; it was closed all the same.")
        else:
            warning = None
        result = PeriodCloseResult(
            day=period.day, closed_by=period.closed_by, closed_at=period.closed_at,
            note=period.note, reconciliation_run_id=run_id,
            unresolved_differences=len(unresolved), unresolved_item_ids=unresolved[:100],
            warning=warning)
        audit.record(uow.session, ctx.actor, "period.close", target_type="closed_period",
                     target_id=day.isoformat(),
                     after={"note": body.note, "reconciliation_run_id": run_id,
                            "unresolved_differences": len(unresolved)})
    return result


@api.route("GET", "/api/periods", access=Permission.FINANCE_MANAGE, query=PeriodQuery,
           response=PeriodPage, tags=RECON_TAGS, summary="Closed days, newest first")
def list_periods(ctx: Context, query: PeriodQuery) -> PeriodPage:
    statement = select(ClosedPeriod)
    if query.day_from is not None:
        statement = statement.where(col(ClosedPeriod.day) >= query.day_from)
    if query.day_to is not None:
        statement = statement.where(col(ClosedPeriod.day) <= query.day_to)
    if query.cursor:
        value, _ = cursors.decode_cursor(query.cursor)
        try:
            before = date.fromisoformat(value)
        except (TypeError, ValueError) as exc:
            raise cursors.invalid(exc) from None
        statement = statement.where(col(ClosedPeriod.day) < before)
    with ctx.db.read_session() as session:
        rows = list(session.exec(statement.order_by(col(ClosedPeriod.day).desc())
                                 .limit(query.limit + 1)))
    more = len(rows) > query.limit
    rows = rows[:query.limit]
    return PeriodPage(items=[PeriodOut.model_validate(r, from_attributes=True) for r in rows],
                      next_cursor=cursors.encode_cursor(rows[-1].day, "day") if more and rows
                      else None)


# -- Documents ----------------------------------------------------------------------------------


class DocumentQuery(Schema):
    order: str | None = Field(default=None, pattern=NUMBER, description="Order number.")
    kind: DocumentKind | None = None
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=400)


class DocumentPage(BaseModel):
    items: list[DocumentOut]
    next_cursor: str | None


@api.route("GET", "/api/documents", access=Permission.PAYMENTS_READ, query=DocumentQuery,
           response=DocumentPage, tags=DOC_TAGS,
           summary="Invoices and credit notes, newest first, by order and kind")
def list_documents(ctx: Context, query: DocumentQuery) -> DocumentPage:
    statement = select(FinanceDocument, Order.number).join(
        Order, col(Order.id) == FinanceDocument.order_id)
    if query.order:
        statement = statement.where(Order.number == query.order.strip().upper())
    if query.kind is not None:
        statement = statement.where(FinanceDocument.kind == query.kind.value)
    if query.cursor:
        moment, key = cursors.time_cursor(query.cursor)
        statement = statement.where(
            tuple_(col(FinanceDocument.issued_at), col(FinanceDocument.id))
            < tuple_(moment, cursors.uuid_key(key)))
    with ctx.db.read_session() as session:
        rows = list(session.exec(statement.order_by(col(FinanceDocument.issued_at).desc(),
                                                    col(FinanceDocument.id).desc())
                                 .limit(query.limit + 1)))
    more = len(rows) > query.limit
    rows = rows[:query.limit]
    last = rows[-1][0] if rows else None
    return DocumentPage(
        items=[_document_out(d, number, ctx.settings.base_url) for d, number in rows],
        next_cursor=cursors.encode_cursor(last.issued_at, str(last.id)) if more and last else None)


@api.route("GET", "/api/documents/{document_id}.pdf", access=Permission.PAYMENTS_READ,
           tags=DOC_TAGS, summary="An invoice or credit note as PDF, as issued")
def document_pdf(ctx: Context, document_id: uuid.UUID) -> Response:
    with ctx.db.read_session() as session:
        document = session.get(FinanceDocument, document_id)
    if document is None:
        raise NotFound("No such document.")
    pdf = render_finance_document(document, seller=seller_name(ctx.settings.mail_from))
    return Response(pdf, media_type="application/pdf", headers={
        "content-disposition": f'inline; filename="{filename_of(document)}"'})

