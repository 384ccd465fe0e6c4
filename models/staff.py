"""Staff identity: users, their roles, opaque tokens, login attempts; and the permission table.

Deny by default: a role can do exactly what `ROLE_PERMISSIONS` lists, and every admin route
names the one permission it needs.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Index
from sqlmodel import Field, SQLModel

from models.base import new_id, utc_column, utcnow


class Role(StrEnum):
    ADMIN = "admin"
    FINANCE = "finance"
    STOCK = "stock"
    PICKER = "picker"
    REVIEWER = "reviewer"
    SUPPORT = "support"


class Permission(StrEnum):
    ORDERS_READ = "orders:read"
    ORDERS_EXPORT = "orders:export"
    ORDERS_NOTE = "orders:note"
    ORDERS_CANCEL = "orders:cancel"
    ORDERS_REVIEW = "orders:review"
    PAYMENTS_READ = "payments:read"
    PAYMENTS_REFUND = "payments:refund"  # ask for, approve and reject refunds
    FINANCE_MANAGE = "finance:manage"  # reconciliation runs, resolving items, closing periods
    CATALOGUE_READ = "catalogue:read"
    CATALOGUE_WRITE = "catalogue:write"
    STOCK_READ = "stock:read"
    STOCK_WRITE = "stock:write"  # receive, adjust, count, import, bins, reorder settings
    PICKING = "picking"  # build, claim and walk pick lists
    SHIPPING = "shipping"  # pack parcels, print slips, hand parcels to carriers
    AUDIT_READ = "audit:read"
    SCREENING_READ = "screening:read"
    SCREENING_WRITE = "screening:write"
    PIPELINE_READ = "pipeline:read"
    STAFF_MANAGE = "staff:manage"
    CUSTOMERS_READ = "customers:read"  # customer files and the segments report
    CUSTOMERS_NOTE = "customers:note"  # add notes to a customer's file
    SUPPORT = "support"  # the support inbox: read, reply, assign, change status
    RETURNS_READ = "returns:read"
    RETURNS_RECEIVE = "returns:receive"  # record what arrived and restock it
    DISCOUNTS_MANAGE = "discounts:manage"  # create, edit, pause discount codes; usage


P = Permission
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.FINANCE: frozenset({P.ORDERS_READ, P.ORDERS_EXPORT, P.ORDERS_NOTE, P.PAYMENTS_READ,
                             P.PAYMENTS_REFUND, P.FINANCE_MANAGE, P.CATALOGUE_READ,
                             P.CUSTOMERS_READ, P.CUSTOMERS_NOTE, P.RETURNS_READ}),
    Role.STOCK: frozenset({P.ORDERS_READ, P.ORDERS_NOTE, P.CATALOGUE_READ, P.STOCK_READ,
                           P.STOCK_WRITE, P.PICKING, P.SHIPPING, P.RETURNS_READ,
                           P.RETURNS_RECEIVE}),
    Role.PICKER: frozenset({P.STOCK_READ, P.PICKING, P.SHIPPING}),
    Role.REVIEWER: frozenset({P.ORDERS_READ, P.ORDERS_NOTE, P.CATALOGUE_READ, P.ORDERS_REVIEW,
                              P.SCREENING_READ, P.CUSTOMERS_READ, P.CUSTOMERS_NOTE}),
    Role.SUPPORT: frozenset({P.ORDERS_READ, P.ORDERS_NOTE, P.CATALOGUE_READ, P.SUPPORT,
                             P.CUSTOMERS_READ, P.CUSTOMERS_NOTE, P.RETURNS_READ}),
}
# Roles whose users must give a TOTP code at every login.
SECOND_FACTOR_ROLES = frozenset({Role.ADMIN})


def permissions_of(roles: list[str] | tuple[str, ...]) -> frozenset[Permission]:
    granted: set[Permission] = set()
    for role in roles:
        if role in Role.__members__.values():
            granted |= ROLE_PERMISSIONS[Role(role)]
    return frozenset(granted)


class StaffUser(SQLModel, table=True):
    __tablename__ = "staff_user"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    email: str = Field(max_length=254, unique=True)
    password_hash: str = Field(max_length=200)
    roles: list[str] = Field(default_factory=list, sa_type=JSON)
    totp_secret: str | None = Field(default=None, max_length=64)
    totp_confirmed: bool = False
    created_at: datetime = utc_column(default_factory=utcnow)
    disabled_at: datetime | None = utc_column(default=None, nullable=True)
    password_changed_at: datetime = utc_column(default_factory=utcnow)

    @property
    def needs_second_factor(self) -> bool:
        return any(role in SECOND_FACTOR_ROLES for role in self.roles)


class TokenKind(StrEnum):
    SESSION = "session"  # from login: idle timeout and absolute lifetime
    API = "api"  # for integrations: fixed expiry, roles chosen at issue
    ENROLMENT = "enrolment"  # an admin without TOTP yet: may only enrol it


class StaffToken(SQLModel, table=True):
    """An opaque bearer token; only its SHA-256 is stored."""

    __tablename__ = "staff_token"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    staff_id: uuid.UUID = Field(foreign_key="staff_user.id", index=True)
    kind: str = Field(max_length=16)
    roles: list[str] = Field(default_factory=list, sa_type=JSON)
    label: str = Field(default="", max_length=120)
    created_at: datetime = utc_column(default_factory=utcnow)
    last_used_at: datetime = utc_column(default_factory=utcnow)
    expires_at: datetime = utc_column()
    revoked_at: datetime | None = utc_column(default=None, nullable=True)


class LoginAttempt(SQLModel, table=True):
    __tablename__ = "login_attempt"
    __table_args__ = (
        Index("ix_login_attempt_email_at", "email", "at"),
        Index("ix_login_attempt_ip_at", "client_ip", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=254)
    client_ip: str = Field(max_length=64)
    at: datetime = utc_column(default_factory=utcnow)
    succeeded: bool = False
    reason: str = Field(default="", max_length=40)
