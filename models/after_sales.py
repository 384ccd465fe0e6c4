"""After the sale: returns and their lines, cancellation requests, and the support messages a
customer and staff exchange about an order."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, Text
from sqlmodel import Field, SQLModel

from models.base import new_id, utc_column, utcnow


class ReturnStatus(StrEnum):
    REQUESTED = "requested"  # the customer asked; waiting for the parcel
    RECEIVED = "received"  # stock staff recorded what arrived and restocked what can be sold
    REFUNDED = "refunded"  # finance refunded it: the return is complete
    REJECTED = "rejected"  # refused by staff, with a reason the customer sees
    CANCELLED = "cancelled"  # withdrawn by the customer before it arrived


class ReturnRequest(SQLModel, table=True):
    __tablename__ = "return_request"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    number: str = Field(max_length=20, unique=True)
    order_id: uuid.UUID = Field(foreign_key="orders.id", index=True)
    status: str = Field(default=ReturnStatus.REQUESTED, max_length=20, index=True)
    reason: str = Field(max_length=500)
    created_at: datetime = utc_column(default_factory=utcnow, index=True)
    updated_at: datetime = utc_column(default_factory=utcnow)
    received_at: datetime | None = utc_column(default=None, nullable=True)
    received_by: str = Field(default="", max_length=254)
    refund_id: uuid.UUID | None = Field(default=None, foreign_key="refund.id")
    completed_at: datetime | None = utc_column(default=None, nullable=True)
    staff_note: str = Field(default="", max_length=1000)
    rejection_reason: str = Field(default="", max_length=500,
                                  description="Why staff refused it; the customer sees it.")


class ItemCondition(StrEnum):
    SELLABLE = "sellable"  # back into stock
    DAMAGED = "damaged"  # arrived, cannot be sold again
    MISSING = "missing"  # not in the parcel


class ReturnLine(SQLModel, table=True):
    __tablename__ = "return_line"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("received_quantity >= 0 AND restocked_quantity >= 0"
                        " AND restocked_quantity <= received_quantity", name="counts_valid"),
    )

    id: int | None = Field(default=None, primary_key=True)
    return_id: uuid.UUID = Field(foreign_key="return_request.id", index=True)
    variant_id: int = Field(foreign_key="variant.id")
    sku: str = Field(max_length=64)
    quantity: int
    received_quantity: int = 0
    restocked_quantity: int = 0
    condition: str = Field(default="", max_length=20)


class CancellationStatus(StrEnum):
    REQUESTED = "requested"
    CANCELLED = "cancelled"
    REFUSED = "refused"  # too late: the order was already being picked


class CancellationRequest(SQLModel, table=True):
    __tablename__ = "cancellation_request"

    id: int | None = Field(default=None, primary_key=True)
    order_id: uuid.UUID = Field(foreign_key="orders.id", index=True)
    status: str = Field(default=CancellationStatus.REQUESTED, max_length=20)
    reason: str = Field(default="", max_length=500)
    created_at: datetime = utc_column(default_factory=utcnow)
    decided_at: datetime | None = utc_column(default=None, nullable=True)
    outcome: str = Field(default="", max_length=500)


class ThreadStatus(StrEnum):
    OPEN = "open"  # the customer wrote last: staff owe an answer
    WAITING = "waiting"  # staff answered: waiting for the customer
    CLOSED = "closed"


class SupportThread(SQLModel, table=True):
    """A conversation about one order; the support desk's inbox lists these."""

    __tablename__ = "support_thread"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    order_id: uuid.UUID = Field(foreign_key="orders.id", index=True)
    subject: str = Field(max_length=200)
    status: str = Field(default=ThreadStatus.OPEN, max_length=20, index=True)
    assigned_to: str = Field(default="", max_length=254, index=True)
    created_at: datetime = utc_column(default_factory=utcnow)
    updated_at: datetime = utc_column(default_factory=utcnow, index=True)


class SupportMessage(SQLModel, table=True):
    __tablename__ = "support_message"

    id: int | None = Field(default=None, primary_key=True)
    thread_id: uuid.UUID = Field(foreign_key="support_thread.id", index=True)
    from_customer: bool
    author: str = Field(max_length=254, description="The customer's email or the staff user's.")
    body: str = Field(sa_type=Text)
    created_at: datetime = utc_column(default_factory=utcnow)
