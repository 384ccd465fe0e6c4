"""The transactional outbox: messages commit with the change that causes them.

`enqueue` adds a row to the caller's unit of work. The relay (`relay_batch`) later claims rows in
a short transaction, publishes them to Redis with no transaction open, and marks them published
in another. A crash between publishing and marking publishes a message again; actors are
idempotent, so that is safe. Nothing is ever published for a transaction that rolled back.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func, or_, update
from sqlmodel import col, select

from conveyor.db import Database, UnitOfWork
from conveyor.messages import queue_of
from models.base import utcnow
from models.messaging import OutboxMessage

log = logging.getLogger(__name__)
CLAIM_SECONDS = 60


class Publisher(Protocol):
    def publish(self, message: OutboxMessage) -> None: ...


def enqueue(uow: UnitOfWork, actor_name: str, *args: Any) -> OutboxMessage:
    """Add a message for `actor_name(*args)` to the unit of work; args must be JSON values."""
    message = OutboxMessage(queue_name=queue_of(actor_name), actor_name=actor_name,
                            args=list(args))
    uow.session.add(message)
    return message


def _claim(db: Database, *, limit: int, now: datetime) -> list[OutboxMessage]:
    with db.unit_of_work() as uow:
        query = (
            select(OutboxMessage)
            .where(col(OutboxMessage.published_at).is_(None))
            .where(or_(col(OutboxMessage.claimed_until).is_(None),
                       col(OutboxMessage.claimed_until) < now))
            .order_by(col(OutboxMessage.id))
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = list(uow.session.exec(query))
        for row in rows:
            row.claimed_until = now + timedelta(seconds=CLAIM_SECONDS)
            row.attempts += 1
        return rows


def relay_batch(db: Database, publisher: Publisher, *, limit: int = 200) -> int:
    """Publish up to `limit` unpublished messages in id order; return how many went out.

    Stops at the first publishing error (Redis down): what went out is marked, the rest is
    released for the next attempt, and the error is raised for the caller to back off.
    """
    now = utcnow()
    claimed = _claim(db, limit=limit, now=now)
    if not claimed:
        return 0
    published: list[int] = []
    error: Exception | None = None
    for message in claimed:
        try:
            publisher.publish(message)
        except Exception as exc:  # the broker's errors vary by client; all mean "not sent"
            error = exc
            break
        assert message.id is not None
        published.append(message.id)
    with db.unit_of_work() as uow:
        if published:
            uow.session.execute(
                update(OutboxMessage)
                .where(col(OutboxMessage.id).in_(published))
                .values(published_at=utcnow(), claimed_until=None)
            )
        unsent = [m.id for m in claimed if m.id not in set(published)]
        if unsent:
            uow.session.execute(
                update(OutboxMessage)
                .where(col(OutboxMessage.id).in_(unsent))
                .values(claimed_until=None, last_error=str(error)[:500])
            )
    if error is not None:
        raise error
    return len(published)


def pending_count(db: Database) -> int:
    with db.read_session() as session:
        query = select(func.count()).select_from(OutboxMessage).where(
            col(OutboxMessage.published_at).is_(None)
        )
        return int(session.exec(query).one())
