"""The middle office's desk: the review queue, reviewers' decisions, screening rules, and the
state of the pipeline."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import col, select

from admin import orders as desk
from admin.api import Api, Context, Schema
from conveyor import audit
from conveyor.pipeline import outbox_stats, queue_stats
from conveyor.templating import create_environment
from fulfilment.screening import decide_review
from models.base import utcnow
from models.orders import Order, OrderStatus
from models.screening import RuleSet, RuleSetBody, Screening
from models.staff import Permission

api = Api()
AUTHORIZATION_LIFETIME = timedelta(days=7)  # Stripe voids card authorisations after 7 days
_emails = create_environment()


class ReviewItem(BaseModel):
    number: str
    email: str
    total_cents: int
    currency: str
    authorized_at: datetime | None
    held_since: datetime
    age_minutes: int
    review_deadline: datetime
    overdue: bool
    authorization_expires_at: datetime | None
    authorization_expiring: bool
    score: int
    rule_set_version: int
    signals: list[dict[str, Any]]
    quality_issues: list[dict[str, Any]]


class ReviewQueue(BaseModel):
    items: list[ReviewItem]
    overdue: int
    authorizations_expiring: int


class ReviewQuery(Schema):
    limit: int = Field(default=100, ge=1, le=500)


class DecisionRequest(Schema):
    model_config = ConfigDict(str_strip_whitespace=True)  # blanks are no reason

    reason: str = Field(min_length=3, max_length=1000)


class DecisionResult(BaseModel):
    number: str
    status: str


@api.route("GET", "/api/review-queue", access=Permission.ORDERS_REVIEW, query=ReviewQuery,
           response=ReviewQueue, tags=["review"],
           summary="Orders waiting for a reviewer, oldest first, with score, reasons, and age "
           "against the review deadline and the card authorisation's expiry")
def review_queue(ctx: Context, query: ReviewQuery) -> ReviewQueue:
    now = utcnow()
    deadline = timedelta(hours=ctx.settings.review_deadline_hours)
    warning = timedelta(hours=ctx.settings.authorization_warning_hours)
    with ctx.db.read_session() as session:
        rows = list(session.exec(
            select(Order, Screening).join(Screening, col(Screening.order_id) == Order.id)
            .where(Order.status == OrderStatus.ON_HOLD)
            .order_by(col(Screening.screened_at), col(Order.id)).limit(query.limit)))
    items = []
    for order, screening in rows:
        expires = (order.authorized_at + AUTHORIZATION_LIFETIME if order.authorized_at
                   else None)
        items.append(ReviewItem(
            number=order.number, email=order.email, total_cents=order.total_cents,
            currency=order.currency, authorized_at=order.authorized_at,
            held_since=screening.screened_at,
            age_minutes=int((now - screening.screened_at).total_seconds() // 60),
            review_deadline=screening.screened_at + deadline,
            overdue=now > screening.screened_at + deadline,
            authorization_expires_at=expires,
            authorization_expiring=expires is not None and expires - now < warning,
            score=screening.score, rule_set_version=screening.rule_set_version,
            signals=screening.signals, quality_issues=screening.quality_issues))
    return ReviewQueue(items=items, overdue=sum(i.overdue for i in items),
                       authorizations_expiring=sum(i.authorization_expiring for i in items))


def _decide(ctx: Context, number: str, body: DecisionRequest, approve: bool) -> DecisionResult:
    with ctx.unit_of_work() as uow:
        order = desk.order_by_number(uow.session, number)
        decided = decide_review(uow=uow, order_id=order.id, approve=approve,
                                reason=body.reason.strip(), reviewer=ctx.staff.email,
                                env=_emails, settings=ctx.settings)
        audit.record(uow.session, ctx.actor,
                     "order.review_approve" if approve else "order.review_reject",
                     target_type="order", target_id=order.number,
                     before={"status": OrderStatus.ON_HOLD},
                     after={"status": decided.status, "reason": body.reason.strip()})
    return DecisionResult(number=decided.number, status=decided.status)


@api.route("POST", "/api/orders/{number}/approve", access=Permission.ORDERS_REVIEW,
           body=DecisionRequest, response=DecisionResult, tags=["review"], errors=(409,),
           summary="Approve an order on hold (its payment is then captured and stock allocated)")
def approve(ctx: Context, number: str, body: DecisionRequest) -> DecisionResult:
    return _decide(ctx, number, body, approve=True)


@api.route("POST", "/api/orders/{number}/reject", access=Permission.ORDERS_REVIEW,
           body=DecisionRequest, response=DecisionResult, tags=["review"], errors=(409,),
           summary="Reject an order on hold: authorisation voided, stock released, customer "
           "told politely")
def reject(ctx: Context, number: str, body: DecisionRequest) -> DecisionResult:
    return _decide(ctx, number, body, approve=False)


class RuleSetOut(BaseModel):
    version: int
    body: RuleSetBody
    note: str
    created_by: str
    created_at: datetime


class RuleSetVersions(BaseModel):
    items: list[RuleSetOut]


class RuleSetIn(Schema):
    model_config = ConfigDict(str_strip_whitespace=True)  # a blank note is no note

    body: RuleSetBody
    note: str = Field(min_length=3, max_length=500)


def _rule_set_out(rule_set: RuleSet) -> RuleSetOut:
    return RuleSetOut(version=rule_set.version, body=rule_set.rules(), note=rule_set.note,
                      created_by=rule_set.created_by, created_at=rule_set.created_at)


@api.route("GET", "/api/screening/rules", access=Permission.SCREENING_READ,
           response=RuleSetVersions, tags=["screening"],
           summary="The screening rule sets, newest (in force) first")
def list_rules(ctx: Context) -> RuleSetVersions:
    with ctx.db.read_session() as session:
        rows = session.exec(select(RuleSet).order_by(col(RuleSet.version).desc()).limit(50))
        return RuleSetVersions(items=[_rule_set_out(r) for r in rows])


@api.route("POST", "/api/screening/rules", access=Permission.SCREENING_WRITE, body=RuleSetIn,
           response=RuleSetOut, status_code=201, tags=["screening"], errors=(409,),
           summary="Put a new version of the screening rules in force (weights, parameters, "
           "thresholds)")
def new_rules(ctx: Context, body: RuleSetIn) -> RuleSetOut:
    with ctx.unit_of_work() as uow:
        current = uow.session.exec(select(RuleSet).order_by(col(RuleSet.version).desc())
                                   .with_for_update()).first()
        version = (current.version if current else 0) + 1
        rule_set = RuleSet(version=version, body=body.body.model_dump(mode="json"),
                           note=body.note.strip(), created_by=ctx.staff.email)
        uow.session.add(rule_set)
        uow.flush()
        audit.record(uow.session, ctx.actor, "screening.rules_change",
                     target_type="rule_set", target_id=str(version),
                     before=current.body if current else None, after=rule_set.body)
        return _rule_set_out(rule_set)


class QueueOut(BaseModel):
    queue: str
    waiting: int
    delayed: int
    dead: int
    oldest_waiting_seconds: float | None


class OutboxOut(BaseModel):
    unpublished: int
    oldest_seconds: float | None


class PipelineOut(BaseModel):
    redis_reachable: bool
    queues: list[QueueOut]
    outbox: OutboxOut


@api.route("GET", "/api/pipeline", access=Permission.PIPELINE_READ, response=PipelineOut,
           tags=["pipeline"], summary="Queue depths, dead letters and the oldest waiting "
           "message per stage, and the outbox not yet published")
def pipeline(ctx: Context) -> PipelineOut:
    outbox = outbox_stats(ctx.db)
    try:
        queues = [QueueOut(**q.__dict__) for q in queue_stats(ctx.request.app.state.redis)]
        reachable = True
    except redis.RedisError:
        queues, reachable = [], False
    return PipelineOut(redis_reachable=reachable, queues=queues,
                       outbox=OutboxOut(**outbox.__dict__))
