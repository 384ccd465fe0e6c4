"""Writing and checking the hash-chained audit trail (tables in `models/audit.py`).

`record` appends an entry inside the caller's transaction, so an action and its entry commit
together; it locks the chain's head row, which puts concurrent appends in a line. Values that
look secret (passwords, tokens, codes) never reach an entry: they are replaced by
"[redacted]" before hashing and storing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlmodel import Session, col, select

from models.audit import GENESIS_HASH, AuditEntry, AuditHead, entry_hash
from models.base import utcnow

SECRET_WORDS = ("password", "passwd", "token", "secret", "totp", "authorization", "cookie",
                "api_key", "apikey", "credential")
REDACTED = "[redacted]"


def is_secret(key: str) -> bool:
    lowered = key.lower()
    return (any(word in lowered for word in SECRET_WORDS) or lowered in ("code", "otp", "pin")
            or lowered.endswith("_hash"))


@dataclass(frozen=True)
class Actor:
    """Who did it, and from where: one per request (or per command-line run)."""

    staff_id: uuid.UUID | None = None
    email: str = ""
    roles: tuple[str, ...] = ()
    request_id: str = ""
    client_ip: str = ""


SYSTEM = Actor(email="system")


def jsonable(value: Any, *, key: str = "") -> Any:
    """A JSON-ready copy of `value`, with secret-looking keys redacted."""
    if key and is_secret(key):
        return REDACTED
    if isinstance(value, dict):
        return {str(k): jsonable(v, key=str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    return value


def record(
    session: Session, actor: Actor, action: str, *, target_type: str = "", target_id: str = "",
    before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
    outcome: str = "ok",
) -> AuditEntry:
    """Append one entry to the chain in the caller's transaction (locks the chain's head)."""
    head = session.get(AuditHead, 1, with_for_update=True)
    if head is None:
        raise RuntimeError("the audit chain has no head row; run the migrations")
    entry = AuditEntry(
        id=head.last_id + 1, at=utcnow(), actor_id=actor.staff_id, actor_email=actor.email,
        actor_roles=list(actor.roles), action=action, outcome=outcome,
        target_type=target_type, target_id=str(target_id)[:120],
        before=jsonable(before) if before is not None else None,
        after=jsonable(after) if after is not None else None,
        request_id=actor.request_id, client_ip=actor.client_ip, prev_hash=head.last_hash,
        hash="",
    )
    entry.hash = entry_hash(entry)
    head.last_id, head.last_hash = entry.id, entry.hash
    session.add(entry)
    session.flush()
    return entry


@dataclass
class ChainReport:
    checked: int = 0
    broken_id: int | None = None
    reason: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.broken_id is None and not self.problems


def verify_chain(session: Session, *, batch: int = 1000) -> ChainReport:
    """Walk the chain from the first entry; stop at the first entry that does not check out."""
    report = ChainReport()
    expected_id, previous = 1, GENESIS_HASH
    last_seen = 0
    while True:
        entries = list(session.exec(
            select(AuditEntry).where(col(AuditEntry.id) > last_seen)
            .order_by(col(AuditEntry.id)).limit(batch)
        ))
        for entry in entries:
            problem = ""
            if entry.id != expected_id:
                problem = f"entry {expected_id} is missing (next is {entry.id})"
            elif entry.prev_hash != previous:
                problem = "it does not follow the entry before it (previous hash differs)"
            elif entry_hash(entry) != entry.hash:
                problem = "its content does not match its hash (it was altered)"
            if problem:
                report.broken_id = expected_id if entry.id != expected_id else entry.id
                report.reason = problem
                return report
            report.checked += 1
            expected_id, previous, last_seen = entry.id + 1, entry.hash, entry.id
        if len(entries) < batch:
            break
    head = session.get(AuditHead, 1)
    if head is not None and (head.last_id, head.last_hash) != (last_seen, previous):
        report.broken_id = last_seen + 1
        report.reason = (f"the chain's head says it ends at entry {head.last_id}, "
                         f"but entries stop at {last_seen}")
    return report
