"""The support desk: the inbox of customer conversations about orders, one conversation with
the order beside it (lines, totals, shipments, returns; no payment details), replies (emailed
to the customer), assignment and status.

The inbox is oldest first by last activity, so the conversation that has waited longest comes
first; it is cut with keyset pagination on (updated_at, id) behind an opaque cursor. Every
write goes through `fulfilment.support`, which also notes it in the order's history, and is
written to the audit trail.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import tuple_
from sqlmodel import Session, col, func, select

from admin import cursors
from admin.api import Api, Context, Schema
from admin.routes.orders import Line, Totals
from admin.routes.returns import ReturnOut, return_outs
from conveyor import audit
from conveyor.errors import DomainError, NotFound
from conveyor.templating import create_environment
from fulfilment import support as service
from fulfilment.packing import parcels_of
from models.after_sales import ReturnRequest, SupportMessage, SupportThread, ThreadStatus
from models.orders import CUSTOMER_LABELS, Order, OrderLine, OrderStatus
from models.staff import Permission

api = Api()
TAGS = ["support"]
NUMBER = r"^[A-Za-z0-9-]{1,20}$"
_emails = create_environment()


class ThreadQuery(Schema):
    status: list[ThreadStatus] | None = Field(default=None, description=(
        "Any of these: open (staff owe an answer), waiting (for the customer), closed."))
    assignee: str | None = Field(default=None, max_length=254, description=(
        "A staff user's email, or `me`."))
    unassigned: bool | None = Field(default=None, description="Only (or no) unassigned ones.")
    order: str | None = Field(default=None, pattern=NUMBER, description="Order number.")
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=400)


class ThreadSummary(BaseModel):
    id: uuid.UUID
    order_number: str
    customer_email: str
    subject: str
    status: ThreadStatus
    assigned_to: str
    created_at: datetime
    updated_at: datetime
    messages: int
    last_from_customer: bool = Field(description="The customer wrote last.")


class ThreadPage(BaseModel):
    items: list[ThreadSummary]
    next_cursor: str | None


class MessageOut(BaseModel):
    id: int
    from_customer: bool
    author: str
    body: str
    created_at: datetime


class ShipmentOut(BaseModel):
    carrier: str
    tracking_number: str
    tracking_url: str
    shipped_at: datetime | None = Field(description="Null: packed, not handed over yet.")
    items: list[tuple[str, int]] = Field(description="(SKU, units)")


class OrderContext(BaseModel):
    number: str
    status: str
    customer_status: str = Field(description="What the customer reads on the order page.")
    created_at: datetime
    email: str
    full_name: str
    country: str
    lines: list[Line]
    totals: Totals
    shipments: list[ShipmentOut]
    returns: list[ReturnOut]


class ThreadDetail(BaseModel):
    thread: ThreadSummary
    messages: list[MessageOut]
    order: OrderContext


class ReplyRequest(Schema):
    model_config = ConfigDict(str_strip_whitespace=True)

    body: str = Field(min_length=1, max_length=service.MAX_BODY)


class AssignRequest(Schema):
    model_config = ConfigDict(str_strip_whitespace=True)

    assignee: str = Field(max_length=254, description=(
        "A staff user of the support desk, by email; empty to unassign."))


class StatusRequest(Schema):
    status: ThreadStatus


def _summaries(session: Session, threads: Sequence[SupportThread]) -> list[ThreadSummary]:
    if not threads:
        return []
    ids = [t.id for t in threads]
    orders = {o.id: o for o in session.exec(select(Order).where(
        col(Order.id).in_({t.order_id for t in threads})))}
    counts = dict(session.exec(select(SupportMessage.thread_id, func.count()).where(
        col(SupportMessage.thread_id).in_(ids)).group_by(col(SupportMessage.thread_id))).all())
    last: dict[uuid.UUID, bool] = {}
    for message in session.exec(select(SupportMessage).where(
            col(SupportMessage.thread_id).in_(ids))
            .order_by(col(SupportMessage.created_at), col(SupportMessage.id))):
        last[message.thread_id] = message.from_customer
    return [ThreadSummary(
        id=t.id, order_number=orders[t.order_id].number,
        customer_email=orders[t.order_id].email, subject=t.subject,
        status=ThreadStatus(t.status), assigned_to=t.assigned_to, created_at=t.created_at,
        updated_at=t.updated_at, messages=int(counts.get(t.id, 0)),
        last_from_customer=last.get(t.id, False)) for t in threads]


def _thread(session: Session, thread_id: uuid.UUID) -> SupportThread:
    thread = session.get(SupportThread, thread_id)
    if thread is None:
        raise NotFound("No such conversation.")
    return thread


def _audit_refusal(ctx: Context, action: str, thread_id: uuid.UUID, exc: DomainError) -> None:
    with ctx.unit_of_work() as uow:
        audit.record(uow.session, ctx.actor, action, outcome="refused",
                     target_type="support_thread", target_id=str(thread_id),
                     after={"error": exc.code, "message": exc.message})


@api.route("GET", "/api/support/threads", access=Permission.SUPPORT, query=ThreadQuery,
           response=ThreadPage, tags=TAGS,
           summary="The support inbox: conversations about orders, the one waiting longest "
           "first, by status, assignee and order")
def list_threads(ctx: Context, query: ThreadQuery) -> ThreadPage:
    statement = select(SupportThread)
    if query.status:
        statement = statement.where(col(SupportThread.status).in_(
            [s.value for s in query.status]))
    if query.assignee:
        who = ctx.staff.email if query.assignee.strip().lower() == "me" else query.assignee
        statement = statement.where(func.lower(col(SupportThread.assigned_to))
                                    == who.strip().lower())
    if query.unassigned is not None:
        statement = statement.where((col(SupportThread.assigned_to) == "") if query.unassigned
                                    else (col(SupportThread.assigned_to) != ""))
    if query.order:
        statement = statement.join(Order, col(Order.id) == SupportThread.order_id).where(
            Order.number == query.order.strip().upper())
    if query.cursor:
        moment, key = cursors.time_uuid_cursor(query.cursor)
        statement = statement.where(tuple_(col(SupportThread.updated_at), col(SupportThread.id))
                                    > tuple_(moment, key))
    statement = statement.order_by(col(SupportThread.updated_at),
                                   col(SupportThread.id)).limit(query.limit + 1)
    with ctx.db.read_session() as session:
        threads = list(session.exec(statement))
        more = len(threads) > query.limit
        threads = threads[:query.limit]
        items = _summaries(session, threads)
    last = threads[-1] if more and threads else None
    return ThreadPage(items=items, next_cursor=cursors.encode_cursor(last.updated_at, last.id)
                      if last else None)


def _order_context(session: Session, order: Order) -> OrderContext:
    lines = list(session.exec(select(OrderLine).where(OrderLine.order_id == order.id)
                              .order_by(col(OrderLine.id))))
    skus = {line.variant_id: line.sku for line in lines}
    returns = list(session.exec(select(ReturnRequest).where(ReturnRequest.order_id == order.id)
                                .order_by(col(ReturnRequest.created_at))))
    return OrderContext(
        number=order.number, status=order.status,
        customer_status=CUSTOMER_LABELS[OrderStatus(order.status)],
        created_at=order.created_at, email=order.email, full_name=order.full_name,
        country=order.country,
        lines=[Line.model_validate(line, from_attributes=True) for line in lines],
        totals=Totals.model_validate(order, from_attributes=True),
        shipments=[ShipmentOut(carrier=p.carrier, tracking_number=p.tracking_number,
                               tracking_url=p.tracking_url, shipped_at=p.shipped_at,
                               items=[(skus.get(i.variant_id, ""), i.quantity) for i in items])
                   for p, items in parcels_of(session, order.id)],
        returns=return_outs(session, returns))


def _detail(session: Session, thread: SupportThread) -> ThreadDetail:
    order = session.get(Order, thread.order_id)
    assert order is not None
    [summary] = _summaries(session, [thread])
    return ThreadDetail(
        thread=summary,
        messages=[MessageOut.model_validate(m, from_attributes=True)
                  for m in service.messages_of(session, [thread.id])],
        order=_order_context(session, order))


@api.route("GET", "/api/support/threads/{thread_id}", access=Permission.SUPPORT,
           response=ThreadDetail, tags=TAGS,
           summary="One conversation, its messages, and its order: lines, totals, shipments "
           "and returns")
def get_thread(ctx: Context, thread_id: uuid.UUID) -> ThreadDetail:
    with ctx.db.read_session() as session:
        return _detail(session, _thread(session, thread_id))


@api.route("POST", "/api/support/threads/{thread_id}/reply", access=Permission.SUPPORT,
           body=ReplyRequest, response=ThreadDetail, status_code=201, tags=TAGS,
           summary="Answer the customer: shown on the order page and emailed; the "
           "conversation then waits for the customer")
def reply(ctx: Context, thread_id: uuid.UUID, body: ReplyRequest) -> ThreadDetail:
    try:
        with ctx.unit_of_work() as uow:
            before = _thread(uow.session, thread_id).status
            message = service.reply_to_thread(uow=uow, thread_id=thread_id, body=body.body,
                                              author=ctx.staff.email, env=_emails,
                                              settings=ctx.settings)
            detail = _detail(uow.session, _thread(uow.session, thread_id))
            audit.record(uow.session, ctx.actor, "support.reply",
                         target_type="support_thread", target_id=str(thread_id),
                         before={"status": before},
                         after={"status": detail.thread.status, "message_id": message.id,
                                "order": detail.order.number,
                                "characters": len(message.body)})  # never the text: the
            # trail cannot be erased, and messages may hold personal data
    except service.MessageRefused as exc:
        _audit_refusal(ctx, "support.reply", thread_id, exc)
        raise
    return detail


@api.route("POST", "/api/support/threads/{thread_id}/assign", access=Permission.SUPPORT,
           body=AssignRequest, response=ThreadSummary, tags=TAGS,
           summary="Give the conversation to a staff user of the support desk (empty: "
           "nobody)")
def assign(ctx: Context, thread_id: uuid.UUID, body: AssignRequest) -> ThreadSummary:
    try:
        with ctx.unit_of_work() as uow:
            thread, before = service.assign_thread(uow=uow, thread_id=thread_id,
                                                   assignee=body.assignee,
                                                   actor=ctx.staff.email)
            [summary] = _summaries(uow.session, [thread])
            audit.record(uow.session, ctx.actor, "support.assign",
                         target_type="support_thread", target_id=str(thread_id),
                         before={"assigned_to": before},
                         after={"assigned_to": thread.assigned_to,
                                "order": summary.order_number})
    except service.MessageRefused as exc:
        _audit_refusal(ctx, "support.assign", thread_id, exc)
        raise
    return summary


@api.route("POST", "/api/support/threads/{thread_id}/status", access=Permission.SUPPORT,
           body=StatusRequest, response=ThreadSummary, tags=TAGS,
           summary="Set the conversation's status, e.g. close it")
def set_status(ctx: Context, thread_id: uuid.UUID, body: StatusRequest) -> ThreadSummary:
    with ctx.unit_of_work() as uow:
        thread, before = service.set_thread_status(uow=uow, thread_id=thread_id,
                                                   status=body.status, actor=ctx.staff.email)
        [summary] = _summaries(uow.session, [thread])
        audit.record(uow.session, ctx.actor, "support.status", target_type="support_thread",
                     target_id=str(thread_id), before={"status": before},
                     after={"status": thread.status, "order": summary.order_number})
    return summary
