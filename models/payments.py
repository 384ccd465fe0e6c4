"""A payment is one attempt to pay an order through one Stripe PaymentIntent.

Payment state lives here, never in the order's status. Stripe's PaymentIntent status maps onto
it, and the allowed moves below keep a late or repeated event from moving a payment backwards.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.base import new_id, utc_column, utcnow


class PaymentStatus(StrEnum):
    PENDING = "pending"  # attempt recorded, Stripe not yet answered
    REQUIRES_ACTION = "requires_action"  # 3-D Secure in the shopper's browser
    FAILED = "failed"  # declined or authentication failed
    AUTHORIZED = "authorized"  # funds held (manual capture)
    CAPTURED = "captured"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    DISPUTED = "disputed"
    CANCELED = "canceled"  # authorisation voided or attempt abandoned


P = PaymentStatus
PAYMENT_TRANSITIONS: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    P.PENDING: frozenset({P.REQUIRES_ACTION, P.FAILED, P.AUTHORIZED, P.CAPTURED, P.CANCELED}),
    P.REQUIRES_ACTION: frozenset({P.FAILED, P.AUTHORIZED, P.CAPTURED, P.CANCELED}),
    P.FAILED: frozenset({P.CANCELED}),
    P.AUTHORIZED: frozenset({P.CAPTURED, P.CANCELED, P.DISPUTED}),
    P.CAPTURED: frozenset({P.PARTIALLY_REFUNDED, P.REFUNDED, P.DISPUTED}),
    P.PARTIALLY_REFUNDED: frozenset({P.PARTIALLY_REFUNDED, P.REFUNDED, P.DISPUTED}),
    P.REFUNDED: frozenset(),
    P.DISPUTED: frozenset({P.CAPTURED, P.PARTIALLY_REFUNDED, P.REFUNDED}),
    P.CANCELED: frozenset(),
}
HOLDS_FUNDS = frozenset({P.AUTHORIZED, P.CAPTURED, P.PARTIALLY_REFUNDED, P.DISPUTED})


def payment_can_move(current: str, target: str) -> bool:
    return PaymentStatus(target) in PAYMENT_TRANSITIONS[PaymentStatus(current)]


def status_from_intent(intent_status: str) -> PaymentStatus | None:
    """Map a Stripe PaymentIntent status to ours; None for states that change nothing here."""
    return {
        "requires_action": P.REQUIRES_ACTION,
        "requires_payment_method": P.FAILED,
        "requires_capture": P.AUTHORIZED,
        "succeeded": P.CAPTURED,
        "canceled": P.CANCELED,
    }.get(intent_status)


class Payment(SQLModel, table=True):
    __tablename__ = "payment"
    __table_args__ = (
        UniqueConstraint("order_id", "attempt"),
        CheckConstraint("amount_cents > 0", name="amount_positive"),
    )

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    order_id: uuid.UUID = Field(foreign_key="orders.id", index=True)
    attempt: int
    status: str = Field(default=PaymentStatus.PENDING, max_length=20)
    stripe_payment_intent_id: str | None = Field(default=None, max_length=64, unique=True)
    stripe_charge_id: str | None = Field(default=None, max_length=64, index=True)
    amount_cents: int
    currency: str = Field(default="EUR", max_length=3)
    captured_cents: int = 0
    refunded_cents: int = 0
    disputed_cents: int = 0
    failure_code: str = Field(default="", max_length=64)
    failure_message: str = Field(default="", max_length=300)
    card_brand: str = Field(default="", max_length=20)
    card_last4: str = Field(default="", max_length=4)
    card_fingerprint: str = Field(default="", max_length=64, index=True)
    card_country: str = Field(default="", max_length=2)
    cvc_check: str = Field(default="", max_length=20)
    postal_check: str = Field(default="", max_length=20)
    risk_level: str = Field(default="", max_length=20)
    client_ip: str = Field(default="", max_length=64, index=True)
    email: str = Field(default="", max_length=254, index=True)
    capture_started_at: datetime | None = utc_column(default=None, nullable=True)
    captured_at: datetime | None = utc_column(default=None, nullable=True, index=True)
    created_at: datetime = utc_column(default_factory=utcnow, index=True)
    updated_at: datetime = utc_column(default_factory=utcnow)
