"""Screening: explainable fraud signals, quality checks, and the decision a rule set makes.

The rules are pure: `evaluate(facts, rules)` turns the facts gathered about an order into
signals, each with a code, a weight, a reason in plain words and the facts behind it;
`decide(...)` turns the score and quality issues into approve, review or reject. A rule set
(weights, parameters, thresholds) is data kept in the database with a version, so changing
it is an audited edit, and `backtest` can replay a candidate over past orders.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import JSON
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from models.base import new_id, utc_column, utcnow


class Decision(StrEnum):
    APPROVE = "approve"
    REVIEW = "review"
    REJECT = "reject"


# -- The rule set ----------------------------------------------------------------------------


class SignalRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight: int = Field(ge=0, le=100)
    window_hours: float | None = Field(default=None, gt=0, le=24 * 90)
    limit: float | None = Field(default=None, ge=0, le=1_000_000)


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    review: int = Field(ge=0, le=100)
    reject: int = Field(ge=0, le=101)

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.review > self.reject:
            raise ValueError("the review threshold must not be above the reject threshold")
        return self


SIGNAL_CODES = (
    "email_velocity", "ip_velocity", "card_velocity", "device_velocity", "failed_attempts",
    "country_mismatch", "freight_forwarder", "name_mismatch", "disposable_email",
    "new_email_domain", "value_vs_history", "value_vs_median", "sku_quantity",
    "cvc_check_failed", "postal_check_failed", "stripe_risk_elevated", "stripe_risk_highest",
)
# Signals whose rule needs a window and a limit to mean anything.
WINDOWED = ("email_velocity", "ip_velocity", "card_velocity", "device_velocity")
LIMITED = (*WINDOWED, "failed_attempts", "value_vs_history", "value_vs_median", "sku_quantity")


class RuleSetBody(BaseModel):
    """Weights and parameters per signal, and the two thresholds."""

    model_config = ConfigDict(extra="forbid")

    thresholds: Thresholds
    signals: dict[str, SignalRule]

    @model_validator(mode="after")
    def _complete(self) -> RuleSetBody:
        unknown = set(self.signals) - set(SIGNAL_CODES)
        missing = set(SIGNAL_CODES) - set(self.signals)
        if unknown or missing:
            raise ValueError(f"signals must be exactly {', '.join(SIGNAL_CODES)}; unknown: "
                             f"{sorted(unknown)}, missing: {sorted(missing)}")
        for code in WINDOWED:
            if self.signals[code].window_hours is None:
                raise ValueError(f"{code} needs window_hours")
        for code in LIMITED:
            if self.signals[code].limit is None:
                raise ValueError(f"{code} needs a limit")
        return self


DEFAULT_RULES = RuleSetBody.model_validate({
    "thresholds": {"review": 40, "reject": 80},
    "signals": {
        "email_velocity": {"weight": 25, "window_hours": 24, "limit": 3},
        "ip_velocity": {"weight": 20, "window_hours": 1, "limit": 5},
        "card_velocity": {"weight": 30, "window_hours": 24, "limit": 3},
        "device_velocity": {"weight": 20, "window_hours": 24, "limit": 4},
        "failed_attempts": {"weight": 15, "limit": 2},
        "country_mismatch": {"weight": 10},
        "freight_forwarder": {"weight": 30},
        "name_mismatch": {"weight": 10},
        "disposable_email": {"weight": 35},
        "new_email_domain": {"weight": 5},
        "value_vs_history": {"weight": 15, "limit": 3},
        "value_vs_median": {"weight": 15, "limit": 5},
        "sku_quantity": {"weight": 15, "limit": 5},
        "cvc_check_failed": {"weight": 40},
        "postal_check_failed": {"weight": 15},
        "stripe_risk_elevated": {"weight": 25},
        "stripe_risk_highest": {"weight": 60},
    },
})


class RuleSet(SQLModel, table=True):
    """One version of the screening rules; the newest is in force."""

    __tablename__ = "screening_rule_set"

    version: int = SQLField(primary_key=True)
    body: dict[str, Any] = SQLField(sa_type=JSON)
    note: str = SQLField(default="", max_length=500)
    created_by: str = SQLField(default="", max_length=254)
    created_at: datetime = utc_column(default_factory=utcnow)

    def rules(self) -> RuleSetBody:
        return RuleSetBody.model_validate(self.body)


class Screening(SQLModel, table=True):
    """The one screening of an order: what was found and what was decided (unique per order)."""

    __tablename__ = "screening"

    id: uuid.UUID = SQLField(default_factory=new_id, primary_key=True)
    order_id: uuid.UUID = SQLField(foreign_key="orders.id", unique=True)
    rule_set_version: int
    score: int
    decision: str = SQLField(max_length=10)
    signals: list[dict[str, Any]] = SQLField(default_factory=list, sa_type=JSON)
    quality_issues: list[dict[str, Any]] = SQLField(default_factory=list, sa_type=JSON)
    screened_at: datetime = utc_column(default_factory=utcnow, index=True)
    decided_by: str = SQLField(default="", max_length=254, description="A reviewer, if any.")
    decided_at: datetime | None = utc_column(default=None, nullable=True)
    decision_reason: str = SQLField(default="", max_length=1000)


# -- Facts, signals, decision ------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """What is known about an order at screening time, gathered from the database.

    Counts look back from the order's authorisation and only at other orders, so the same
    facts come out when screening is replayed later.
    """

    email: str
    email_orders: int
    ip: str
    ip_orders: int
    card_fingerprint: str
    card_orders: int
    device_id: str
    device_orders: int
    failed_attempts: int
    shipping_country: str
    card_country: str
    shipping_name: str
    cardholder_name: str
    forwarder_match: str
    email_domain: str
    disposable_domain: bool
    domain_seen_before: bool
    total_cents: int
    customer_orders: int
    customer_average_cents: int
    shop_orders: int
    shop_median_cents: int
    max_units_of_one_sku: int
    sku_of_max_units: str
    cvc_check: str
    postal_check: str
    risk_level: str


@dataclass(frozen=True)
class Signal:
    code: str
    weight: int
    reason: str
    facts: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "weight": self.weight, "reason": self.reason,
                "facts": self.facts}


def _names_differ(a: str, b: str) -> bool:
    def words(text: str) -> set[str]:
        return {w for w in text.lower().replace(".", " ").split() if len(w) > 1}

    return bool(words(a)) and bool(words(b)) and not (words(a) & words(b))


def evaluate(f: Facts, rules: RuleSetBody) -> list[Signal]:
    """The signals that fire for these facts under these rules (weight > 0 only)."""
    r = rules.signals
    found: list[Signal] = []

    def fire(code: str, reason: str, **facts: Any) -> None:
        if r[code].weight > 0:
            found.append(Signal(code, r[code].weight, reason, facts))

    def velocity(code: str, count: int, what: str, value: str) -> None:
        rule = r[code]
        if value and rule.limit is not None and count >= rule.limit:
            fire(code, f"{count} other orders from the same {what} in the last "
                       f"{rule.window_hours:g} hours (limit {rule.limit:g}).",
                 **{what.replace(" ", "_"): value, "orders": count,
                    "window_hours": rule.window_hours})

    velocity("email_velocity", f.email_orders, "email", f.email)
    velocity("ip_velocity", f.ip_orders, "IP address", f.ip)
    velocity("card_velocity", f.card_orders, "card", f.card_fingerprint)
    velocity("device_velocity", f.device_orders, "device", f.device_id)
    if r["failed_attempts"].limit is not None and f.failed_attempts >= r["failed_attempts"].limit:
        fire("failed_attempts", f"{f.failed_attempts} declined or failed payment attempts "
             "before this one succeeded.", failed_attempts=f.failed_attempts)
    if f.card_country and f.card_country != f.shipping_country:
        fire("country_mismatch", f"The card is from {f.card_country} but the parcel goes to "
             f"{f.shipping_country}.", card_country=f.card_country,
             shipping_country=f.shipping_country)
    if f.forwarder_match:
        fire("freight_forwarder", "The shipping address looks like a parcel forwarding "
             f"service ({f.forwarder_match}).", matched=f.forwarder_match)
    if f.cardholder_name and _names_differ(f.cardholder_name, f.shipping_name):
        fire("name_mismatch", "The name on the card and the name on the parcel differ.",
             cardholder=f.cardholder_name, shipping_name=f.shipping_name)
    if f.disposable_domain:
        fire("disposable_email", f"The email address is at a disposable mail service "
             f"({f.email_domain}).", domain=f.email_domain)
    elif not f.domain_seen_before:
        fire("new_email_domain", f"No earlier order came from an address at {f.email_domain}.",
             domain=f.email_domain)
    factor = r["value_vs_history"].limit
    if (factor is not None and f.customer_orders > 0
            and f.total_cents > factor * f.customer_average_cents):
        fire("value_vs_history", f"The order is over {factor:g} times this customer's "
             "average order.", total_cents=f.total_cents,
             customer_average_cents=f.customer_average_cents, earlier_orders=f.customer_orders)
    factor = r["value_vs_median"].limit
    if (factor is not None and f.shop_orders >= 20
            and f.total_cents > factor * f.shop_median_cents):
        fire("value_vs_median", f"The order is over {factor:g} times the shop's median order.",
             total_cents=f.total_cents, shop_median_cents=f.shop_median_cents)
    limit = r["sku_quantity"].limit
    if limit is not None and f.max_units_of_one_sku > limit:
        fire("sku_quantity", f"{f.max_units_of_one_sku} units of one item ({f.sku_of_max_units})"
             f" in one order, more than {limit:g}.", sku=f.sku_of_max_units,
             units=f.max_units_of_one_sku)
    if f.cvc_check == "fail":
        fire("cvc_check_failed", "The card's security code did not match.", cvc_check="fail")
    if f.postal_check == "fail":
        fire("postal_check_failed", "The card's postal code did not match.",
             postal_check="fail")
    if f.risk_level == "elevated":
        fire("stripe_risk_elevated", "Stripe rated the payment's risk as elevated.",
             risk_level=f.risk_level)
    if f.risk_level == "highest":
        fire("stripe_risk_highest", "Stripe rated the payment's risk as highest.",
             risk_level=f.risk_level)
    return found


def score(signals: list[Signal]) -> int:
    return min(100, sum(s.weight for s in signals))


def decide(points: int, quality_issues: list[dict[str, Any]], thresholds: Thresholds) -> Decision:
    """Reject at or above the reject threshold; review at or above review, or when the order
    failed a quality check; approve otherwise."""
    if points >= thresholds.reject:
        return Decision.REJECT
    if points >= thresholds.review or quality_issues:
        return Decision.REVIEW
    return Decision.APPROVE


# Known parcel-forwarding services and address markers (lowercase substrings).
FREIGHT_FORWARDERS = (
    "shipito", "myus", "forward2me", "parcl", "planet express", "stackry", "borderlinx",
    "comgateway", "eshopworld", "reship", "usgobuy", "bongo", "ship7", "packagebird",
)
DISPOSABLE_DOMAINS = frozenset({
    "mailinator.com", "guerrillamail.com", "10minutemail.com", "tempmail.com", "temp-mail.org",
    "yopmail.com", "trashmail.com", "sharklasers.com", "getnada.com", "dispostable.com",
    "maildrop.cc", "throwawaymail.com", "fakeinbox.com", "mintemail.com", "emailondeck.com",
})


def forwarder_in(address: str) -> str:
    lowered = address.lower()
    return next((name for name in FREIGHT_FORWARDERS if name in lowered), "")
