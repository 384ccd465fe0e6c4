"""Messages that leave a transaction: the outbox, inbound Stripe events, outgoing email."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Text, text
from sqlmodel import Field, SQLModel

from models.base import new_id, utc_column, utcnow


class OutboxMessage(SQLModel, table=True):
    """A Dramatiq message written in the same transaction as the change that causes it.

    The relay publishes it to Redis after commit. `message_id` becomes the Dramatiq message id,
    so a message published twice (relay crash after send, before marking) is recognisable.
    """

    __tablename__ = "outbox_message"
    __table_args__ = (
        Index(
            "ix_outbox_message_unpublished",
            "id",
            postgresql_where=text("published_at IS NULL"),
            sqlite_where=text("published_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    message_id: uuid.UUID = Field(default_factory=new_id, unique=True)
    queue_name: str = Field(max_length=64)
    actor_name: str = Field(max_length=64)
    args: list[Any] = Field(default_factory=list, sa_type=JSON)
    created_at: datetime = utc_column(default_factory=utcnow)
    claimed_until: datetime | None = utc_column(default=None, nullable=True)
    published_at: datetime | None = utc_column(default=None, nullable=True)
    attempts: int = 0
    last_error: str = Field(default="", max_length=500)


class StripeEvent(SQLModel, table=True):
    """Every verified webhook event, stored under Stripe's id before it has any effect."""

    __tablename__ = "stripe_event"

    id: str = Field(primary_key=True, max_length=64)
    type: str = Field(max_length=80)
    object_id: str = Field(default="", max_length=64, index=True)
    payload: dict[str, Any] = Field(sa_type=JSON)
    received_at: datetime = utc_column(default_factory=utcnow)
    processed_at: datetime | None = utc_column(default=None, nullable=True)
    outcome: str = Field(default="", max_length=200)


class Email(SQLModel, table=True):
    __tablename__ = "email"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    to_address: str = Field(max_length=254)
    subject: str = Field(max_length=200)
    text_body: str = Field(sa_type=Text)
    html_body: str = Field(default="", sa_type=Text)
    order_id: uuid.UUID | None = Field(default=None, foreign_key="orders.id", index=True)
    template: str = Field(default="", max_length=80)
    created_at: datetime = utc_column(default_factory=utcnow)
    sent_at: datetime | None = utc_column(default=None, nullable=True)
