"""Customer messages about an order, and the support desk's answers.

One conversation (`SupportThread`) per order at a time: a customer's message goes into the
order's latest thread unless it was closed, in which case a new one starts. A customer's
message makes the thread `open` (staff owe an answer); a staff reply makes it `waiting` (for
the customer) and is emailed; staff may close it. Customers are limited to
SUPPORT_MESSAGES_PER_ORDER_PER_HOUR messages per order, counted under the order's lock.
Every staff step also writes an internal entry in the order's history.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from jinja2 import Environment
from sqlmodel import Session, col, func, select

from conveyor.db import UnitOfWork
from conveyor.errors import DomainError, NotFound
from conveyor.mail import queue_email
from conveyor.settings import Settings
from models.after_sales import SupportMessage, SupportThread, ThreadStatus
from models.base import utcnow
from models.orders import Order, note
from models.staff import Permission, StaffUser, permissions_of

MAX_SUBJECT = 200
MAX_BODY = 5000
CUSTOMER = "customer"


class MessageRefused(DomainError):
    code = "message_refused"


class TooManyMessages(DomainError):
    code = "rate_limited"


def _clean_body(body: str) -> str:
    body = body.replace("\r\n", "\n").strip()
    if not body:
        raise MessageRefused("Write a message.", details={"field": "body"})
    if len(body) > MAX_BODY:
        raise MessageRefused(f"Messages can be at most {MAX_BODY} characters long (this one "
                             f"has {len(body)}).", details={"field": "body"})
    return body


def current_thread(session: Session, order_id: uuid.UUID) -> SupportThread | None:
    """The order's latest conversation, closed or not."""
    return session.exec(select(SupportThread).where(SupportThread.order_id == order_id)
                        .order_by(col(SupportThread.created_at).desc(),
                                  col(SupportThread.id))).first()


def threads_of(session: Session, order_id: uuid.UUID) -> list[SupportThread]:
    return list(session.exec(select(SupportThread).where(SupportThread.order_id == order_id)
                             .order_by(col(SupportThread.created_at))))


def messages_of(session: Session, thread_ids: list[uuid.UUID]) -> list[SupportMessage]:
    if not thread_ids:
        return []
    return list(session.exec(select(SupportMessage).where(
        col(SupportMessage.thread_id).in_(thread_ids))
        .order_by(col(SupportMessage.created_at), col(SupportMessage.id))))


def post_customer_message(
    *, uow: UnitOfWork, order_id: uuid.UUID, subject: str, body: str, settings: Settings,
    now: datetime | None = None,
) -> SupportMessage:
    """A customer writes about an order. Locks the order (so the hourly limit holds under
    concurrent posts); raises MessageRefused for an empty or too long message and
    TooManyMessages (with `retry_after` seconds) past the limit, changing nothing."""
    session = uow.session
    now = now or utcnow()
    order = session.get(Order, order_id, with_for_update=True)
    if order is None:
        raise NotFound("No such order.")
    subject = " ".join(subject.split())
    if len(subject) > MAX_SUBJECT:
        raise MessageRefused(f"The subject can be at most {MAX_SUBJECT} characters long.",
                             details={"field": "subject"})
    body = _clean_body(body)
    since = now - timedelta(hours=1)
    recent = list(session.exec(
        select(SupportMessage.created_at).join(
            SupportThread, col(SupportThread.id) == SupportMessage.thread_id)
        .where(SupportThread.order_id == order.id, col(SupportMessage.from_customer).is_(True),
               col(SupportMessage.created_at) > since)
        .order_by(col(SupportMessage.created_at))))
    limit = settings.support_messages_per_order_per_hour
    if len(recent) >= limit:
        wait = max(int((recent[-limit] + timedelta(hours=1) - now).total_seconds()) + 1, 1)
        raise TooManyMessages(
            f"You have sent {len(recent)} messages about this order in the last hour; please "
            f"wait {max(wait // 60, 1)} minute(s) or keep writing in one message.",
            details={"retry_after": wait, "field": "body"})
    thread = current_thread(session, order.id)
    if thread is None or thread.status == ThreadStatus.CLOSED:
        thread = SupportThread(order_id=order.id, subject=subject or f"Order {order.number}",
                               created_at=now)
        session.add(thread)
    else:
        thread = session.get(SupportThread, thread.id, with_for_update=True) or thread
    thread.status = ThreadStatus.OPEN
    thread.updated_at = now
    session.flush()
    message = SupportMessage(thread_id=thread.id, from_customer=True, author=order.email,
                             body=body, created_at=now)
    session.add(message)
    session.flush()
    return message


def _locked_thread(session: Session, thread_id: uuid.UUID) -> tuple[SupportThread, Order]:
    thread = session.get(SupportThread, thread_id)
    if thread is None:
        raise NotFound("No such conversation.")
    order = session.get(Order, thread.order_id, with_for_update=True)
    thread = session.get(SupportThread, thread_id, with_for_update=True)
    assert order is not None and thread is not None
    return thread, order


def reply_to_thread(
    *, uow: UnitOfWork, thread_id: uuid.UUID, body: str, author: str, env: Environment,
    settings: Settings,
) -> SupportMessage:
    """Staff answer: the message is stored, the thread waits for the customer, the answer
    is emailed (queued in this transaction) and noted in the order's history. Locks the
    order, then the thread."""
    session = uow.session
    body = _clean_body(body)
    thread, order = _locked_thread(session, thread_id)
    now = utcnow()
    message = SupportMessage(thread_id=thread.id, from_customer=False, author=author,
                             body=body, created_at=now)
    session.add(message)
    thread.status = ThreadStatus.WAITING
    thread.updated_at = now
    session.add(note(order, f"Reply to the customer by {author} ({len(body)} characters; "
                            "the text is in the conversation).", actor=author, at=now))
    status_url = f"{settings.base_url.rstrip('/')}/orders/{order.status_token}"
    queue_email(uow, env, to=order.email,
                subject=f"Re: {thread.subject}" if thread.subject else
                f"About your order {order.number}",
                template="support_reply", order_id=order.id,
                context={"order": order, "thread": thread, "message": message,
                         "status_url": status_url})
    session.flush()
    return message


def support_staff(session: Session, email: str) -> StaffUser | None:
    """The enabled staff user of this email whose roles include the support desk."""
    user = session.exec(select(StaffUser).where(
        func.lower(col(StaffUser.email)) == email.strip().lower())).first()
    if user is None or user.disabled_at is not None:
        return None
    return user if Permission.SUPPORT in permissions_of(user.roles) else None


def assign_thread(*, uow: UnitOfWork, thread_id: uuid.UUID, assignee: str,
                  actor: str) -> tuple[SupportThread, str]:
    """Give a conversation to a staff user of the support desk ('' takes it from anyone);
    returns it and who had it before. Raises MessageRefused for someone who cannot answer."""
    session = uow.session
    assignee = assignee.strip()
    if assignee:
        user = support_staff(session, assignee)
        if user is None:
            raise MessageRefused(f"{assignee} is not a staff user of the support desk.",
                                 details={"assignee": assignee})
        assignee = user.email
    thread, order = _locked_thread(session, thread_id)
    before = thread.assigned_to
    thread.assigned_to = assignee
    session.add(note(order, f"Conversation \u201c{thread.subject}\u201d "
                            + (f"assigned to {assignee}" if assignee else "unassigned")
                            + f" by {actor}.", actor=actor, at=utcnow()))
    session.flush()
    return thread, before


def set_thread_status(*, uow: UnitOfWork, thread_id: uuid.UUID, status: ThreadStatus,
                      actor: str) -> tuple[SupportThread, str]:
    """Set a conversation's status (e.g. close it); returns it and its status before."""
    session = uow.session
    thread, order = _locked_thread(session, thread_id)
    before = thread.status
    if before != status:
        thread.status = status
        thread.updated_at = utcnow()
        session.add(note(order, f"Conversation \u201c{thread.subject}\u201d set to {status} "
                                f"by {actor}.", actor=actor, at=thread.updated_at))
    session.flush()
    return thread, before
