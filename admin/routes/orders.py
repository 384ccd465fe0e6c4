"""The order desk: list and export orders, read one in full, add notes, cancel."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response, StreamingResponse

from admin import orders as desk
from admin.api import MAX_CENTS, Api, Context, Schema, UtcTime
from conveyor import audit
from conveyor.templating import create_environment
from fulfilment.cancellation import cancel_order
from models.base import utcnow
from models.orders import Order, OrderEvent, OrderStatus, note
from models.payments import Payment
from models.staff import Permission

api = Api()
TAGS = ["orders"]
NUMBER = r"^[A-Za-z0-9-]{1,20}$"
_emails = create_environment()


class OrderQuery(Schema):
    status: list[OrderStatus] | None = Field(default=None, description="Any of these states.")
    created_from: UtcTime | None = None
    created_to: UtcTime | None = None
    email: str | None = Field(default=None, max_length=254)
    number: str | None = Field(default=None, pattern=NUMBER)
    total_min_cents: int | None = Field(default=None, ge=0, le=MAX_CENTS)
    total_max_cents: int | None = Field(default=None, ge=0, le=MAX_CENTS)
    sort: Literal["created_at", "-created_at", "total_cents", "-total_cents", "number",
                  "-number"] = "-created_at"
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=400)
    format: Literal["json", "csv"] = "json"

    def to_filter(self) -> desk.OrderFilter:
        return desk.OrderFilter(
            statuses=[s.value for s in self.status] if self.status else None,
            created_from=self.created_from, created_to=self.created_to, email=self.email,
            number=self.number, total_min_cents=self.total_min_cents,
            total_max_cents=self.total_max_cents, sort=self.sort)


class OrderSummary(BaseModel):
    number: str
    status: str
    created_at: datetime
    authorized_at: datetime | None
    email: str
    full_name: str
    country: str
    total_cents: int
    currency: str


class OrderPage(BaseModel):
    items: list[OrderSummary]
    next_cursor: str | None


class Line(BaseModel):
    variant_id: int
    sku: str
    product_name: str
    variant_name: str
    unit_price_cents: int
    quantity: int
    line_total_cents: int
    discount_cents: int = Field(description="The line's share of the discount code (net).")


class Customer(BaseModel):
    email: str
    full_name: str
    phone: str


class Address(BaseModel):
    full_name: str
    address: str
    city: str
    postal_code: str
    country: str


class Totals(BaseModel):
    currency: str
    subtotal_cents: int
    discount_code: str | None
    discount_cents: int = Field(description="Taken off the subtotal by the discount code.")
    shipping_cents: int
    tax_rate_bps: int
    tax_cents: int
    total_cents: int


class PaymentState(BaseModel):
    status: str
    amount_cents: int
    captured_cents: int
    refunded_cents: int
    card_brand: str
    card_last4: str
    attempts: int


class StockLine(BaseModel):
    variant_id: int
    sku: str
    reserved_for_order: int
    reservation_status: str | None
    reservation_expires_at: datetime | None
    on_hand: int
    allocated: int
    reserved: int
    available: int


class HistoryEntry(BaseModel):
    at: datetime
    from_status: str | None
    to_status: str | None
    actor: str
    note: str
    public: bool


class ScreeningOut(BaseModel):
    decision: str
    score: int
    rule_set_version: int
    signals: list[dict[str, Any]]
    quality_issues: list[dict[str, Any]]
    screened_at: datetime
    decided_by: str
    decided_at: datetime | None
    decision_reason: str


class AllocationOut(BaseModel):
    sku: str
    variant_id: int
    warehouse: str
    bin: str
    quantity: int
    status: str


class OrderDetail(BaseModel):
    number: str
    status: str
    created_at: datetime
    updated_at: datetime
    authorized_at: datetime | None
    reservation_expires_at: datetime | None
    shipping_method: str
    customer: Customer
    shipping_address: Address
    totals: Totals
    lines: list[Line]
    payment: PaymentState | None
    stock: list[StockLine]
    allocations: list[AllocationOut]
    screening: ScreeningOut | None
    history: list[HistoryEntry]


class PaymentRecord(BaseModel):
    id: uuid.UUID
    attempt: int
    status: str
    amount_cents: int
    currency: str
    captured_cents: int
    refunded_cents: int
    stripe_payment_intent_id: str | None
    card_brand: str
    card_last4: str
    failure_code: str
    failure_message: str
    created_at: datetime
    updated_at: datetime
    pays_order: bool


class PaymentList(BaseModel):
    items: list[PaymentRecord]


class NoteRequest(Schema):
    model_config = ConfigDict(str_strip_whitespace=True)  # a blank note is no note

    text: str = Field(min_length=1, max_length=4000)


class CancelRequest(Schema):
    model_config = ConfigDict(str_strip_whitespace=True)  # blanks are no reason

    reason: str = Field(min_length=3, max_length=500)


class CancelResult(BaseModel):
    number: str
    previous_status: str
    status: str
    units_released: int
    voids_queued: int
    refund_required: bool


def _summary(order: Order) -> OrderSummary:
    return OrderSummary.model_validate(order, from_attributes=True)


@api.route("GET", "/api/orders", access=Permission.ORDERS_READ, query=OrderQuery,
           response=OrderPage, csv=True, tags=TAGS,
           summary="Orders, filtered and sorted, a page at a time (CSV with Accept: text/csv "
           "or format=csv)")
def list_orders(ctx: Context, query: OrderQuery) -> OrderPage | Response:
    wants_csv = query.format == "csv" or "text/csv" in ctx.request.headers.get("accept", "")
    if wants_csv:
        ctx.require(Permission.ORDERS_EXPORT)
        with ctx.unit_of_work() as uow:
            audit.record(uow.session, ctx.actor, "orders.export", target_type="orders",
                         after={"filter": query.model_dump(exclude={"cursor", "limit"})})
        stamp = utcnow().strftime("%Y%m%d-%H%M%S")
        return StreamingResponse(
            desk.export_csv(ctx.db, query.to_filter()), media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="orders-{stamp}.csv"'})
    with ctx.db.read_session() as session:
        orders, cursor = desk.list_orders(session, query.to_filter(), limit=query.limit,
                                          cursor=query.cursor)
    return OrderPage(items=[_summary(o) for o in orders], next_cursor=cursor)


@api.route("GET", "/api/orders/{number}", access=Permission.ORDERS_READ, response=OrderDetail,
           tags=TAGS, summary="One order: lines, customer, address, payment and stock state, "
           "and its full history")
def get_order(ctx: Context, number: str) -> OrderDetail:
    with ctx.db.read_session() as session:
        f = desk.order_file(session, number)
    o = f.order
    paying = next((p for p in f.payments if p.id == o.payment_id), None)
    latest = paying or (f.payments[-1] if f.payments else None)
    held = {r.variant_id: r for r in f.reservations}
    skus = {line.variant_id: line.sku for line in f.lines}
    return OrderDetail(
        number=o.number, status=o.status, created_at=o.created_at, updated_at=o.updated_at,
        authorized_at=o.authorized_at, reservation_expires_at=o.expires_at,
        shipping_method=o.shipping_method_name,
        customer=Customer.model_validate(o, from_attributes=True),
        shipping_address=Address.model_validate(o, from_attributes=True),
        totals=Totals.model_validate(o, from_attributes=True),
        lines=[Line.model_validate(line, from_attributes=True) for line in f.lines],
        payment=PaymentState(
            status=latest.status, amount_cents=latest.amount_cents,
            captured_cents=latest.captured_cents, refunded_cents=latest.refunded_cents,
            card_brand=latest.card_brand, card_last4=latest.card_last4,
            attempts=len(f.payments)) if latest else None,
        stock=[StockLine(
            variant_id=line.variant_id, sku=line.sku,
            reserved_for_order=held[line.variant_id].quantity if line.variant_id in held else 0,
            reservation_status=held[line.variant_id].status if line.variant_id in held else None,
            reservation_expires_at=held[line.variant_id].expires_at
            if line.variant_id in held else None,
            on_hand=item.on_hand if item else 0, allocated=item.allocated if item else 0,
            reserved=item.reserved if item else 0, available=item.available if item else 0,
        ) for line in f.lines for item in [f.stock.get(line.variant_id)]],
        allocations=[AllocationOut(sku=skus.get(a.variant_id, ""), variant_id=a.variant_id,
                                   warehouse=w.code, bin=loc.code, quantity=a.quantity,
                                   status=a.status) for a, loc, w in f.allocations],
        screening=ScreeningOut.model_validate(f.screening, from_attributes=True)
        if f.screening else None,
        history=[HistoryEntry(at=e.created_at, from_status=e.from_status,
                              to_status=e.to_status, actor=e.actor, note=e.note,
                              public=e.public) for e in f.history],
    )


@api.route("GET", "/api/orders/{number}/payments", access=Permission.PAYMENTS_READ,
           response=PaymentList, tags=TAGS,
           summary="Every payment attempt of an order, with its Stripe ids")
def order_payments(ctx: Context, number: str) -> PaymentList:
    with ctx.db.read_session() as session:
        f = desk.order_file(session, number)
    return PaymentList(items=[_payment(p, p.id == f.order.payment_id) for p in f.payments])


def _payment(payment: Payment, pays_order: bool) -> PaymentRecord:
    data = payment.model_dump()
    return PaymentRecord(**data, pays_order=pays_order)


@api.route("POST", "/api/orders/{number}/notes", access=Permission.ORDERS_NOTE,
           body=NoteRequest, response=HistoryEntry, status_code=201, tags=TAGS,
           summary="Add an internal note to the order's history")
def add_note(ctx: Context, number: str, body: NoteRequest) -> HistoryEntry:
    with ctx.unit_of_work() as uow:
        order = desk.order_by_number(uow.session, number)
        entry: OrderEvent = note(order, body.text.strip(), actor=ctx.staff.email, at=utcnow())
        uow.session.add(entry)
        audit.record(uow.session, ctx.actor, "order.note", target_type="order",
                     target_id=order.number, after={"note": entry.note})
    return HistoryEntry(at=entry.created_at, from_status=None, to_status=None,
                        actor=entry.actor, note=entry.note, public=False)


@api.route("POST", "/api/orders/{number}/cancel", access=Permission.ORDERS_CANCEL,
           body=CancelRequest, response=CancelResult, tags=TAGS, errors=(409,),
           summary="Cancel an order not yet shipped: stock back, authorisation voided; a "
           "captured payment is left for finance to refund")
def cancel(ctx: Context, number: str, body: CancelRequest) -> CancelResult:
    with ctx.unit_of_work() as uow:
        order = desk.order_by_number(uow.session, number)
        result = cancel_order(uow=uow, order_id=order.id, reason=body.reason.strip(),
                              actor=ctx.staff.email, env=_emails, settings=ctx.settings)
        audit.record(uow.session, ctx.actor, "order.cancel", target_type="order",
                     target_id=order.number, before={"status": result.previous_status},
                     after={"status": OrderStatus.CANCELLED, "reason": body.reason.strip(),
                            "units_released": result.units_released,
                            "voids_queued": result.voids_queued,
                            "refund_required": result.refund_required})
    return CancelResult(number=order.number, previous_status=result.previous_status,
                        status=OrderStatus.CANCELLED, units_released=result.units_released,
                        voids_queued=result.voids_queued,
                        refund_required=result.refund_required)
