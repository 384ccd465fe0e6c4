"""The returns desk: list and open returns, record what arrived (stock staff), refund what
arrived (finance), reject a return with a reason the customer reads.

Endpoints parse, call one service of `fulfilment.returns` (which locks, checks, restocks
through `fulfilment.inventory` and asks for the refund through `fulfilment.refunds`), write the
audit trail (refusals too) and render. Lists are newest first, a page at a time, cut with
keyset pagination on (created_at, id) behind an opaque cursor, like the order desk.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import tuple_
from sqlmodel import Session, col, select

from admin import cursors
from admin.api import Api, Context, Schema, UtcTime
from admin.errors import ApiError
from admin.routes.finance import BinRef
from conveyor import audit
from conveyor.errors import DomainError
from conveyor.templating import create_environment
from fulfilment import refunds as refund_service
from fulfilment import returns as service
from fulfilment.receiving import find_bin, find_warehouse
from models.after_sales import ItemCondition, ReturnLine, ReturnRequest, ReturnStatus
from models.finance import Refund, RefundStatus
from models.inventory import LocationKind
from models.orders import Order
from models.staff import Permission

api = Api()
TAGS = ["returns"]
NUMBER = r"^[A-Za-z0-9-]{1,20}$"
SKU = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_emails = create_environment()


class ReturnQuery(Schema):
    status: list[ReturnStatus] | None = Field(default=None, description="Any of these.")
    order: str | None = Field(default=None, pattern=NUMBER, description="Order number.")
    created_from: UtcTime | None = None
    created_to: UtcTime | None = Field(default=None, description="Exclusive.")
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=400)


class ReturnLineOut(BaseModel):
    sku: str
    variant_id: int
    quantity: int = Field(description="Units the customer is sending back.")
    received_quantity: int
    restocked_quantity: int = Field(description="Of those received, put back into stock.")
    condition: str = Field(description="sellable, damaged or missing; empty until received.")


class ReturnOut(BaseModel):
    number: str
    order_number: str
    status: ReturnStatus
    reason: str = Field(description="The customer's reason.")
    lines: list[ReturnLineOut]
    created_at: datetime
    updated_at: datetime
    received_at: datetime | None
    received_by: str
    staff_note: str
    rejection_reason: str = Field(description="Shown to the customer.")
    refund_id: uuid.UUID | None
    refund_status: RefundStatus | None
    completed_at: datetime | None


class ReturnPage(BaseModel):
    items: list[ReturnOut]
    next_cursor: str | None


class ReceiveLineIn(Schema):
    model_config = ConfigDict(str_strip_whitespace=True)

    sku: str = Field(pattern=SKU)
    received_quantity: int = Field(ge=0, le=10_000)
    condition: ItemCondition
    restock_bin: BinRef | None = Field(default=None, description=(
        "Sellable units go into this bin; omitted, into the variant's first bin."))


class ReceiveRequest(Schema):
    model_config = ConfigDict(str_strip_whitespace=True)

    lines: list[ReceiveLineIn] = Field(min_length=1, max_length=200,
                                       description="Every line of the return, once.")
    note: str = Field(default="", max_length=1000, description="Internal.")

    @model_validator(mode="after")
    def _each_sku_once(self) -> ReceiveRequest:
        skus = [line.sku.upper() for line in self.lines]
        if len(skus) != len(set(skus)):
            raise ValueError("name each SKU once")
        return self


class RejectRequest(Schema):
    model_config = ConfigDict(str_strip_whitespace=True)  # blanks are no reason

    reason: str = Field(min_length=3, max_length=500, description="The customer reads it.")


class RefundSummary(BaseModel):
    id: uuid.UUID
    status: RefundStatus
    amount_cents: int
    currency: str
    requested_by: str


class ReturnRefundOut(BaseModel):
    return_request: ReturnOut
    refund: RefundSummary


def return_outs(session: Session, requests: Sequence[ReturnRequest]) -> list[ReturnOut]:
    """Returns as the API shows them, with their lines, order numbers and refund states."""
    if not requests:
        return []
    ids = [r.id for r in requests]
    lines: dict[uuid.UUID, list[ReturnLine]] = {}
    for line in session.exec(select(ReturnLine).where(col(ReturnLine.return_id).in_(ids))
                             .order_by(col(ReturnLine.id))):
        lines.setdefault(line.return_id, []).append(line)
    numbers = dict(session.exec(select(Order.id, Order.number).where(
        col(Order.id).in_({r.order_id for r in requests}))).all())
    refund_ids = [r.refund_id for r in requests if r.refund_id]
    states = dict(session.exec(select(Refund.id, Refund.status).where(
        col(Refund.id).in_(refund_ids))).all()) if refund_ids else {}
    return [ReturnOut(
        number=r.number, order_number=numbers.get(r.order_id, ""),
        status=ReturnStatus(r.status), reason=r.reason,
        lines=[ReturnLineOut.model_validate(line, from_attributes=True)
               for line in lines.get(r.id, [])],
        created_at=r.created_at, updated_at=r.updated_at, received_at=r.received_at,
        received_by=r.received_by, staff_note=r.staff_note,
        rejection_reason=r.rejection_reason, refund_id=r.refund_id,
        refund_status=RefundStatus(states[r.refund_id]) if r.refund_id in states else None,
        completed_at=r.completed_at) for r in requests]


def _one(session: Session, request: ReturnRequest) -> ReturnOut:
    [out] = return_outs(session, [request])
    return out


def _audit_refusal(ctx: Context, action: str, number: str, exc: DomainError) -> None:
    with ctx.unit_of_work() as uow:
        audit.record(uow.session, ctx.actor, action, outcome="refused", target_type="return",
                     target_id=number.strip().upper(),
                     after={"error": exc.code, "message": exc.message})


@api.route("GET", "/api/returns", access=Permission.RETURNS_READ, query=ReturnQuery,
           response=ReturnPage, tags=TAGS,
           summary="Returns, newest first, by status (requested: waiting for the parcel; "
           "received: waiting for the refund), order and time")
def list_returns(ctx: Context, query: ReturnQuery) -> ReturnPage:
    statement = select(ReturnRequest)
    if query.status:
        statement = statement.where(col(ReturnRequest.status).in_(
            [s.value for s in query.status]))
    if query.order:
        statement = statement.join(Order, col(Order.id) == ReturnRequest.order_id).where(
            Order.number == query.order.strip().upper())
    if query.created_from is not None:
        statement = statement.where(col(ReturnRequest.created_at) >= query.created_from)
    if query.created_to is not None:
        statement = statement.where(col(ReturnRequest.created_at) < query.created_to)
    if query.cursor:
        moment, key = cursors.time_uuid_cursor(query.cursor)
        statement = statement.where(tuple_(col(ReturnRequest.created_at), col(ReturnRequest.id))
                                    < tuple_(moment, key))
    statement = statement.order_by(col(ReturnRequest.created_at).desc(),
                                   col(ReturnRequest.id).desc()).limit(query.limit + 1)
    with ctx.db.read_session() as session:
        requests = list(session.exec(statement))
        more = len(requests) > query.limit
        requests = requests[:query.limit]
        items = return_outs(session, requests)
    last = requests[-1] if more and requests else None
    return ReturnPage(items=items, next_cursor=cursors.encode_cursor(last.created_at, last.id)
                      if last else None)


@api.route("GET", "/api/returns/{number}", access=Permission.RETURNS_READ, response=ReturnOut,
           tags=TAGS, summary="One return with its lines and the state of its refund")
def get_return(ctx: Context, number: str) -> ReturnOut:
    with ctx.db.read_session() as session:
        return _one(session, service.return_by_number(session, number))


def _received_lines(session: Session, request: ReturnRequest, body: ReceiveRequest
                    ) -> list[service.ReceivedLine]:
    """The body's lines by variant and bin; 422 naming each SKU or bin that is not there."""
    own = {line.sku.upper(): line for line in service.lines_of(session, request.id)}
    problems: list[dict[str, Any]] = []
    lines = []
    for index, line in enumerate(body.lines):
        found = own.get(line.sku.upper())
        if found is None:
            problems.append({"loc": ["body", "lines", str(index), "sku"],
                             "message": f"{line.sku} is not in return {request.number}",
                             "type": "not_in_return"})
            continue
        location_id = None
        if line.restock_bin is not None:
            warehouse = find_warehouse(session, line.restock_bin.warehouse)
            location = (find_bin(session, warehouse.id, line.restock_bin.bin)
                        if warehouse is not None and warehouse.id is not None else None)
            if location is None or location.kind != LocationKind.BIN:
                problems.append({"loc": ["body", "lines", str(index), "restock_bin"],
                                 "message": f"no bin {line.restock_bin.bin} in warehouse "
                                            f"{line.restock_bin.warehouse}",
                                 "type": "no_such_bin"})
                continue
            location_id = location.id
        lines.append(service.ReceivedLine(found.variant_id, line.received_quantity,
                                          line.condition, location_id))
    if problems:
        raise ApiError(422, "invalid_input", "Some fields are not valid.", {"fields": problems})
    return lines


@api.route("POST", "/api/returns/{number}/receive", access=Permission.RETURNS_RECEIVE,
           body=ReceiveRequest, response=ReturnOut, tags=TAGS, errors=(409,),
           summary="Record what arrived of a return, per line with its condition; sellable "
           "units go back into stock (a bin given, or the variant's first bin)")
def receive_return(ctx: Context, number: str, body: ReceiveRequest) -> ReturnOut:
    try:
        with ctx.unit_of_work() as uow:
            found = service.return_by_number(uow.session, number)
            lines = _received_lines(uow.session, found, body)
            request = service.receive_return(uow=uow, return_id=found.id, lines=lines,
                                             received_by=ctx.staff.email, note_text=body.note)
            out = _one(uow.session, request)
            audit.record(uow.session, ctx.actor, "return.receive", target_type="return",
                         target_id=request.number,
                         before={"status": ReturnStatus.REQUESTED},
                         after={"status": request.status, "order": out.order_number,
                                "lines": [line.model_dump() for line in out.lines],
                                "note": request.staff_note})
    except service.ReturnRefused as exc:
        _audit_refusal(ctx, "return.receive", number, exc)
        raise
    return out


@api.route("POST", "/api/returns/{number}/refund", access=Permission.PAYMENTS_REFUND,
           response=ReturnRefundOut, status_code=202, tags=TAGS, errors=(409,),
           summary="Refund what arrived of a received return (prices paid, VAT included; no "
           "second restock). Above REFUND_APPROVAL_CENTS it waits for a second finance user; "
           "the return completes when the refund is made")
def refund_return(ctx: Context, number: str) -> ReturnRefundOut:
    try:
        with ctx.unit_of_work() as uow:
            found = service.return_by_number(uow.session, number)
            refund = service.refund_return(uow=uow, return_id=found.id,
                                           requested_by=ctx.staff.email, settings=ctx.settings)
            out = _one(uow.session, found)
            audit.record(uow.session, ctx.actor, "return.refund", target_type="return",
                         target_id=found.number,
                         after={"order": out.order_number, "refund_id": str(refund.id),
                                "amount_cents": refund.amount_cents,
                                "refund_status": refund.status})
    except (service.ReturnRefused, refund_service.RefundRefused,
            refund_service.PeriodClosed) as exc:
        _audit_refusal(ctx, "return.refund", number, exc)
        raise
    return ReturnRefundOut(return_request=out, refund=RefundSummary.model_validate(
        refund, from_attributes=True))


@api.route("POST", "/api/returns/{number}/reject", access=Permission.RETURNS_RECEIVE,
           body=RejectRequest, response=ReturnOut, tags=TAGS, errors=(409,),
           summary="Refuse a return (requested, or received and not being refunded) with a "
           "reason the customer reads on the order page and by email")
def reject_return(ctx: Context, number: str, body: RejectRequest) -> ReturnOut:
    try:
        with ctx.unit_of_work() as uow:
            found = service.return_by_number(uow.session, number)
            before = found.status
            request = service.reject_return(uow=uow, return_id=found.id, reason=body.reason,
                                            rejected_by=ctx.staff.email, env=_emails,
                                            settings=ctx.settings)
            out = _one(uow.session, request)
            audit.record(uow.session, ctx.actor, "return.reject", target_type="return",
                         target_id=request.number, before={"status": before},
                         after={"status": request.status, "order": out.order_number,
                                "reason": request.rejection_reason})
    except service.ReturnRefused as exc:
        _audit_refusal(ctx, "return.reject", number, exc)
        raise
    return out
