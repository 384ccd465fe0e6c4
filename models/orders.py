"""Orders, their lines (a snapshot of what was bought), their history, and the state machine."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, Index, Text, text
from sqlmodel import Field, SQLModel

from models.base import new_id, utc_column, utcnow


class OrderStatus(StrEnum):
    PENDING_PAYMENT = "pending_payment"
    AUTHORIZED = "authorized"
    ON_HOLD = "on_hold"
    APPROVED = "approved"
    ALLOCATED = "allocated"
    PICKING = "picking"
    PACKED = "packed"
    SHIPPED = "shipped"
    PAYMENT_FAILED = "payment_failed"
    EXPIRED = "expired"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


S = OrderStatus
ALLOWED_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.PENDING_PAYMENT: frozenset({S.AUTHORIZED, S.PAYMENT_FAILED, S.EXPIRED, S.CANCELLED}),
    S.AUTHORIZED: frozenset({S.ON_HOLD, S.APPROVED, S.REJECTED, S.CANCELLED}),
    S.ON_HOLD: frozenset({S.APPROVED, S.REJECTED, S.CANCELLED}),
    S.APPROVED: frozenset({S.ALLOCATED, S.ON_HOLD, S.CANCELLED}),
    S.ALLOCATED: frozenset({S.PICKING, S.ON_HOLD, S.CANCELLED}),
    S.PICKING: frozenset({S.PACKED, S.ALLOCATED, S.ON_HOLD, S.CANCELLED}),
    S.PACKED: frozenset({S.SHIPPED, S.ON_HOLD}),
    S.SHIPPED: frozenset(),
    S.PAYMENT_FAILED: frozenset(),
    S.EXPIRED: frozenset(),
    S.REJECTED: frozenset(),
    S.CANCELLED: frozenset(),
}
TERMINAL_STATUSES = frozenset(s for s, nexts in ALLOWED_TRANSITIONS.items() if not nexts)

# What a shopper reads on the order status page.
CUSTOMER_LABELS: dict[OrderStatus, str] = {
    S.PENDING_PAYMENT: "Waiting for payment",
    S.AUTHORIZED: "Payment authorised, being checked",
    S.ON_HOLD: "Being checked",
    S.APPROVED: "Confirmed",
    S.ALLOCATED: "Being prepared",
    S.PICKING: "Being prepared",
    S.PACKED: "Packed",
    S.SHIPPED: "Shipped",
    S.PAYMENT_FAILED: "Payment failed",
    S.EXPIRED: "Expired unpaid",
    S.REJECTED: "Cancelled",
    S.CANCELLED: "Cancelled",
}


class IllegalTransition(Exception):
    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"an order cannot go from {current} to {target}")
        self.current = current
        self.target = target


def can_transition(current: str, target: str) -> bool:
    return OrderStatus(target) in ALLOWED_TRANSITIONS[OrderStatus(current)]


class Order(SQLModel, table=True):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("subtotal_cents >= 0 AND shipping_cents >= 0 AND tax_cents >= 0",
                        name="amounts_not_negative"),
        CheckConstraint("discount_cents >= 0 AND discount_cents <= subtotal_cents",
                        name="discount_within_subtotal"),
        CheckConstraint("total_cents = subtotal_cents - discount_cents + shipping_cents"
                        " + tax_cents", name="total_adds_up"),
        # Screening looks orders up by customer, address, device, domain and time.
        Index("ix_orders_email_lower", text("lower(email)")),
    )

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    number: str = Field(max_length=20, unique=True)
    status: str = Field(default=OrderStatus.PENDING_PAYMENT, max_length=20, index=True)
    status_token: str = Field(max_length=64, unique=True)

    email: str = Field(max_length=254, index=True)
    email_domain: str = Field(default="", max_length=254, index=True)
    full_name: str = Field(max_length=200)
    phone: str = Field(max_length=32)
    address: str = Field(max_length=300)
    city: str = Field(max_length=120)
    postal_code: str = Field(max_length=20)
    country: str = Field(max_length=2)

    shipping_method: str = Field(max_length=32)
    shipping_method_name: str = Field(max_length=80)
    currency: str = Field(default="EUR", max_length=3)
    subtotal_cents: int
    discount_code: str | None = Field(default=None, max_length=40,
                                      description="The discount code used, as stored.")
    discount_cents: int = Field(default=0, description=(
        "Taken off the subtotal (net); the lines' discount_cents add up to it."))
    shipping_cents: int
    tax_rate_bps: int
    tax_cents: int
    total_cents: int

    cart_id: uuid.UUID | None = Field(default=None, index=True)
    customer_id: uuid.UUID | None = Field(default=None, foreign_key="customer.id", index=True,
                                          description="The account, once its email is proved.")
    client_ip: str = Field(default="", max_length=64, index=True)
    device_id: str = Field(default="", max_length=64, index=True)
    payment_attempts: int = 0
    payment_id: uuid.UUID | None = Field(default=None, description="The attempt that paid.")
    created_at: datetime = utc_column(default_factory=utcnow, index=True)
    updated_at: datetime = utc_column(default_factory=utcnow)
    expires_at: datetime | None = utc_column(default=None, nullable=True)
    authorized_at: datetime | None = utc_column(default=None, nullable=True, index=True)


class OrderLine(SQLModel, table=True):
    __tablename__ = "order_line"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("line_total_cents = unit_price_cents * quantity", name="line_adds_up"),
        CheckConstraint("discount_cents >= 0 AND discount_cents <= line_total_cents",
                        name="discount_within_line"),
    )

    id: int | None = Field(default=None, primary_key=True)
    order_id: uuid.UUID = Field(foreign_key="orders.id", index=True)
    variant_id: int = Field(foreign_key="variant.id")
    sku: str = Field(max_length=64)
    product_name: str = Field(max_length=200)
    variant_name: str = Field(max_length=120)
    unit_price_cents: int
    quantity: int
    line_total_cents: int
    discount_cents: int = Field(default=0, description=(
        "This line's share of the order's discount code (net): what was paid for it is "
        "line_total_cents - discount_cents, before VAT."))
    regular_price_cents: int | None = Field(default=None, description=(
        "The unit price before any sale: what the sale gave away shows as a discount."))
    unit_cost_cents: int | None = Field(default=None, description=(
        "What one unit cost the shop (weighted average) when it was allocated: margins."))
    backordered: int = Field(default=0, ge=0,
                             description="Units a short pick found missing, not yet found again.")


class OrderEvent(SQLModel, table=True):
    """The order's history: every transition and note, with who, when and why."""

    __tablename__ = "order_event"

    id: int | None = Field(default=None, primary_key=True)
    order_id: uuid.UUID = Field(foreign_key="orders.id", index=True)
    created_at: datetime = utc_column(default_factory=utcnow)
    from_status: str | None = Field(default=None, max_length=20)
    to_status: str | None = Field(default=None, max_length=20)
    actor: str = Field(max_length=120)
    note: str = Field(default="", sa_type=Text)
    public: bool = Field(default=False, description="Shown to the customer on the status page.")


def transition(
    order: Order, target: OrderStatus, *, actor: str, reason: str, at: datetime,
    public: bool = True,
) -> OrderEvent:
    """Move `order` to `target` if the state machine allows it; return the history entry.

    Raises IllegalTransition otherwise, leaving the order untouched.
    """
    if not can_transition(order.status, target):
        raise IllegalTransition(order.status, target)
    event = OrderEvent(order_id=order.id, created_at=at, from_status=order.status,
                       to_status=target, actor=actor, note=reason, public=public)
    order.status = target
    order.updated_at = at
    return event


def note(order: Order, text: str, *, actor: str, at: datetime, public: bool = False) -> OrderEvent:
    return OrderEvent(order_id=order.id, created_at=at, actor=actor, note=text, public=public)
