"""Email through the outbox: rendered and stored with the change that causes it, delivered later.

Delivery goes over SMTP when `SMTP_HOST` is set, otherwise into `.eml` files under var/mail/
that any mail client opens. Delivery is at least once: a crash after sending and before marking
the row sends it again on retry.
"""

from __future__ import annotations

import smtplib
import ssl
import uuid
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from jinja2 import Environment

from conveyor import outbox
from conveyor.db import Database, UnitOfWork
from conveyor.settings import Settings
from models.base import utcnow
from models.messaging import Email


def queue_email(
    uow: UnitOfWork, env: Environment, *, to: str, subject: str, template: str,
    context: dict[str, Any], order_id: uuid.UUID | None = None,
) -> Email:
    """Render `emails/<template>.txt` and `.html` and queue the email in this transaction."""
    email = Email(
        to_address=to,
        subject=subject,
        text_body=env.get_template(f"emails/{template}.txt").render(**context),
        html_body=env.get_template(f"emails/{template}.html").render(**context),
        order_id=order_id,
        template=template,
    )
    uow.session.add(email)
    uow.flush()
    outbox.enqueue(uow, "deliver_email", str(email.id))
    return email


def build_message(email: Email, settings: Settings) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = email.to_address
    message["Subject"] = email.subject
    message["Date"] = formatdate(email.created_at.timestamp(), usegmt=True)
    message["Message-ID"] = make_msgid(idstring=email.id.hex, domain="conveyor.localhost")
    message.set_content(email.text_body)
    if email.html_body:
        message.add_alternative(email.html_body, subtype="html")
    return message


def deliver_email(db: Database, settings: Settings, email_id: uuid.UUID) -> bool:
    """Send one queued email unless it was sent already; True when it went out now."""
    with db.read_session() as session:
        email = session.get(Email, email_id)
        if email is None or email.sent_at is not None:
            return False
    message = build_message(email, settings)
    if settings.smtp_host:
        _send_smtp(message, settings)
    else:
        settings.mail_dir.mkdir(parents=True, exist_ok=True)
        path = settings.mail_dir / f"{email.created_at:%Y%m%d-%H%M%S}-{email.id.hex[:12]}.eml"
        path.write_bytes(bytes(message))
    with db.unit_of_work() as uow:
        row = uow.session.get(Email, email_id, with_for_update=True)
        if row is not None and row.sent_at is None:
            row.sent_at = utcnow()
    return True


def _send_smtp(message: EmailMessage, settings: Settings) -> None:
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=30) as smtp:
        if settings.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
        if settings.smtp_user and settings.smtp_password:
            smtp.login(settings.smtp_user, settings.smtp_password.get_secret_value())
        smtp.send_message(message)
