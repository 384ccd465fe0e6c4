"""Discount codes and their redemptions, and the pure rules that decide what a code gives.

A code is stored upper-case and typed in any case. It takes either a percentage (basis points,
1..10000) or a fixed amount (cents) off the goods it applies to: every line, or only the lines
whose product or category is listed (a line qualifies if its product OR its category is listed).
The minimum spend counts those qualifying lines only, at their prices before the discount.
The discount is spread over the qualifying lines in proportion to their totals, to the cent
(largest remainder), so each order line knows its share and a refund per line gives back
exactly what was paid for it. A fixed amount never exceeds what the qualifying lines cost.

Whether a use still counts (an order that ended unpaid frees it) is decided by the service
that counts them (`fulfilment.discounts`); the rules here only compare the counts to limits.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, CheckConstraint
from sqlmodel import Field, SQLModel

from models.base import utc_column, utcnow
from models.money import apply_rate, format_money

CODE_MAX_LENGTH = 40


class DiscountKind(StrEnum):
    PERCENT = "percent"  # value in basis points: 1500 = 15%
    FIXED = "fixed"  # value in cents


class DiscountCode(SQLModel, table=True):
    __tablename__ = "discount_code"
    __table_args__ = (
        CheckConstraint("kind IN ('percent', 'fixed')", name="kind_known"),
        CheckConstraint("value > 0 AND (kind <> 'percent' OR value <= 10000)",
                        name="value_in_range"),
        CheckConstraint("min_spend_cents >= 0", name="min_spend_not_negative"),
        CheckConstraint("usage_limit IS NULL OR usage_limit > 0", name="usage_limit_positive"),
        CheckConstraint("per_customer_limit IS NULL OR per_customer_limit > 0",
                        name="per_customer_limit_positive"),
        CheckConstraint("starts_at IS NULL OR ends_at IS NULL OR ends_at > starts_at",
                        name="ends_after_start"),
    )

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=CODE_MAX_LENGTH, unique=True,
                      description="Upper-case; shoppers may type it in any case.")
    description: str = Field(default="", max_length=200, description="For staff only.")
    kind: str = Field(max_length=10)
    value: int = Field(description="Basis points for percent, cents for fixed.")
    currency: str = Field(default="EUR", max_length=3)
    min_spend_cents: int = 0
    starts_at: datetime | None = utc_column(default=None, nullable=True)
    ends_at: datetime | None = utc_column(default=None, nullable=True)
    usage_limit: int | None = Field(default=None, description="Uses in all; none: no limit.")
    per_customer_limit: int | None = Field(default=None,
                                           description="Uses per (lower-cased) email.")
    product_ids: list[int] = Field(default_factory=list, sa_type=JSON)
    category_ids: list[int] = Field(default_factory=list, sa_type=JSON)
    paused: bool = False
    created_by: str = Field(default="", max_length=254)
    created_at: datetime = utc_column(default_factory=utcnow)
    updated_at: datetime = utc_column(default_factory=utcnow)


class DiscountRedemption(SQLModel, table=True):
    """One order's use of a code; replaced when the still-unpaid order is placed again."""

    __tablename__ = "discount_redemption"
    __table_args__ = (CheckConstraint("amount_cents > 0", name="amount_positive"),)

    id: int | None = Field(default=None, primary_key=True)
    code_id: int = Field(foreign_key="discount_code.id", index=True)
    order_id: uuid.UUID = Field(foreign_key="orders.id", unique=True)
    email: str = Field(max_length=254, index=True, description="Lower-cased.")
    amount_cents: int
    created_at: datetime = utc_column(default_factory=utcnow)


def normalise_code(raw: str) -> str:
    """What a shopper typed, as stored: trimmed, inner spaces removed, upper-case."""
    return "".join(raw.split()).upper()[:CODE_MAX_LENGTH * 2]


def customer_key(email: str) -> str:
    """The email a per-customer limit counts by."""
    return email.strip().lower()


class Refusal(StrEnum):
    UNKNOWN = "unknown"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    PAUSED = "paused"
    MIN_SPEND = "min_spend"
    USED_UP = "used_up"
    USED_BY_YOU = "used_by_you"
    NOT_APPLICABLE = "not_applicable"


@dataclass(frozen=True)
class DiscountLine:
    """One cart or order line as the rules see it."""

    product_id: int
    category_id: int
    total_cents: int


@dataclass(frozen=True)
class Verdict:
    """A code's answer for a cart: the discount per line (in the lines' order), or a refusal."""

    refusal: Refusal | None
    message: str
    line_discounts: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return self.refusal is None

    @property
    def discount_cents(self) -> int:
        return sum(self.line_discounts)


def refusal_message(refusal: Refusal, code: DiscountCode | None = None, *,
                    typed: str = "") -> str:
    """The refusal in plain words, for the shopper."""
    name = code.code if code is not None else typed
    if refusal == Refusal.UNKNOWN:
        return f"We do not know the code {name}. Please check it." if name else (
            "We do not know that code. Please check it.")
    if refusal == Refusal.NOT_YET_VALID:
        assert code is not None and code.starts_at is not None
        return f"The code {name} is valid from {code.starts_at:%d %B %Y %H:%M} UTC."
    if refusal == Refusal.EXPIRED:
        return f"The code {name} has expired."
    if refusal == Refusal.PAUSED:
        return f"The code {name} cannot be used at the moment."
    if refusal == Refusal.MIN_SPEND:
        assert code is not None
        return (f"The code {name} needs a spend of at least "
                f"{format_money(code.min_spend_cents)} on the items it applies to.")
    if refusal == Refusal.USED_UP:
        return f"The code {name} has been used up."
    if refusal == Refusal.USED_BY_YOU:
        return f"You have already used the code {name}."
    return f"The code {name} does not apply to the items in your cart."


def applies_to(code: DiscountCode, line: DiscountLine) -> bool:
    if not code.product_ids and not code.category_ids:
        return True
    return line.product_id in code.product_ids or line.category_id in code.category_ids


def spread(amount_cents: int, weights: Sequence[int]) -> tuple[int, ...]:
    """`amount_cents` split over `weights` in proportion, to the cent, summing exactly
    (largest remainder; ties to the earlier line). Each share is at most its weight when
    the amount is at most the sum of the weights."""
    total = sum(weights)
    if total <= 0 or amount_cents <= 0:
        return tuple(0 for _ in weights)
    shares = [amount_cents * w // total for w in weights]
    remainders = sorted(range(len(weights)),
                        key=lambda i: (-(amount_cents * weights[i] % total), i))
    for i in remainders[:amount_cents - sum(shares)]:
        shares[i] += 1
    return tuple(shares)


def evaluate(
    code: DiscountCode | None, lines: Sequence[DiscountLine], *, now: datetime,
    uses: int = 0, uses_by_customer: int = 0, typed: str = "",
) -> Verdict:
    """What `code` gives these lines at `now`, given the uses that still count (in all, and by
    this customer's email, not counting the order being placed). Checks in this order:
    unknown, paused, not yet valid, expired, used up, already used by you, not applicable,
    minimum spend."""

    def refuse(refusal: Refusal) -> Verdict:
        return Verdict(refusal, refusal_message(refusal, code, typed=typed))

    if code is None:
        return refuse(Refusal.UNKNOWN)
    if code.paused:
        return refuse(Refusal.PAUSED)
    if code.starts_at is not None and now < code.starts_at:
        return refuse(Refusal.NOT_YET_VALID)
    if code.ends_at is not None and now >= code.ends_at:
        return refuse(Refusal.EXPIRED)
    if code.usage_limit is not None and uses >= code.usage_limit:
        return refuse(Refusal.USED_UP)
    if code.per_customer_limit is not None and uses_by_customer >= code.per_customer_limit:
        return refuse(Refusal.USED_BY_YOU)
    weights = [line.total_cents if applies_to(code, line) else 0 for line in lines]
    eligible = sum(weights)
    if eligible <= 0:
        return refuse(Refusal.NOT_APPLICABLE)
    if eligible < code.min_spend_cents:
        return refuse(Refusal.MIN_SPEND)
    if code.kind == DiscountKind.PERCENT:
        amount = apply_rate(eligible, code.value)
    else:
        amount = min(code.value, eligible)
    if amount <= 0:
        return refuse(Refusal.NOT_APPLICABLE)
    return Verdict(None, f"{code.code}: {format_money(amount)} off.", spread(amount, weights))


def describe(code: DiscountCode) -> str:
    """`15% off` or `€5.00 off`, for the summary line."""
    if code.kind == DiscountKind.PERCENT:
        return f"{code.value / 100:g}% off"
    return f"{format_money(code.value)} off"


def snapshot(code: DiscountCode) -> dict[str, Any]:
    """The code's settings, for audit entries (the key is not `code`: audit redacts that)."""
    return {"discount_code": code.code, "description": code.description, "kind": code.kind,
            "value": code.value, "min_spend_cents": code.min_spend_cents,
            "starts_at": code.starts_at, "ends_at": code.ends_at,
            "usage_limit": code.usage_limit, "per_customer_limit": code.per_customer_limit,
            "product_ids": list(code.product_ids), "category_ids": list(code.category_ids),
            "paused": code.paused}
