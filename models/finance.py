"""Finance: refunds and disputes, what Stripe says it moved (synced copies), reconciliation
runs, closed periods, and invoices and credit notes with gapless numbers."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Date, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.base import new_id, utc_column, utcnow

# -- Refunds and disputes ----------------------------------------------------------------------


class RefundStatus(StrEnum):
    PENDING_APPROVAL = "pending_approval"  # above the limit: a second finance user decides
    PROCESSING = "processing"  # sent to Stripe by a worker
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"


class Refund(SQLModel, table=True):
    """Money given back on an order: all, part, or per line, with items back to stock or not."""

    __tablename__ = "refund"
    __table_args__ = (CheckConstraint("amount_cents > 0", name="amount_positive"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    order_id: uuid.UUID = Field(foreign_key="orders.id", index=True)
    payment_id: uuid.UUID = Field(foreign_key="payment.id", index=True)
    amount_cents: int
    currency: str = Field(default="EUR", max_length=3)
    reason: str = Field(max_length=500)
    status: str = Field(max_length=20, index=True)
    # [{"variant_id", "sku", "quantity", "restock_location_id" | null}]
    lines: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    stripe_refund_id: str | None = Field(default=None, max_length=64, unique=True)
    failure: str = Field(default="", max_length=300)
    requested_by: str = Field(max_length=254)
    requested_at: datetime = utc_column(default_factory=utcnow)
    approved_by: str = Field(default="", max_length=254)
    decided_at: datetime | None = utc_column(default=None, nullable=True)
    processed_at: datetime | None = utc_column(default=None, nullable=True)


class Dispute(SQLModel, table=True):
    """A chargeback, as Stripe's charge.dispute.* events tell it."""

    __tablename__ = "dispute"

    id: str = Field(primary_key=True, max_length=64)  # Stripe's dp_... id
    payment_id: uuid.UUID | None = Field(default=None, foreign_key="payment.id", index=True)
    order_id: uuid.UUID | None = Field(default=None, foreign_key="orders.id", index=True)
    charge_id: str = Field(max_length=64, index=True)
    amount_cents: int
    fee_cents: int = 0
    currency: str = Field(default="EUR", max_length=3)
    status: str = Field(max_length=40)
    reason: str = Field(default="", max_length=60)
    outcome: str = Field(default="", max_length=20, description="won, lost, or empty")
    created_at: datetime = utc_column(default_factory=utcnow)
    updated_at: datetime = utc_column(default_factory=utcnow)


# -- What Stripe moved (copies kept by `conveyor stripe sync`) ---------------------------------


class StripeBalanceTransaction(SQLModel, table=True):
    __tablename__ = "stripe_balance_transaction"

    id: str = Field(primary_key=True, max_length=64)
    type: str = Field(max_length=40, index=True)
    source: str = Field(default="", max_length=64, index=True)  # ch_, re_, dp_, po_ ...
    amount_cents: int
    fee_cents: int
    net_cents: int
    currency: str = Field(max_length=3)
    created: datetime = utc_column(index=True)
    available_on: datetime | None = utc_column(default=None, nullable=True)
    payout_id: str | None = Field(default=None, max_length=64, index=True)
    synced_at: datetime = utc_column(default_factory=utcnow)


class StripePayout(SQLModel, table=True):
    __tablename__ = "stripe_payout"

    id: str = Field(primary_key=True, max_length=64)
    amount_cents: int
    currency: str = Field(max_length=3)
    status: str = Field(max_length=20)
    created: datetime = utc_column(index=True)
    arrival_date: datetime | None = utc_column(default=None, nullable=True)
    synced_at: datetime = utc_column(default_factory=utcnow)


class StripeCharge(SQLModel, table=True):
    __tablename__ = "stripe_charge"

    id: str = Field(primary_key=True, max_length=64)
    payment_intent_id: str | None = Field(default=None, max_length=64, index=True)
    amount_cents: int
    amount_captured_cents: int
    amount_refunded_cents: int
    currency: str = Field(max_length=3)
    status: str = Field(max_length=20)
    captured: bool
    created: datetime = utc_column(index=True)
    synced_at: datetime = utc_column(default_factory=utcnow)


class StripeRefund(SQLModel, table=True):
    __tablename__ = "stripe_refund"

    id: str = Field(primary_key=True, max_length=64)
    charge_id: str = Field(max_length=64, index=True)
    amount_cents: int
    currency: str = Field(max_length=3)
    status: str = Field(max_length=20)
    created: datetime = utc_column(index=True)
    synced_at: datetime = utc_column(default_factory=utcnow)


class SyncCursor(SQLModel, table=True):
    """How far `conveyor stripe sync` got, per kind of object: it resumes from here."""

    __tablename__ = "stripe_sync_cursor"

    object_type: str = Field(primary_key=True, max_length=40)
    newest_id: str = Field(default="", max_length=64,
                           description="Everything up to this one is stored.")
    newest_created: int = Field(default=0, description="Its creation time (Unix seconds).")
    walk_top_id: str = Field(default="", max_length=64,
                             description="The newest object when the walk under way began.")
    walk_top_created: int = 0
    resume_after_id: str = Field(default="", max_length=64,
                                 description="Where an interrupted walk goes on from.")
    updated_at: datetime = utc_column(default_factory=utcnow)


# -- Reconciliation ---------------------------------------------------------------------------


class DifferenceClass(StrEnum):
    MISSING_IN_SHOP = "missing_in_shop"  # money moved at Stripe that no order explains
    MISSING_IN_STRIPE = "missing_in_stripe"  # captured or refunded here, nothing at Stripe
    AMOUNT_MISMATCH = "amount_mismatch"
    CURRENCY_MISMATCH = "currency_mismatch"
    DUPLICATE = "duplicate"  # Stripe moved money twice for one payment or refund
    FEE_RECORDED = "fee_recorded"  # Stripe's fee on a matched transaction (for the books)
    PAYOUT_MISMATCH = "payout_mismatch"  # a payout's transactions do not add up to it


class ReconciliationRun(SQLModel, table=True):
    __tablename__ = "reconciliation_run"

    id: int | None = Field(default=None, primary_key=True)
    period_start: date = Field(sa_type=Date)
    period_end: date = Field(sa_type=Date, description="Inclusive.")
    created_by: str = Field(max_length=254)
    created_at: datetime = utc_column(default_factory=utcnow)
    matched: int = 0
    totals: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


class ReconciliationItem(SQLModel, table=True):
    __tablename__ = "reconciliation_item"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="reconciliation_run.id", index=True)
    difference: str = Field(max_length=30, index=True)
    balance_transaction_id: str | None = Field(default=None, max_length=64)
    payout_id: str | None = Field(default=None, max_length=64)
    payment_id: uuid.UUID | None = None
    refund_id: uuid.UUID | None = None
    dispute_id: str | None = Field(default=None, max_length=64)
    order_number: str = Field(default="", max_length=20)
    expected_cents: int | None = None
    actual_cents: int | None = None
    currency: str = Field(default="", max_length=3)
    detail: str = Field(default="", max_length=500)
    resolved_by: str = Field(default="", max_length=254)
    resolved_at: datetime | None = utc_column(default=None, nullable=True)
    resolution_note: str = Field(default="", max_length=1000)


class ClosedPeriod(SQLModel, table=True):
    """A closed day: nothing that would change its figures may be recorded for it any more."""

    __tablename__ = "closed_period"

    day: date = Field(sa_type=Date, primary_key=True)
    closed_by: str = Field(max_length=254)
    closed_at: datetime = utc_column(default_factory=utcnow)
    note: str = Field(default="", max_length=500)


# -- Invoices and credit notes -----------------------------------------------------------------


class DocumentKind(StrEnum):
    INVOICE = "invoice"
    CREDIT_NOTE = "credit_note"


class DocumentCounter(SQLModel, table=True):
    """The last number given per kind and year. Taking the next one locks this row in the
    transaction that issues the document, so numbers have no gaps and no repeats."""

    __tablename__ = "document_counter"

    kind: str = Field(primary_key=True, max_length=20)
    year: int = Field(primary_key=True)
    last_number: int = 0


class FinanceDocument(SQLModel, table=True):
    """An issued invoice or credit note: its number and a snapshot of what it says."""

    __tablename__ = "finance_document"
    __table_args__ = (UniqueConstraint("kind", "year", "sequence"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    kind: str = Field(max_length=20)
    year: int
    sequence: int
    number: str = Field(max_length=30, unique=True)
    order_id: uuid.UUID = Field(foreign_key="orders.id", index=True)
    refund_id: uuid.UUID | None = Field(default=None, foreign_key="refund.id")
    access_token: str = Field(max_length=64, unique=True,
                              description="For the customer's download link.")
    amount_cents: int
    tax_cents: int
    currency: str = Field(default="EUR", max_length=3)
    issued_at: datetime = utc_column(default_factory=utcnow)
    content: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
