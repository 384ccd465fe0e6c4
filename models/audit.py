"""The audit trail: append-only, hash-chained entries of what staff did and were refused.

Each entry stores the SHA-256 of its own content together with the previous entry's hash, so
changing, removing or reordering any entry breaks the chain from that entry on. `AuditHead`
holds the newest id and hash: appends lock it, which orders them, and it also shows when
entries were cut off the end.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index
from sqlmodel import Field, SQLModel

from models.base import utc_column, utcnow

GENESIS_HASH = "0" * 64


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_entry"
    __table_args__ = (
        Index("ix_audit_entry_actor_at", "actor_email", "at"),
        Index("ix_audit_entry_action_at", "action", "at"),
        Index("ix_audit_entry_target", "target_type", "target_id"),
    )

    id: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})
    at: datetime = utc_column(default_factory=utcnow, index=True)
    actor_id: uuid.UUID | None = None
    actor_email: str = Field(default="", max_length=254)
    actor_roles: list[str] = Field(default_factory=list, sa_type=JSON)
    action: str = Field(max_length=80)
    outcome: str = Field(default="ok", max_length=20)
    target_type: str = Field(default="", max_length=40)
    target_id: str = Field(default="", max_length=120)
    before: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    after: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    request_id: str = Field(default="", max_length=64)
    client_ip: str = Field(default="", max_length=64)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class AuditHead(SQLModel, table=True):
    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True)
    last_id: int = Field(default=0, sa_type=BigInteger)
    last_hash: str = Field(default=GENESIS_HASH, max_length=64)


def entry_content(entry: AuditEntry) -> dict[str, Any]:
    """Everything an entry says, in the exact form that is hashed."""
    return {
        "id": entry.id,
        "at": entry.at.isoformat(timespec="microseconds"),
        "actor_id": str(entry.actor_id) if entry.actor_id else None,
        "actor_email": entry.actor_email,
        "actor_roles": list(entry.actor_roles),
        "action": entry.action,
        "outcome": entry.outcome,
        "target_type": entry.target_type,
        "target_id": entry.target_id,
        "before": entry.before,
        "after": entry.after,
        "request_id": entry.request_id,
        "client_ip": entry.client_ip,
        "prev_hash": entry.prev_hash,
    }


def entry_hash(entry: AuditEntry) -> str:
    canonical = json.dumps(entry_content(entry), sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
