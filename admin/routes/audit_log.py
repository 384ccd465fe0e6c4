"""Reading the audit trail."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlmodel import col, select

from admin.api import Api, Context, Schema, UtcTime
from models.audit import AuditEntry
from models.staff import Permission

api = Api()


class AuditQuery(Schema):
    actor: str | None = Field(default=None, max_length=254, description="Actor's email.")
    action: str | None = Field(default=None, max_length=80,
                               description="An action, or a prefix ending in '.': 'auth.'")
    target_type: str | None = Field(default=None, max_length=40)
    target_id: str | None = Field(default=None, max_length=120)
    outcome: str | None = Field(default=None, max_length=20)
    at_from: UtcTime | None = None
    at_to: UtcTime | None = None
    before_id: int | None = Field(default=None, ge=1, le=2**63 - 1,
                                  description="Cursor: entries older than this id.")
    limit: int = Field(default=100, ge=1, le=500)


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor_id: uuid.UUID | None
    actor_email: str
    actor_roles: list[str]
    action: str
    outcome: str
    target_type: str
    target_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str
    client_ip: str
    hash: str


class AuditPage(BaseModel):
    items: list[AuditOut]
    next_before_id: int | None


@api.route("GET", "/api/audit", access=Permission.AUDIT_READ, query=AuditQuery,
           response=AuditPage, tags=["audit"],
           summary="Audit entries, newest first, filtered by actor, action, target and time")
def list_audit(ctx: Context, query: AuditQuery) -> AuditPage:
    statement = select(AuditEntry)
    if query.actor:
        statement = statement.where(AuditEntry.actor_email == query.actor.strip().lower())
    if query.action:
        if query.action.endswith("."):
            statement = statement.where(col(AuditEntry.action).startswith(query.action))
        else:
            statement = statement.where(AuditEntry.action == query.action)
    if query.target_type:
        statement = statement.where(AuditEntry.target_type == query.target_type)
    if query.target_id:
        statement = statement.where(AuditEntry.target_id == query.target_id)
    if query.outcome:
        statement = statement.where(AuditEntry.outcome == query.outcome)
    if query.at_from:
        statement = statement.where(col(AuditEntry.at) >= query.at_from)
    if query.at_to:
        statement = statement.where(col(AuditEntry.at) < query.at_to)
    if query.before_id:
        statement = statement.where(col(AuditEntry.id) < query.before_id)
    with ctx.db.read_session() as session:
        rows = list(session.exec(statement.order_by(col(AuditEntry.id).desc())
                                 .limit(query.limit + 1)))
    more = len(rows) > query.limit
    rows = rows[:query.limit]
    return AuditPage(items=[AuditOut.model_validate(r, from_attributes=True) for r in rows],
                     next_before_id=rows[-1].id if more and rows else None)
